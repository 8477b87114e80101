"""Comparing classifier runs honestly: across seeds (a paired t-interval) and across test images (a bootstrap).

Two sources of noise sit under every difference between two arms of the downstream study, and
each comparison reports both, with the test it used:

1. **Seeds** (training randomness). Each seed trains both arms and tests them on the same test
   images, so the per-seed differences are paired; their mean gets a Student t-interval with
   n − 1 degrees of freedom (:data:`PAIRED_TEST`), 'within noise' when it holds 0.
2. **Test images** (which images happened to be tested). Within a seed, the test images are
   resampled with replacement within each group (Efron & Tibshirani 1993, Eq. 13.5, the
   percentile interval), the *same* rows for both arms and every seed, and the difference is
   recomputed (:data:`TEST_IMAGE_BOOTSTRAP`): one interval per seed, and one for the mean over
   seeds.

A bootstrap replicate is a vector of counts per test row (how often the row was drawn), so the
headline numbers of every replicate are computed at once as weighted statistics
(:func:`headline_draws`, on :func:`fairsynth.downstream.fairness.report_draws`). Undefined values
(a class without enough positives in a replicate) are NaN in the draws and leave that replicate out.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

from fairsynth.downstream import fairness
from fairsynth.downstream.fairness import bootstrap_counts, report_draws

#: How differences across seeds are tested.
PAIRED_TEST = "paired t-interval over seeds (Student's t, n - 1 df, on the per-seed differences; same seed, same test images)"
#: How test-image noise is measured.
TEST_IMAGE_BOOTSTRAP = (
    "percentile bootstrap over test images (resampled within each group, the same rows for every arm and seed)"
)


def headline_draws(p: fairness.Predictions, counts: np.ndarray, high_risk: Sequence[str], min_positives: int,
                   ddi_groups: bool = True) -> dict[str, np.ndarray]:
    """The headline numbers of :func:`fairsynth.downstream.compare.headline`, per replicate ``(R,)``.

    With ``ddi_groups`` (skin types as the group) per-group AUROC and the AUROC gap are on DDI's
    groups I-II / III-IV / V-VI, ``auroc_gap_types`` on the six types, and ``auroc_type.<type>``
    is each type's AUROC.
    """
    types = report_draws(p, counts, high_risk, min_positives, min_positives)
    grouped = report_draws(fairness.regroup(p, fairness.ddi_group), counts, (), min_positives, min_positives) if ddi_groups else types
    out = {
        "accuracy": types[("accuracy",)], "balanced_accuracy": types[("balanced_accuracy",)],
        "macro_auroc": types[("macro_auroc",)], "auroc_gap": grouped[("auroc_gap",)],
        "auroc_gap_types": types[("auroc_gap",)],
    }
    for path, value in grouped.items():
        if path[0] == "group_auroc":
            out[f"auroc.{path[1]}"] = value
    if ddi_groups:  # each skin type too, for a protocol that names one (e.g. an ablation of type VI)
        for path, value in types.items():
            if path[0] == "group_auroc":
                out[f"auroc_type.{path[1]}"] = value
    for name in ("equalized_odds_difference", "equal_opportunity_difference", "demographic_parity_difference"):
        out[name] = types[(name,)]
    out["high_risk_sensitivity"] = types[("high_risk_sensitivity", "overall")]
    return out


# ---------------------------------------------------------------------------------------------
# Runs, points and paired differences
# ---------------------------------------------------------------------------------------------


@dataclass
class RunDraws:
    """One run's headline numbers on its test images and on every bootstrap replicate of them."""

    estimates: dict[str, float | None]
    draws: dict[str, np.ndarray]  # key -> (R,), NaN where undefined


def draw_runs(
    predictions: Mapping[Hashable, fairness.Predictions], *, high_risk: Sequence[str], min_positives: int,
    resamples: int, seed: int = 0, ddi_groups: bool = True,
) -> dict[Hashable, RunDraws]:
    """Headline numbers of every run and their replicates, all on the same resampled test rows.

    Every run must have predicted the same test images in the same order (one test set).
    """
    if not predictions:
        return {}
    first = next(iter(predictions.values()))
    for name, p in predictions.items():
        if p.labels.shape != first.labels.shape or not np.array_equal(p.labels, first.labels) or not np.array_equal(p.groups, first.groups):
            raise ValueError(f"run {name!r} was tested on other images than {next(iter(predictions))!r}: no paired comparison")
    counts = bootstrap_counts(first.groups, resamples, np.random.default_rng(seed))
    ones = np.ones((1, first.labels.shape[0]))
    out = {}
    for name, p in predictions.items():
        estimates = headline_draws(p, ones, high_risk, min_positives, ddi_groups)
        out[name] = RunDraws(
            {k: (None if math.isnan(v[0]) else float(v[0])) for k, v in estimates.items()},
            headline_draws(p, counts, high_risk, min_positives, ddi_groups),
        )
    return out


def _percentile(values: np.ndarray, level: float, resamples: int) -> list[float | None]:
    """Percentile interval of the defined draws; none when fewer than half the replicates are defined."""
    defined = values[~np.isnan(values)]
    if defined.size == 0 or 2 * defined.size < resamples:
        return [None, None]
    low, high = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float | None]:
    """Student t-interval of the mean of ``values`` (n − 1 df); none with fewer than two."""
    if len(values) < 2:
        return [None, None]
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return [mean - half, mean + half]


def point(runs: Mapping[int, RunDraws], key: str, level: float = 0.95) -> dict[str, Any]:
    """One arm's number over seeds: mean, sd, per-seed values, a t-interval of the mean over seeds
    and a bootstrap interval of the mean over test images."""
    seeds = sorted(runs)
    values = {s: runs[s].estimates.get(key) for s in seeds}
    defined = [v for v in values.values() if v is not None]
    resamples = next(iter(runs.values())).draws[key].shape[0] if runs and key in next(iter(runs.values())).draws else 0
    out: dict[str, Any] = {
        "per_seed": {str(s): values[s] for s in seeds}, "n": len(defined),
        "mean": float(np.mean(defined)) if defined else None,
        "sd": float(np.std(defined, ddof=1)) if len(defined) > 1 else None,
        "seed_interval": t_interval(defined, level) if defined else [None, None],
        "test_image_interval": [None, None],
    }
    usable = [s for s in seeds if values[s] is not None and key in runs[s].draws]
    if usable and resamples:
        with warnings.catch_warnings():  # a replicate where every seed is undefined stays NaN, and is left out
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_draws = np.nanmean(np.vstack([runs[s].draws[key] for s in usable]), axis=0)
        out["test_image_interval"] = _percentile(mean_draws, level, resamples)
    return out


def paired_difference(arm: Mapping[int, RunDraws], base: Mapping[int, RunDraws], key: str, level: float = 0.95) -> dict[str, Any]:
    """``arm − base`` paired by seed: the mean and its t-interval over seeds (:data:`PAIRED_TEST`),
    and per seed and for the mean a bootstrap interval over test images (:data:`TEST_IMAGE_BOOTSTRAP`).

    ``within_noise`` is the t-interval's verdict (None with one seed); ``test_images.within_noise``
    the bootstrap's for the mean over seeds.
    """
    seeds = [s for s in sorted(arm) if s in base]
    differences = {}
    for s in seeds:
        a, b = arm[s].estimates.get(key), base[s].estimates.get(key)
        differences[s] = None if a is None or b is None else a - b
    defined = [d for d in differences.values() if d is not None]
    out: dict[str, Any] = {"per_seed": {str(s): d for s, d in differences.items()}, "n": len(defined),
                           "mean": float(np.mean(defined)) if defined else None, "low": None, "high": None,
                           "within_noise": None}
    if len(defined) >= 2:
        out["low"], out["high"] = t_interval(defined, level)
        out["within_noise"] = out["low"] <= 0 <= out["high"]
    usable = [s for s in seeds if differences[s] is not None and key in arm[s].draws and key in base[s].draws]
    test_images: dict[str, Any] = {"per_seed": {}, "low": None, "high": None, "within_noise": None, "resamples": 0}
    if usable:
        resamples = arm[usable[0]].draws[key].shape[0]
        draws = {s: arm[s].draws[key] - base[s].draws[key] for s in usable}  # (R,) each, NaN where undefined
        test_images["per_seed"] = {str(s): _percentile(d, level, resamples) for s, d in draws.items()}
        mean_draws = np.vstack(list(draws.values())).mean(axis=0)  # NaN where any seed is undefined: left out
        low, high = _percentile(mean_draws, level, resamples)
        test_images.update(low=low, high=high, resamples=resamples,
                           within_noise=None if low is None else bool(low <= 0 <= high))
    out["test_images"] = test_images
    return out


def format_difference(delta: Mapping[str, Any] | None) -> str:
    """A paired difference as a table cell: mean, its 95 % interval over seeds and whether it
    is within noise, then the interval over test images where there is one."""
    if delta is None or delta.get("mean") is None:
        return "undefined"
    if delta.get("low") is None:
        text = f"{delta['mean']:+.3f} (one seed)"
    else:
        verdict = "within noise" if delta["within_noise"] else "beyond noise"
        text = f"{delta['mean']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}] {verdict}"
    images = delta.get("test_images") or {}
    if images.get("low") is not None:
        text += f"; test images [{images['low']:+.3f}, {images['high']:+.3f}]"
    return text


def describe(seeds: Sequence[int], images_by_group: Mapping[str, int], resamples: int, test_set: str) -> str:
    """The sentence printed beside every comparison: seeds, test images per group, the tests used."""
    groups = ", ".join(f"{g} {n}" for g, n in images_by_group.items())
    n = len(seeds)
    return (
        f"{n} seed{'s' if n != 1 else ''} ({', '.join(map(str, seeds))}); test set: {test_set}, "
        f"{sum(images_by_group.values())} images ({groups}); differences: paired t-interval over seeds "
        f"(Student's t, {max(n - 1, 0)} df) and a percentile bootstrap over test images ({resamples} resamples within "
        "each group, paired across arms and seeds); 95 %"
    )


def images_by_group(p: fairness.Predictions, ddi_groups: bool = True) -> dict[str, int]:
    """Test images per group (DDI's groups for skin types), unknown last."""
    grouped = fairness.regroup(p, fairness.ddi_group) if ddi_groups else p
    counts = {g: int((grouped.groups == g).sum()) for g in fairness.known_groups(grouped)}
    unknown = int((grouped.groups == fairness.UNKNOWN).sum())
    return counts | ({fairness.UNKNOWN: unknown} if unknown else {})
