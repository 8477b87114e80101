"""`downstream:` — the classifier that proves whether synthetic images help, and how it is trained.

    downstream:
      backbone: resnet50           # any timm model name
      pretrained: /models/resnet50.safetensors   # local weights; "" = random init (offline default)
      arms: [real, mixed, synthetic]             # what `fairsynth downstream compare` runs
      seeds: [0, 1, 2]                           # every arm runs every seed
      mix:
        synthetic_share: fairskin  # FST I-II 20 %, III 30 %, IV 50 %, V 70 %, VI 80 % of each group's training images
        min_real_share: 0.25       # at least a quarter of every batch is real
      high_risk: [melanoma, basal cell carcinoma]

Run with ``fairsynth downstream compare --config recipe.yaml``. Model selection and early
stopping use the *validation* split only; the test split is read once, by the selected model.
Two protocols extend the comparison (each its own stage of ``fairsynth run``):

    downstream:
      curve:                       # fairsynth downstream curve: the mixed arm at each synthetic:real ratio
        ratios: [0, 0.25, 0.5, 1, 2, 5, 10]
      ablate:                      # fairsynth downstream ablate: remove real images of one group
        group: V-VI
        keep: [1, 0.5, 0.25, 0.1, 0]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from fairsynth.config import ConfigError, knob

#: Named synthetic shares per Fitzpatrick type: the share of synthetic images among a group's
#: training images. FairSkin's mixing plan puts most synthetic data where real data is rarest.
NAMED_SHARES: dict[str, dict[str, float]] = {
    "fairskin": {"I": 0.2, "II": 0.2, "III": 0.3, "IV": 0.5, "V": 0.7, "VI": 0.8},
}
ARMS = ("real", "mixed", "synthetic", "hybrid", "oracle")
Arm = Literal["real", "mixed", "synthetic", "hybrid", "oracle"]


@dataclass
class MixConfig:
    """How real and synthetic images are combined in the `mixed` arm."""

    synthetic_share: str | dict[str, float] = knob(
        "all", "Share of synthetic images among each group's training images, e.g. {V: 0.7, VI: 0.8}; "
        "a named plan (fairskin), or `all` to add every synthetic image. Groups are the `group_by` values "
        "(Roman Fitzpatrick types for fst); a group not named gets no synthetic images.",
    )
    curriculum_epochs: int = knob(
        0, "Raise the synthetic share linearly from 0 to its target over this many epochs (0: full share from "
        "the first epoch). Images join in a fixed seeded order, so later epochs extend earlier ones.",
    )
    min_real_share: float = knob(0.0, "Least share of real images in every training batch (0: batches follow the data).")

    def __post_init__(self) -> None:
        if isinstance(self.synthetic_share, str):
            if self.synthetic_share != "all" and self.synthetic_share not in NAMED_SHARES:
                raise ConfigError(
                    f"downstream.mix.synthetic_share: unknown plan {self.synthetic_share!r}; "
                    f"use a mapping, 'all' or one of {', '.join(NAMED_SHARES)}"
                )
        else:
            for group, share in self.synthetic_share.items():
                if not 0.0 <= float(share) < 1.0:
                    raise ConfigError(f"downstream.mix.synthetic_share[{group}] must be in [0, 1), got {share}")
        if self.curriculum_epochs < 0:
            raise ConfigError("downstream.mix.curriculum_epochs must be >= 0")
        if not 0.0 <= self.min_real_share <= 1.0:
            raise ConfigError(f"downstream.mix.min_real_share must be in [0, 1], got {self.min_real_share}")

    def shares(self) -> dict[str, float] | None:
        """Synthetic share per group, or None for `all`."""
        if isinstance(self.synthetic_share, str):
            return None if self.synthetic_share == "all" else dict(NAMED_SHARES[self.synthetic_share])
        return {str(k): float(v) for k, v in self.synthetic_share.items()}


@dataclass
class HybridConfig:
    """The `hybrid` arm: generate more where the classifier struggles, during its training.

    Every ``every`` epochs the classifier's validation loss is measured per class × group cell;
    the ``worst_cells`` highest get ``images_per_cell`` new images each from the trained
    generator (cached per seed and round, so a rerun reuses them), which join the mixed
    training set. The arm starts from the `mixed` arm's static synthetic set.
    """

    every: int = knob(5, "Epochs between rounds.")
    rounds: int = knob(3, "Most generation rounds.")
    worst_cells: int = knob(4, "Cells (class x group) that get new images per round.")
    images_per_cell: int = knob(16, "Images generated per chosen cell and round (the round's budget / worst_cells).")
    min_val_images: int = knob(2, "Fewest validation images of a cell for its loss to count.")

    def __post_init__(self) -> None:
        for name in ("every", "rounds", "worst_cells", "images_per_cell", "min_val_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"downstream.hybrid.{name} must be >= 1, got {getattr(self, name)}")


def _check_test_set(where: str, name: str) -> None:
    if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{where}.test_set: {name!r} is not a test set name (`test`, or a name of downstream.test_sets)")


@dataclass
class CurveConfig:
    """`fairsynth downstream curve`: the mixed arm at each synthetic:real ratio, every ratio with every seed.

    At ratio r the mixed arm trains on every real training image plus r times as many synthetic
    ones, drawn from the generated set per class × group cell in proportion to the set's own
    cells (its planned balance), seeded by the run's seed and nested (a smaller ratio's images
    are among a larger one's). Ratio 0 is the real-only arm, the baseline of every difference.
    """

    enabled: bool = knob(
        False, "Run the curve as a stage of `fairsynth run` when the recipe names no `stages:` (a named list rules; "
        "`fairsynth downstream curve` always runs it).",
    )
    ratios: list[float] = knob(
        [0, 0.25, 0.5, 1, 2, 5, 10], "Synthetic:real ratios (synthetic images per real training image); 0 is always "
        "run: the real-only baseline. Where the generated set is too small the point says how far it got.",
    )
    epochs: int | None = knob(None, "Epochs of each ratio's runs; None: downstream.epochs (fewer make a quick curve).")
    test_set: str = knob(
        "", "Test set of the plot and the headline: `test` (the in-distribution split) or a name of downstream.test_sets; "
        "empty: the first external test set, else the test split. Every test set is in curve.json.",
    )

    def __post_init__(self) -> None:
        if not self.ratios:
            raise ConfigError("downstream.curve.ratios is empty")
        for ratio in self.ratios:
            if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isfinite(ratio):
                raise ConfigError(f"downstream.curve.ratios: {ratio!r} is not a number")
            if ratio < 0:
                raise ConfigError(f"downstream.curve.ratios: ratio {ratio:g} is below 0; a synthetic:real ratio is >= 0")
        if len(set(map(float, self.ratios))) != len(self.ratios):
            raise ConfigError(f"downstream.curve.ratios has a ratio twice: {self.ratios}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"downstream.curve.epochs must be >= 1, got {self.epochs}")
        _check_test_set("downstream.curve", self.test_set)


@dataclass
class AblateConfig:
    """`fairsynth downstream ablate`: how much real data of one group the synthetic set can replace.

    At each share kept, that share of the group's real training images stays (seeded by the run's
    seed, stratified by class and skin type, nested: a smaller share keeps a subset of a larger
    one's images) and every other real image too; the real-only arm, the mixed arm (the synthetic
    images the mixed arm uses with every real image, held fixed) and, on a procedural world, the
    oracle arm train on it.
    """

    enabled: bool = knob(
        False, "Run the ablation as a stage of `fairsynth run` when the recipe names no `stages:` (a named list rules; "
        "`fairsynth downstream ablate` always runs it).",
    )
    group: str = knob(
        "V-VI", "The group whose real training images are removed: a value of downstream.group_by (a skin type, e.g. "
        "VI) or, for skin types, a DDI group (I-II, III-IV, V-VI).",
    )
    keep: list[float] = knob(
        [1, 0.5, 0.25, 0.1, 0], "Shares of the group's real training images kept, each in [0, 1]; the headline needs 0 "
        "(real + synthetic with all of them removed) and at least one larger share (real only across the shares), "
        "usually 1.",
    )
    epochs: int | None = knob(None, "Epochs of each run; None: downstream.epochs.")
    test_set: str = knob(
        "", "Test set of the plot and the headline: `test` or a name of downstream.test_sets; empty: the first external "
        "test set (a balanced one is what this question needs), else the test split.",
    )

    def __post_init__(self) -> None:
        if not str(self.group).strip():
            raise ConfigError("downstream.ablate.group is empty; name a group, e.g. V-VI")
        self.group = str(self.group)
        if not self.keep:
            raise ConfigError("downstream.ablate.keep is empty")
        for share in self.keep:
            if not isinstance(share, (int, float)) or isinstance(share, bool) or not math.isfinite(share):
                raise ConfigError(f"downstream.ablate.keep: {share!r} is not a number")
            if not 0.0 <= share <= 1.0:
                raise ConfigError(f"downstream.ablate.keep: share {share:g} is outside [0, 1] (the share of the group's "
                                  "real training images kept)")
        if len(set(map(float, self.keep))) != len(self.keep):
            raise ConfigError(f"downstream.ablate.keep has a share twice: {self.keep}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"downstream.ablate.epochs must be >= 1, got {self.epochs}")
        _check_test_set("downstream.ablate", self.test_set)


@dataclass
class DownstreamConfig:
    """The downstream classifier: data, backbone, training protocol and evaluation."""

    real: str = knob("", "Manifest of the prepared real data with a `split` column (train/val/test); default: prepare's.")
    synthetic: str = knob("", "Manifest of the synthetic set (generate's metadata.jsonl); default: generate's.")
    output: str = knob("", "Output folder; default <workdir>/downstream.")
    arms: list[str] = knob(
        ["real", "mixed", "synthetic"], "Arms `compare` runs: real, mixed (real + the static synthetic set), synthetic, "
        "hybrid (mixed, plus images generated during training for the worst cells; off unless listed), and oracle "
        "(procedural world only: mixed with every synthetic image replaced by a true world image of the same class "
        "x skin-type cell, the ceiling of what perfect synthetic images could do).",
    )
    test_sets: dict[str, str] = knob(
        {}, "External test sets by name -> a prepared manifest (e.g. {ddi: data/ddi/prepared/metadata.jsonl}); "
        "every row is tested whatever its split, and each is reported beside the in-distribution test split, "
        "never pooled with it. Its classes must occur in the training split, and no image may be a training image.",
    )
    oracle: str = knob(
        "", "Manifest of the oracle arm's true world images (made by `fairsynth run` from the world's truth, "
        "<output>/oracle-images/metadata.jsonl); empty: the data is not a procedural world, no oracle arm.",
    )
    seeds: list[int] = knob([0, 1, 2], "Seeds; every arm runs each (at least 3 for a comparison).")
    group_by: str = knob("fst", "Sensitive attribute: a manifest column (fst is read as Roman types I-VI).")
    high_risk: list[str] = knob(
        [], "Malignant classes: the positive side of equalized odds, equal opportunity and high-risk sensitivity; "
        "empty: no high-risk task, those numbers are undefined.",
    )
    # model
    backbone: str = knob("resnet50", "timm model name (`timm.list_models()`); test_resnet is a tiny one for tests.")
    pretrained: str = knob(
        "", "Backbone weights: a local .safetensors (or .pth/.bin, read with weights_only) file, `hub` for timm's "
        "hub weights (needs network or a cache), or empty for random initialisation.",
    )
    image_size: int = knob(0, "Side in pixels the classifier sees (images are resized); 0: the largest training resolution.")
    # training
    epochs: int = knob(30, "Most epochs of the (mixed) training phase.")
    synthetic_pretrain_epochs: int = knob(
        0, "Epochs on synthetic images only before the main phase (then the learning rate drops by lr_drop).",
    )
    lr_drop: float = knob(0.1, "Factor on the learning rate for the main phase after synthetic pre-training.")
    batch_size: int = knob(32, "Images per step.")
    learning_rate: float = knob(1e-3, "AdamW learning rate (cosine decay over each phase).")
    weight_decay: float = knob(1e-4, "AdamW weight decay.")
    class_balanced: bool = knob(True, "Sample training images with weights inverse to their class frequency.")
    augment: bool = knob(True, "Flip, rotation and colour jitter on real training images (synthetic ones as generated).")
    domain_adversarial: float = knob(
        0.0, "Weight of a real-vs-synthetic head trained through gradient reversal (Ganin & Lempitsky 2015); 0: off.",
    )
    patience: int = knob(8, "Stop after this many epochs without a better validation score.")
    select_on: Literal["macro_auroc", "balanced_accuracy"] = knob(
        "macro_auroc", "Validation score for early stopping and model selection (never the test split); ties "
        "go to the lower validation cross-entropy.",
    )
    # evaluation
    bootstrap_resamples: int = knob(1000, "Bootstrap resamples of the 95 % confidence intervals.")
    min_positives: int = knob(2, "Fewest positives (and negatives) of a class in a group for its AUROC to count.")
    mix: MixConfig = knob(default_factory=MixConfig, help="How the mixed arm combines real and synthetic images.")
    hybrid: HybridConfig = knob(default_factory=HybridConfig, help="The hybrid arm's generation rounds.")
    curve: CurveConfig = knob(default_factory=CurveConfig, help="The synthetic:real ratio curve (`downstream curve`).")
    ablate: AblateConfig = knob(default_factory=AblateConfig, help="The minority-real ablation (`downstream ablate`).")

    def __post_init__(self) -> None:
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or not self.arms:
            raise ConfigError(f"downstream.arms: unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("downstream.seeds must be a non-empty list of distinct seeds")
        if self.image_size and self.image_size < 16:
            raise ConfigError(f"downstream.image_size must be >= 16, got {self.image_size}")
        for name in ("epochs", "batch_size", "patience", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"downstream.{name} must be >= 1, got {getattr(self, name)}")
        if self.synthetic_pretrain_epochs < 0 or self.min_positives < 1:
            raise ConfigError("downstream.synthetic_pretrain_epochs must be >= 0 and min_positives >= 1")
        if self.learning_rate <= 0 or not 0 < self.lr_drop <= 1 or self.domain_adversarial < 0:
            raise ConfigError("downstream.learning_rate must be > 0, lr_drop in (0, 1], domain_adversarial >= 0")
        for name in self.test_sets:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)) or name in ("test", "test split"):
                raise ConfigError(
                    f"downstream.test_sets: name {name!r} must be letters, digits, '-', '_' or '.' (it names files), "
                    "and not 'test' (the in-distribution split)"
                )
        if self.select_on not in ("macro_auroc", "balanced_accuracy"):
            raise ConfigError(f"downstream.select_on must be macro_auroc or balanced_accuracy, got {self.select_on!r}")
