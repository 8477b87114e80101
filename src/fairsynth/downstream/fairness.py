"""Accuracy and fairness of one set of classifier predictions, per sensitive group, with intervals.

The downstream proof asks whether synthetic images make a skin-lesion classifier both better and
fairer across Fitzpatrick skin types (FST). This module turns one evaluation set's predictions
(:class:`Predictions`) into those numbers. It is a pure numpy core: scikit-learn and fairlearn
compute every metric; this module only selects the samples, drops what is undefined and says so.

Numbers
- Discrimination: accuracy, balanced accuracy, one-vs-rest AUROC per class and their macro
  mean (Hanley & McNeil 1982), macro AUROC within each group and the gap between the best and
  worst group (Groh et al. 2021, Fitzpatrick17k; Daneshjou et al. 2022, DDI, whose grouping of
  FST into I-II / III-IV / V-VI :func:`ddi_group` applies).
- Fairness of the binary high-risk task (malignant or not; ``high_risk`` names the malignant
  classes, a sample is predicted positive when its argmax class is one of them): equalized odds
  and equal opportunity differences (Hardt et al. 2016), demographic parity difference
  (Calders & Verwer 2010), and the high-risk sensitivity per group.
- Percentile bootstrap intervals (Efron & Tibshirani 1993, Eq. 13.5), resampling within each
  group so that rare skin types stay present in every replicate. A between-group difference
  (max - min) grows with the sampling noise of each group, so its replicates lean upward and
  its interval sits mostly above the estimate (on 300 samples, EOD 0.30 had [0.21, 0.67]):
  read it as the range the data allow, and compare arms on the same test set and seed.

Undefined values are ``None``, never NaN and never a substitute number:
- A class's AUROC needs ``min_positives`` positives and ``min_negatives`` negatives; a macro
  AUROC averages the classes that have them and is ``None`` when none does.
- fairlearn's rate functions return 0, not NaN, for a group with no positives (or negatives):
  sklearn's ``confusion_matrix(normalize="true")`` maps 0/0 to 0. Such a 0 would enter a
  difference as a real rate, so the groups where a rate is undefined are dropped *before*
  fairlearn is called, and :class:`Difference` names them. Equalized odds needs both
  positives and negatives in a group (TPR and FPR), equal opportunity needs positives (TPR),
  demographic parity needs only samples (selection rate), so it never drops a group.
- Samples whose group is ``"unknown"`` (or ``None``) count for overall numbers and are left out
  of every per-group number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
from fairlearn import metrics as fairlearn_metrics
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

from fairsynth.data.fst import group_of as fst_group_of
from fairsynth.data.fst import parse_fst

#: The group of a sample whose sensitive attribute is not known (as :func:`fairsynth.data.fst.to_roman` writes it).
UNKNOWN = "unknown"

#: Rows of ``probabilities`` must sum to 1 within this (float32 softmax drifts by ~1e-6).
ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Predictions:
    """Classifier outputs on one evaluation set.

    Lists are accepted and stored as arrays; a ``None`` group is stored as ``"unknown"``.
    """

    labels: np.ndarray  # (N,) int class index of the truth
    probabilities: np.ndarray  # (N, C) softmax probabilities, rows sum to 1
    groups: np.ndarray  # (N,) str sensitive group of each sample ("I".."VI", or "unknown")
    classes: tuple[str, ...]  # C class names, index-aligned with probabilities' columns

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.shape[0] == 0:
            raise ValueError(f"labels: expected shape (N,) with N >= 1, got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
        n = labels.shape[0]

        probabilities = np.asarray(self.probabilities)
        if probabilities.ndim != 2 or probabilities.shape[0] != n or probabilities.shape[1] < 2:
            raise ValueError(f"probabilities: expected shape ({n}, C) with C >= 2, got {probabilities.shape}")
        if probabilities.dtype.kind not in "fiu":
            raise ValueError(f"probabilities: expected numbers, got dtype {probabilities.dtype}")
        probabilities = probabilities.astype(np.float64, copy=False)  # (N, C)
        if not np.isfinite(probabilities).all() or (probabilities < 0).any():
            raise ValueError("probabilities: expected finite values >= 0")
        worst = float(np.abs(probabilities.sum(axis=1) - 1.0).max())
        if worst > ROW_SUM_TOLERANCE:
            raise ValueError(f"probabilities: rows must sum to 1 (softmax), one is off by {worst:.3g}")
        n_classes = probabilities.shape[1]

        if isinstance(self.classes, str):
            raise ValueError("classes: expected a sequence of class names, got one string")
        classes = tuple(self.classes)
        if len(classes) != n_classes:
            raise ValueError(f"classes: {len(classes)} names for {n_classes} probability columns")
        if not all(isinstance(name, str) for name in classes) or len(set(classes)) != n_classes:
            raise ValueError(f"classes: expected {n_classes} distinct strings, got {classes}")
        if labels.min() < 0 or labels.max() >= n_classes:
            low, high = labels.min(), labels.max()
            raise ValueError(f"labels: class indices must lie in 0..{n_classes - 1}, got {low}..{high}")

        groups = np.asarray(self.groups)
        if groups.ndim != 1 or groups.shape[0] != n:
            raise ValueError(f"groups: expected shape ({n},), got {groups.shape}")
        if groups.dtype.kind == "O":
            bad = [g for g in groups if g is not None and not isinstance(g, str)]
            if bad:
                raise ValueError(f"groups: expected str or None, got {type(bad[0]).__name__} {bad[0]!r}")
            groups = np.array([UNKNOWN if g is None else g for g in groups], dtype=str)  # (N,)
        elif groups.dtype.kind != "U":
            raise ValueError(f"groups: expected str (e.g. 'I'..'VI' or 'unknown'), got dtype {groups.dtype}")

        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "classes", classes)

    @property
    def predicted(self) -> np.ndarray:
        """Argmax class index of each sample ``(N,)``."""
        return self.probabilities.argmax(axis=1)

    def subset(self, rows: np.ndarray) -> Predictions:
        """The samples at ``rows`` (a boolean mask ``(N,)`` or indices, repeats allowed)."""
        return Predictions(self.labels[rows], self.probabilities[rows], self.groups[rows], self.classes)


@dataclass(frozen=True)
class Difference:
    """A between-group difference (max - min of a per-group rate) and the groups it compares.

    ``dropped`` are groups whose rate is undefined (no positives or no negatives); ``value`` is
    ``None`` when fewer than two groups remain.
    """

    value: float | None
    groups_used: tuple[str, ...]
    dropped: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"value": self.value, "groups_used": list(self.groups_used), "dropped": list(self.dropped)}


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval; ``low``/``high`` are ``None`` when it is not reported.

    ``usable`` replicates had a defined statistic; with fewer than half of ``resamples`` usable
    (or an undefined ``estimate``) no interval is given.
    """

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    resamples: int
    usable: int

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------


def ddi_group(fst: str) -> str | None:
    """DDI's group ("I-II", "III-IV", "V-VI") of a skin type written "I".."VI"; None if unknown."""
    return None if fst == UNKNOWN else fst_group_of(parse_fst(fst))


def regroup(p: Predictions, group_of: Callable[[str], str | None]) -> Predictions:
    """``p`` with every known group mapped through ``group_of`` (None -> "unknown").

    Example: ``regroup(p, ddi_group)`` turns Fitzpatrick types into DDI's three groups.
    """
    mapped = [UNKNOWN if g == UNKNOWN else group_of(str(g)) for g in p.groups]
    groups = np.array([UNKNOWN if g is None else g for g in mapped], dtype=str)  # (N,)
    return replace(p, groups=groups)


def known_groups(p: Predictions) -> list[str]:
    """The groups present in ``p``, sorted ("I" < "II" < ... < "VI"), without "unknown"."""
    return sorted(str(g) for g in np.unique(p.groups) if g != UNKNOWN)


# ---------------------------------------------------------------------------------------------
# Discrimination: accuracy and AUROC
# ---------------------------------------------------------------------------------------------


def accuracy(p: Predictions) -> float:
    """Share of samples whose argmax class is the true class."""
    return float(accuracy_score(p.labels, p.predicted))


def balanced_accuracy(p: Predictions) -> float:
    """Mean recall over the classes present in ``labels`` (sklearn's ``balanced_accuracy_score``)."""
    return float(balanced_accuracy_score(p.labels, p.predicted))


def _check_minimums(min_positives: int, min_negatives: int) -> None:
    if min_positives < 1 or min_negatives < 1:
        raise ValueError(f"min_positives and min_negatives must be >= 1, got {min_positives} and {min_negatives}")


def class_auroc(p: Predictions, min_positives: int = 1, min_negatives: int = 1) -> dict[str, float | None]:
    """One-vs-rest AUROC of each class's probability column; None where the class has fewer than
    ``min_positives`` positives or ``min_negatives`` negatives."""
    _check_minimums(min_positives, min_negatives)
    result: dict[str, float | None] = {}
    for index, name in enumerate(p.classes):
        is_class = p.labels == index  # (N,)
        positives = int(is_class.sum())
        negatives = is_class.size - positives
        if positives < min_positives or negatives < min_negatives:
            result[name] = None
        else:
            result[name] = float(roc_auc_score(is_class, p.probabilities[:, index]))
    return result


def _mean_defined(values: Mapping[str, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def macro_auroc(p: Predictions, min_positives: int = 1, min_negatives: int = 1) -> float | None:
    """Mean of :func:`class_auroc` over the classes where it is defined; None if none is.

    With every class present this equals sklearn's ``roc_auc_score(multi_class="ovr")``.
    """
    return _mean_defined(class_auroc(p, min_positives, min_negatives))


def group_auroc(
    p: Predictions,
    group_of: Callable[[str], str | None] | None = None,
    min_positives: int = 1,
    min_negatives: int = 1,
) -> dict[str, float | None]:
    """Macro AUROC within each known group (optionally regrouped, e.g. ``group_of=ddi_group``).

    The class minimums apply within the group: a group where no class has enough positives
    and negatives (e.g. one whose samples are all one class) is None.
    """
    if group_of is not None:
        p = regroup(p, group_of)
    return {g: macro_auroc(p.subset(p.groups == g), min_positives, min_negatives) for g in known_groups(p)}


def auroc_gap(per_group: Mapping[str, float | None]) -> float | None:
    """Best minus worst defined group AUROC; None with fewer than two defined groups."""
    return _spread(per_group)


def _spread(values: Mapping[str, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(max(defined) - min(defined)) if len(defined) >= 2 else None


# ---------------------------------------------------------------------------------------------
# Fairness of the binary high-risk task
# ---------------------------------------------------------------------------------------------


def high_risk_task(p: Predictions, high_risk: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction of "is it high-risk?": ``(y_true (N,), y_pred (N,))`` in {0, 1}."""
    if isinstance(high_risk, str):
        raise ValueError("high_risk: expected a sequence of class names, got one string")
    names = tuple(high_risk)
    missing = [name for name in names if name not in p.classes]
    if not names or missing:
        raise ValueError(f"high_risk: {missing or 'no names'} not among classes {p.classes}")
    columns = [p.classes.index(name) for name in names]
    y_true = np.isin(p.labels, columns).astype(np.int64)  # (N,)
    y_pred = np.isin(p.predicted, columns).astype(np.int64)  # (N,)
    return y_true, y_pred


def _split_groups(p: Predictions, y_true: np.ndarray, positives: bool, negatives: bool) -> tuple[list[str], list[str]]:
    """Known groups that have (used) or lack (dropped) the positives/negatives a rate needs."""
    used, dropped = [], []
    for g in known_groups(p):
        truth = y_true[p.groups == g]  # (N_g,)
        ok = (not positives or truth.any()) and (not negatives or not truth.all())
        (used if ok else dropped).append(g)
    return used, dropped


def _difference(
    p: Predictions, y_true: np.ndarray, y_pred: np.ndarray, positives: bool, negatives: bool,
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
) -> Difference:
    used, dropped = _split_groups(p, y_true, positives, negatives)
    if len(used) < 2:
        return Difference(None, tuple(used), tuple(dropped))
    rows = np.isin(p.groups, used)  # (N,)
    value = compute(y_true[rows], y_pred[rows], p.groups[rows])
    return Difference(float(value), tuple(used), tuple(dropped))


def _fairlearn_difference(metric: Callable, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    return metric(y_true, y_pred, sensitive_features=groups)


def _tpr_difference(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    frame = fairlearn_metrics.MetricFrame(
        metrics=fairlearn_metrics.true_positive_rate, y_true=y_true, y_pred=y_pred, sensitive_features=groups,
    )
    return frame.difference(method="between_groups")


def equalized_odds_difference(p: Predictions, high_risk: Sequence[str]) -> Difference:
    """Larger of the TPR and FPR differences between groups (fairlearn), over the groups that
    have both high-risk and other samples."""
    y_true, y_pred = high_risk_task(p, high_risk)
    compute = partial(_fairlearn_difference, fairlearn_metrics.equalized_odds_difference)
    return _difference(p, y_true, y_pred, True, True, compute)


def demographic_parity_difference(p: Predictions, high_risk: Sequence[str]) -> Difference:
    """Difference of the share predicted high-risk between groups (fairlearn); every known group."""
    y_true, y_pred = high_risk_task(p, high_risk)
    compute = partial(_fairlearn_difference, fairlearn_metrics.demographic_parity_difference)
    return _difference(p, y_true, y_pred, False, False, compute)


def equal_opportunity_difference(p: Predictions, high_risk: Sequence[str]) -> Difference:
    """Difference of the high-risk sensitivity (TPR) between groups that have high-risk samples."""
    y_true, y_pred = high_risk_task(p, high_risk)
    return _difference(p, y_true, y_pred, True, False, _tpr_difference)


def high_risk_sensitivity(p: Predictions, high_risk: Sequence[str]) -> dict:
    """Recall of the high-risk task: ``{"overall": x, "per_group": {group: x}}``.

    ``overall`` counts every sample (unknown groups too); None where there is no high-risk sample.
    """
    y_true, y_pred = high_risk_task(p, high_risk)
    overall = float(recall_score(y_true, y_pred)) if y_true.any() else None
    used, _ = _split_groups(p, y_true, True, False)
    per_group: dict[str, float | None] = dict.fromkeys(known_groups(p))
    if used:
        rows = np.isin(p.groups, used)  # (N,)
        frame = fairlearn_metrics.MetricFrame(
            metrics=fairlearn_metrics.true_positive_rate,
            y_true=y_true[rows], y_pred=y_pred[rows], sensitive_features=p.groups[rows],
        )
        per_group.update({str(g): float(v) for g, v in frame.by_group.items()})
    return {"overall": overall, "per_group": per_group}


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def resample_rows(p: Predictions, rng: np.random.Generator, stratify_groups: bool = True) -> np.ndarray:
    """Row indices of one resample with replacement ``(N,)``; within each group (and "unknown")
    when ``stratify_groups``, so every group keeps its size."""
    n = p.labels.shape[0]
    if not stratify_groups:
        return rng.integers(0, n, n)
    strata = [np.flatnonzero(p.groups == g) for g in np.unique(p.groups)]
    return np.concatenate([rng.choice(rows, size=rows.size, replace=True) for rows in strata])


def _defined(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def bootstrap_many(
    p: Predictions,
    statistics: Callable[[Predictions], Mapping[Hashable, float | None]],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratify_groups: bool = True,
) -> dict[Hashable, Interval]:
    """Intervals for several statistics computed together on the same resamples.

    ``statistics(p)`` names the values; a name missing from a replicate, None or NaN there
    counts as undefined in that replicate.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    estimates = {name: _defined(value) for name, value in statistics(p).items()}
    draws: dict[Hashable, list[float]] = {name: [] for name in estimates}
    if any(value is not None for value in estimates.values()):
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            values = statistics(p.subset(resample_rows(p, rng, stratify_groups)))
            for name in draws:
                value = _defined(values.get(name))
                if value is not None:
                    draws[name].append(value)
    alpha = 1.0 - level
    intervals: dict[Hashable, Interval] = {}
    for name, estimate in estimates.items():
        usable = len(draws[name])
        low = high = None
        if estimate is not None and 2 * usable >= resamples:
            low, high = (float(q) for q in np.quantile(draws[name], [alpha / 2, 1 - alpha / 2]))
        intervals[name] = Interval(estimate, low, high, level, resamples, usable)
    return intervals


def bootstrap(
    p: Predictions,
    statistic: Callable[[Predictions], float | None],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratify_groups: bool = True,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (Efron & Tibshirani 1993, Eq. 13.5).

    Example: ``bootstrap(p, lambda q: auroc_gap(group_auroc(q)))``.
    """
    return bootstrap_many(p, lambda q: {"value": statistic(q)}, resamples, level, seed, stratify_groups)["value"]


# ---------------------------------------------------------------------------------------------
# Bootstrap replicates as row counts: every replicate at once
#
# A resample is a vector of counts per row (how often the row was drawn), so every number of
# every replicate is a weighted statistic computed for all replicates at once: AUROC is the
# Mann-Whitney statistic with mid-ranks, Σ over positive x negative pairs of
# w_i w_j ([s_i > s_j] + ½ [s_i = s_j]) / (P·Q), the same number _report_numbers_fast gives on
# the resampled rows (a test checks every number), at a small fraction of the cost.
# ---------------------------------------------------------------------------------------------


def bootstrap_counts(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Counts ``(R, N)``: how often each test row occurs in each of ``resamples`` resamples drawn
    with replacement within each group (every group keeps its size, as in
    :func:`resample_rows`)."""
    counts = np.zeros((resamples, groups.shape[0]), dtype=np.float64)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        counts[:, rows] = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size), size=resamples)
    return counts


def _weighted_auroc(is_positive: np.ndarray, scores: np.ndarray, weights: np.ndarray, min_pos: int, min_neg: int) -> np.ndarray:
    """Mid-rank Mann-Whitney AUROC of every replicate ``(R,)`` (NaN below the minimums).

    ``weights`` ``(R, n)`` are the rows' counts; tied scores count one half, as with mid-ranks.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # first row of each tie block
    positive = is_positive[order]
    w = weights[:, order]  # (R, n)
    pos_by_tie = np.add.reduceat(w * positive, starts, axis=1)  # (R, U)
    neg_by_tie = np.add.reduceat(w * ~positive, starts, axis=1)  # (R, U)
    below = np.cumsum(neg_by_tie, axis=1) - neg_by_tie  # (R, U) negatives scored strictly lower
    wins = (pos_by_tie * (below + 0.5 * neg_by_tie)).sum(axis=1)  # (R,)
    p, q = pos_by_tie.sum(axis=1), neg_by_tie.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = wins / (p * q)
    value[(p < min_pos) | (q < min_neg)] = np.nan
    return value


def _nanmean_rows(columns: list[np.ndarray], size: int) -> np.ndarray:
    """Mean of the defined values of each replicate (NaN where none is)."""
    if not columns:
        return np.full(size, np.nan)
    stacked = np.vstack(columns)  # (k, R)
    defined = ~np.isnan(stacked)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    count = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _spread_rows(columns: list[np.ndarray], size: int) -> np.ndarray:
    """Max minus min of the defined values of each replicate; NaN with fewer than two defined."""
    if not columns:
        return np.full(size, np.nan)
    stacked = np.vstack(columns)  # (k, R)
    defined = ~np.isnan(stacked)
    spread = np.where(defined, stacked, -np.inf).max(axis=0) - np.where(defined, stacked, np.inf).min(axis=0)
    return np.where(defined.sum(axis=0) >= 2, spread, np.nan)


def _rate(hits: np.ndarray, among: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted share of ``hits`` among the rows ``among`` per replicate (NaN where there are none)."""
    denominator = weights @ among.astype(np.float64)  # (R,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (weights @ (hits & among).astype(np.float64)) / denominator, np.nan)


def report_draws(
    p: Predictions, counts: np.ndarray, high_risk: Sequence[str], min_positives: int, min_negatives: int,
) -> dict[tuple, np.ndarray]:
    """:func:`_report_numbers_fast` of every replicate ``(R,)``, NaN where undefined.

    ``counts`` ``(R, N)`` are the replicates as row counts (:func:`bootstrap_counts`).
    """
    size = counts.shape[0]
    labels, probabilities, predicted = p.labels, p.probabilities, p.predicted
    correct = predicted == labels  # (N,)
    out: dict[tuple, np.ndarray] = {}
    total = counts.sum(axis=1)
    out[("accuracy",)] = (counts @ correct.astype(np.float64)) / total
    recalls = []
    for c in range(len(p.classes)):
        recall = _rate(correct, labels == c, counts)
        recalls.append(recall)  # NaN where the class is absent from the replicate: left out, as np.unique does
    out[("balanced_accuracy",)] = _nanmean_rows(recalls, size)

    def class_aurocs(rows: np.ndarray) -> list[np.ndarray]:
        weights = counts[:, rows]
        return [
            _weighted_auroc(labels[rows] == c, probabilities[rows, c], weights, min_positives, min_negatives)
            for c in range(len(p.classes))
        ]

    every = np.ones(labels.shape[0], dtype=bool)
    per_class = class_aurocs(every)
    out[("macro_auroc",)] = _nanmean_rows(per_class, size)
    for name, value in zip(p.classes, per_class):
        out[("class_auroc", name)] = value
    groups = known_groups(p)
    per_group = {g: _nanmean_rows(class_aurocs(p.groups == g), size) for g in groups}
    for g, value in per_group.items():
        out[("group_auroc", g)] = value
    out[("auroc_gap",)] = _spread_rows(list(per_group.values()), size)
    if not high_risk:
        nothing = np.full(size, np.nan)
        out |= {("high_risk_sensitivity", "overall"): nothing, ("equalized_odds_difference",): nothing,
                ("equal_opportunity_difference",): nothing, ("demographic_parity_difference",): nothing}
        out |= {("high_risk_sensitivity", "per_group", g): nothing for g in groups}
        return out
    y_true, y_pred = (v.astype(bool) for v in high_risk_task(p, high_risk))
    tpr, fpr, selection = {}, {}, {}
    for g in groups:
        rows = p.groups == g
        tpr[g] = _rate(y_pred, rows & y_true, counts)
        fpr[g] = _rate(y_pred, rows & ~y_true, counts)
        selection[g] = _rate(y_pred, rows, counts)
    # equalized odds over the groups where both rates are defined (in this replicate)
    both = [np.where(np.isnan(fpr[g]), np.nan, tpr[g]) for g in groups]
    both_fpr = [np.where(np.isnan(tpr[g]), np.nan, fpr[g]) for g in groups]
    out[("high_risk_sensitivity", "overall")] = _rate(y_pred, y_true, counts)
    out |= {("high_risk_sensitivity", "per_group", g): tpr[g] for g in groups}
    out[("equalized_odds_difference",)] = np.fmax(_spread_rows(both, size), _spread_rows(both_fpr, size))
    out[("equal_opportunity_difference",)] = _spread_rows(list(tpr.values()), size)
    out[("demographic_parity_difference",)] = _spread_rows(list(selection.values()), size)
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _report_numbers(
    p: Predictions, high_risk: Sequence[str], min_positives: int, min_negatives: int,
) -> dict[tuple, float | None]:
    """Every number of :func:`report`, flat, keyed by its path in the report."""
    per_class = class_auroc(p, min_positives, min_negatives)
    per_group = group_auroc(p, min_positives=min_positives, min_negatives=min_negatives)
    numbers: dict[tuple, float | None] = {
        ("accuracy",): accuracy(p),
        ("balanced_accuracy",): balanced_accuracy(p),
        ("macro_auroc",): _mean_defined(per_class),
        **{("class_auroc", name): value for name, value in per_class.items()},
        **{("group_auroc", g): value for g, value in per_group.items()},
        ("auroc_gap",): auroc_gap(per_group),
    }
    if not high_risk:
        return {**numbers, **_no_high_risk_task(p)}
    sensitivity = high_risk_sensitivity(p, high_risk)
    numbers |= {
        ("high_risk_sensitivity", "overall"): sensitivity["overall"],
        **{("high_risk_sensitivity", "per_group", g): v for g, v in sensitivity["per_group"].items()},
        ("equalized_odds_difference",): equalized_odds_difference(p, high_risk).value,
        # The TPRs per group come from fairlearn already; their spread is MetricFrame.difference().
        ("equal_opportunity_difference",): _spread(sensitivity["per_group"]),
        ("demographic_parity_difference",): demographic_parity_difference(p, high_risk).value,
    }
    return numbers


def _no_high_risk_task(p: Predictions) -> dict[tuple, float | None]:
    """The numbers of the high-risk task, undefined: a study that names no high-risk class
    (defect types, garments) has no binary task to be fair about."""
    return {
        ("high_risk_sensitivity", "overall"): None,
        **{("high_risk_sensitivity", "per_group", g): None for g in known_groups(p)},
        ("equalized_odds_difference",): None,
        ("equal_opportunity_difference",): None,
        ("demographic_parity_difference",): None,
    }


def _auroc(is_class: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUROC by the Mann-Whitney U statistic with mid-ranks for ties (equals sklearn's)."""
    ranks = rankdata(scores)  # (N,)
    positives = int(is_class.sum())
    negatives = is_class.size - positives
    return float((ranks[is_class].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _class_auroc_fast(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], min_pos: int, min_neg: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        is_class = labels == index  # (N,)
        positives = int(is_class.sum())
        out[name] = None if positives < min_pos or is_class.size - positives < min_neg else _auroc(is_class, probabilities[:, index])
    return out


def _report_numbers_fast(
    p: Predictions, high_risk: Sequence[str], min_positives: int, min_negatives: int,
) -> dict[tuple, float | None]:
    """:func:`_report_numbers` in plain numpy, for bootstrap replicates (about 50x faster).

    The same definitions, written out: the tests check that both give the same numbers on
    the same predictions, so the intervals describe exactly the reported estimates.
    """
    predicted = p.predicted  # (N,)
    groups = known_groups(p)
    present = np.unique(p.labels)
    recalls = [float(np.mean(predicted[p.labels == c] == c)) for c in present]
    per_class = _class_auroc_fast(p.labels, p.probabilities, p.classes, min_positives, min_negatives)
    per_group = {}
    for g in groups:
        rows = p.groups == g  # (N,)
        per_group[g] = _mean_defined(_class_auroc_fast(p.labels[rows], p.probabilities[rows], p.classes, min_positives, min_negatives))
    numbers: dict[tuple, float | None] = {
        ("accuracy",): float(np.mean(predicted == p.labels)),
        ("balanced_accuracy",): float(np.mean(recalls)),
        ("macro_auroc",): _mean_defined(per_class),
        **{("class_auroc", name): value for name, value in per_class.items()},
        **{("group_auroc", g): value for g, value in per_group.items()},
        ("auroc_gap",): auroc_gap(per_group),
    }
    if not high_risk:
        return {**numbers, **_no_high_risk_task(p)}
    y_true, y_pred = high_risk_task(p, high_risk)
    tpr, fpr, selection = {}, {}, {}
    for g in groups:
        rows = p.groups == g
        truth, guess = y_true[rows], y_pred[rows]  # (N_g,)
        tpr[g] = float(guess[truth == 1].mean()) if truth.any() else None
        fpr[g] = float(guess[truth == 0].mean()) if not truth.all() else None
        selection[g] = float(guess.mean())
    both = [g for g in groups if tpr[g] is not None and fpr[g] is not None]
    eod = (
        max(_spread({g: tpr[g] for g in both}), _spread({g: fpr[g] for g in both})) if len(both) >= 2 else None
    )
    return numbers | {
        ("high_risk_sensitivity", "overall"): float(y_pred[y_true == 1].mean()) if y_true.any() else None,
        **{("high_risk_sensitivity", "per_group", g): v for g, v in tpr.items()},
        ("equalized_odds_difference",): eod,
        ("equal_opportunity_difference",): _spread(tpr),
        ("demographic_parity_difference",): _spread(selection),
    }


def _percentile_interval(estimate: float | None, draws: np.ndarray, resamples: int, level: float) -> Interval:
    """The percentile interval of the defined ``draws`` (as :func:`bootstrap_many` makes it)."""
    defined = draws[~np.isnan(draws)]
    low = high = None
    if estimate is not None and 2 * defined.size >= resamples:
        low, high = (float(q) for q in np.quantile(defined, [(1 - level) / 2, (1 + level) / 2]))
    return Interval(estimate, low, high, level, resamples, int(defined.size))


def report(
    p: Predictions,
    high_risk: Sequence[str],
    group_of: Callable[[str], str | None] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    min_positives: int = 1,
    min_negatives: int = 1,
    level: float = 0.95,
) -> dict:
    """Every number of this module with its interval, as JSON-ready nested dicts.

    Each number is ``{"estimate", "low", "high", "level", "resamples", "usable"}``; the three
    differences add ``groups_used`` and ``dropped``. All numbers share the same stratified
    resamples. ``groups`` counts the samples and high-risk samples of each group. With no
    ``high_risk`` class the high-risk sensitivity and the three differences are undefined (None).

    Example: ``json.dumps(report(p, high_risk=("melanoma", "bcc"), group_of=ddi_group))``.
    """
    if group_of is not None:
        p = regroup(p, group_of)
    # no high-risk class named: no binary task, its numbers are undefined (None)
    y_true = high_risk_task(p, high_risk)[0] if high_risk else np.zeros_like(p.labels)
    estimates = _report_numbers(p, high_risk, min_positives, min_negatives)  # sklearn / fairlearn
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    # every replicate at once, stratified by group (the rows' counts; see report_draws)
    draws = report_draws(p, bootstrap_counts(p.groups, resamples, np.random.default_rng(seed)), high_risk,
                         min_positives, min_negatives)
    intervals = {path: _percentile_interval(_defined(estimates[path]), draws[path], resamples, level) for path in estimates}
    result: dict = {
        "n": int(p.labels.shape[0]),
        "classes": list(p.classes),
        "high_risk": list(high_risk),
        "interval": f"{level:.0%} percentile bootstrap, {resamples} resamples within each group, seed {seed}",
        "min_positives": min_positives,
        "min_negatives": min_negatives,
        "groups": {
            g: {"samples": int((p.groups == g).sum()), "high_risk": int(y_true[p.groups == g].sum())}
            for g in [*known_groups(p), *([UNKNOWN] if (p.groups == UNKNOWN).any() else [])]
        },
    }
    for path, interval in intervals.items():
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = interval.to_dict()
    for name, difference in (
        ("equalized_odds_difference", equalized_odds_difference),
        ("equal_opportunity_difference", equal_opportunity_difference),
        ("demographic_parity_difference", demographic_parity_difference),
    ):
        found = difference(p, high_risk) if high_risk else Difference(None, (), ())
        result[name].update(groups_used=list(found.groups_used), dropped=list(found.dropped))
    return result
