"""`evaluate:` — which images are compared, by which metrics, per which groups.

    evaluate:
      real: runs/derm/prepared/metadata.jsonl
      real_split: test                 # compare against held-out real images
      synthetic: runs/derm/generated/metadata.jsonl
      by: [fst, class]                 # every field alone, and (cross: true) their combination
      metrics: [fd@inception, kid@inception, prdc@inception, clip_score@clip]
      bootstrap: 100                   # resamples for the confidence intervals; 0: none

Folders left empty are derived from the recipe's ``workdir`` (see :class:`~fairsynth.recipe.Recipe`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from fairsynth.config import ConfigError, knob

#: What `evaluate` computes when no metrics are named; FD-DINOv2 and CMMD lead (see :data:`HEADLINE_METRICS`).
DEFAULT_METRICS = [
    "fd@dinov2",
    "cmmd@clip-l14-336",
    "fd@inception",
    "kid@inception",
    "prdc@inception",
    "vendi@dinov2",
    "memorisation@dinov2",
    "clip_score@clip",
    "intra_class_diversity@clip",
]


#: Metrics listed first wherever `evaluate` lists metrics (its tables, evaluation.json/csv, the
#: terminal), in this order: ``(metric, extractor)``, extractor None for any. FID and KID depend on
#: Inception's ImageNet features and FID's Gaussian assumption; FD on DINOv2 features (Stein et al.
#: 2023) and CMMD (Jayasumana et al. 2024) follow human judgement more closely.
HEADLINE_METRICS: tuple[tuple[str, str | None], ...] = (("fd", "dinov2"), ("cmmd", None))


def headline_first(specs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``specs`` with the :data:`HEADLINE_METRICS` among them moved to the front (otherwise in order)."""

    def rank(spec: tuple[str, str]) -> int:
        for index, (metric, extractor) in enumerate(HEADLINE_METRICS):
            if spec[0] == metric and extractor in (None, spec[1]):
                return index
        return len(HEADLINE_METRICS)

    return sorted(specs, key=rank)  # stable: the rest keep the order given


def parse_metric_spec(spec: str, override: str | None = None) -> tuple[str, str]:
    """``"fd@dinov2"`` → ``("fd", "dinov2")``; ``"fd"`` → the metric's default extractor;
    ``override`` replaces the extractor of every metric."""
    from fairsynth.metrics import METRICS

    name, _, extractor = spec.partition("@")
    name = name.strip()
    if name not in METRICS:
        raise ConfigError(f"evaluate.metrics: unknown metric {name!r}; available: {', '.join(METRICS.names())}")
    extractor = override or extractor.strip() or METRICS.get(name).default_extractor
    return name, extractor


@dataclass
class EvaluateConfig:
    """`fairsynth evaluate`: real vs synthetic, overall and per group, with provenance."""

    real: str = knob("", "Manifest of the real images (metadata.jsonl/.csv/.parquet); default <prepare.output>/metadata.jsonl.")
    synthetic: str = knob(
        "", "Manifest of the synthetic images; its `caption` is each image's prompt (CLIP score); "
        "default in a recipe: <generate.output>/metadata.jsonl (the delivered set)."
    )
    real_split: str | None = knob(None, "Compare only against real rows of this split (e.g. test); None: every real row.")
    train: str | None = knob(
        None, "Manifest of the images the generator was trained on (memorisation); default: the real "
        "manifest's rows whose split is `train_split`, or all real rows when it has no splits."
    )
    train_split: str = knob("train", "Split of the real manifest the generator was trained on.")
    by: list[str] = knob(
        ["fst", "class"], "Fields to group by: `class` (the label), `fst`, `fst_group` or any manifest attribute. "
        "Each field alone, and their combination when `cross`."
    )
    cross: bool = knob(True, "Also evaluate every combination of the `by` fields (class x skin type).")
    metrics: list[str] = knob(
        list(DEFAULT_METRICS), "Metrics as metric@extractor (`fairsynth ls metrics`, `fairsynth ls extractors`); "
        "a bare name uses the metric's own extractor."
    )
    extractor: str | None = knob(
        None, "Use this extractor for every metric, e.g. `random` in tests (its results are labelled test-only)."
    )
    weights: dict[str, str] = knob({}, "Explicit weights file per extractor, e.g. {inception: /w/pt_inception-2015-12-05-6726825d.pth}.")
    extractor_options: dict[str, dict[str, Any]] = knob(
        {}, "Options per extractor, e.g. {classifier: {arch: resnet50}, lpips: {size: 64}}."
    )
    download: bool = knob(True, "Download missing weights when the machine is online (never when offline).")
    output: str = knob("", "Folder for evaluation.json, evaluation.csv and memorisation.csv; default <workdir>/evaluation.")
    cache_dir: str = knob("", "Cache folder; features go to <cache_dir>/features; default <workdir>/cache.")
    min_group_size: int = knob(
        10, "Fewest images per set for a number; smaller groups get 'undefined (n = ...)' (at least 2)."
    )
    allow_unmatched_groups: bool = knob(
        False, "Synthetic groups with no real images are an error (usually a naming mismatch, e.g. 'V-VI' vs "
        "'V–VI'); true reports them as undefined instead."
    )
    bootstrap: int = knob(100, "Bootstrap resamples for every confidence interval; 0: no intervals.")
    bootstrap_max_n: int = knob(
        4000, "Largest set (per side) bootstrapped; larger groups get no interval (PRDC and KID replicates "
        "hold N x N matrices)."
    )
    confidence: float = knob(0.95, "Confidence level of the intervals.")
    ci_method: Literal["normal", "percentile"] = knob(
        "normal", "`normal`: estimate ± z·SE from the replicates (robust when resampling shifts a statistic, as "
        "with FID and Vendi); `percentile`: replicate quantiles."
    )
    kid_subsets: int = knob(100, "KID: number of random subsets.")
    kid_subset_size: int = knob(1000, "KID: largest subset size; min(this, n_real, n_synthetic) is used and recorded.")
    cmmd_sigma: float = knob(10.0, "CMMD: bandwidth sigma of the Gaussian RBF kernel (Jayasumana et al. 2024: 10).")
    cmmd_estimator: Literal["biased", "unbiased"] = knob(
        "biased", "CMMD: `biased` — the reference's minimum-variance estimator (kernel means over all pairs, diagonal "
        "included; >= 0, bias of order 1/n); `unbiased` — diagonals left out (reported as cmmd_unbiased, can be < 0)."
    )
    prdc_k: int = knob(3, "PRDC: k of the k-nearest-neighbour balls.")
    vendi_q: float = knob(1.0, "Vendi: order q of the entropy (1: Shannon).")
    diversity_target: float | None = knob(0.3, "Intra-class diversity a (class, group) cell should exceed (FairSkin plan: 0.3).")
    clip_score_formula: Literal["torchmetrics", "hessel"] = knob(
        "torchmetrics", "`torchmetrics`: max(100·mean cos, 0); `hessel`: mean 2.5·max(cos, 0) (Hessel et al. 2021)."
    )
    memorisation_percentile: float = knob(5.0, "Memorised: closer to a training image than this percentile of training NN distances.")
    memorisation_worst: int = knob(20, "Synthetic images closest to a training image listed in evaluation.json.")
    batch_size: int = knob(32, "Images per feature-extraction batch.")
    device: str = knob("cpu", "Torch device for feature extraction (cpu, cuda, cuda:1, mps).")
    seed: int | None = knob(None, "Seed of KID subsets and bootstrap resamples; default the recipe's seed.")

    def __post_init__(self) -> None:
        if self.min_group_size < 2:
            raise ConfigError(f"evaluate.min_group_size must be >= 2, got {self.min_group_size}")
        if self.bootstrap < 0:
            raise ConfigError(f"evaluate.bootstrap must be >= 0, got {self.bootstrap}")
        if self.bootstrap_max_n < 2:
            raise ConfigError(f"evaluate.bootstrap_max_n must be >= 2, got {self.bootstrap_max_n}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"evaluate.confidence must be in (0, 1), got {self.confidence}")
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ConfigError("evaluate.kid_subsets must be >= 1 and evaluate.kid_subset_size >= 2")
        if not self.cmmd_sigma > 0:
            raise ConfigError(f"evaluate.cmmd_sigma must be > 0, got {self.cmmd_sigma}")
        if self.cmmd_estimator not in ("biased", "unbiased"):
            raise ConfigError(f"evaluate.cmmd_estimator must be biased or unbiased, got {self.cmmd_estimator!r}")
        if self.prdc_k < 1:
            raise ConfigError(f"evaluate.prdc_k must be >= 1, got {self.prdc_k}")
        if self.vendi_q < 0:
            raise ConfigError(f"evaluate.vendi_q must be >= 0, got {self.vendi_q}")
        if not 0.0 < self.memorisation_percentile < 100.0:
            raise ConfigError(f"evaluate.memorisation_percentile must be in (0, 100), got {self.memorisation_percentile}")
        if self.memorisation_worst < 0 or self.batch_size < 1:
            raise ConfigError("evaluate.memorisation_worst must be >= 0 and evaluate.batch_size >= 1")
        if not self.metrics:
            raise ConfigError("evaluate.metrics is empty")
        if any(not str(field).strip() for field in self.by):
            raise ConfigError(f"evaluate.by has an empty field name: {self.by}")
        from fairsynth.metrics.extractors import EXTRACTORS

        for spec in self.metrics:
            _, extractor = parse_metric_spec(spec, self.extractor)
            if extractor not in EXTRACTORS:
                raise ConfigError(
                    f"evaluate.metrics: {spec!r} names unknown extractor {extractor!r}; available: {', '.join(EXTRACTORS.names())}"
                )
        for name, options in self.extractor_options.items():
            if name not in EXTRACTORS:
                raise ConfigError(f"evaluate.extractor_options: unknown extractor {name!r}; available: {', '.join(EXTRACTORS.names())}")
            valid = set(inspect.signature(EXTRACTORS.get(name).__init__).parameters) - {"self", "weights", "device", "download"}
            unknown = sorted(set(options) - valid)
            if unknown:
                raise ConfigError(
                    f"evaluate.extractor_options.{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid)) or '(none)'}"
                )
        for name in self.weights:
            if name not in EXTRACTORS:
                raise ConfigError(f"evaluate.weights: unknown extractor {name!r}; available: {', '.join(EXTRACTORS.names())}")

    def metric_specs(self) -> list[tuple[str, str]]:
        """``(metric, extractor)`` pairs, without repeats: FD-DINOv2 and CMMD first, the rest in the order given."""
        pairs: list[tuple[str, str]] = []
        for spec in self.metrics:
            pair = parse_metric_spec(spec, self.extractor)
            if pair not in pairs:
                pairs.append(pair)
        return headline_first(pairs)
