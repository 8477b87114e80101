"""Downstream fairness numbers against scikit-learn and fairlearn computed here on the same predictions."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from fairlearn import metrics as fairlearn_metrics
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

from fairsynth.downstream.fairness import (
    Predictions,
    accuracy,
    auroc_gap,
    balanced_accuracy,
    bootstrap,
    class_auroc,
    ddi_group,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    group_auroc,
    high_risk_sensitivity,
    macro_auroc,
    report,
    resample_rows,
)

CLASSES = ("nevus", "melanoma", "bcc", "seborrheic_keratosis")
HIGH_RISK = ("melanoma", "bcc")
FST = ("I", "II", "III", "IV", "V", "VI", "unknown")
#: Skewed like dermatology datasets: V and VI are rare, a few samples have no skin type.
FST_SHARES = (0.28, 0.28, 0.2, 0.12, 0.05, 0.03, 0.04)


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))  # (N, C)
    return exp / exp.sum(axis=1, keepdims=True)


def make_predictions(n: int = 300, seed: int = 0, signal: float = 1.5, groups: np.ndarray | None = None) -> Predictions:
    """A classifier better than chance: the true class's logit is raised by ``signal``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)  # (N,)
    logits = rng.normal(size=(n, len(CLASSES)))  # (N, C)
    logits[np.arange(n), labels] += signal
    if groups is None:
        groups = rng.choice(FST, n, p=FST_SHARES)  # (N,)
    return Predictions(labels, softmax(logits), groups, CLASSES)


def binary(p: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """The high-risk task computed independently of the module."""
    columns = [CLASSES.index(name) for name in HIGH_RISK]
    y_true = np.array([label in columns for label in p.labels], dtype=int)
    y_pred = np.array([int(np.argmax(row)) in columns for row in p.probabilities], dtype=int)
    return y_true, y_pred


def hand_macro_auroc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    scores = [
        roc_auc_score(labels == c, probabilities[:, c])
        for c in range(probabilities.shape[1])
        if 0 < (labels == c).sum() < labels.size
    ]
    return float(np.mean(scores)) if scores else None


@pytest.fixture(scope="module")
def predictions() -> Predictions:
    return make_predictions()


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------


def _valid() -> dict:
    return dict(
        labels=np.array([0, 1, 2]), probabilities=np.full((3, 3), 1 / 3), groups=np.array(["I", "V", "unknown"]),
        classes=("a", "b", "c"),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("labels", np.array([0.0, 1.0, 2.0])),
        ("labels", np.array([[0, 1, 2]])),
        ("labels", np.array([0, 1, 3])),
        ("labels", np.array([-1, 1, 2])),
        ("probabilities", np.ones((3, 1))),
        ("probabilities", np.full((2, 3), 1 / 3)),
        ("probabilities", np.full((3, 3), 0.5)),
        ("probabilities", np.array([[1.5, -0.5, 0.0]] * 3)),
        ("probabilities", np.array([[np.nan, 0.5, 0.5]] * 3)),
        ("groups", np.array(["I", "V"])),
        ("groups", np.array([1, 5, 6])),
        ("groups", np.array(["I", 5, None], dtype=object)),
        ("classes", ("a", "b")),
        ("classes", ("a", "a", "c")),
        ("classes", "abc"),
    ],
)
def test_invalid_predictions_name_the_field(field, value):
    kwargs = _valid() | {field: value}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        Predictions(**kwargs)


def test_predictions_accept_lists_and_none_as_unknown():
    p = Predictions([0, 1], [[0.9, 0.1], [0.2, 0.8]], np.array(["II", None], dtype=object), ["a", "b"])
    assert p.groups.tolist() == ["II", "unknown"]
    assert p.classes == ("a", "b")
    assert p.predicted.tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------
# Accuracy and AUROC
# ---------------------------------------------------------------------------------------------


def test_accuracy_and_balanced_accuracy_match_sklearn(predictions):
    predicted = predictions.probabilities.argmax(axis=1)
    assert accuracy(predictions) == pytest.approx(accuracy_score(predictions.labels, predicted))
    assert balanced_accuracy(predictions) == pytest.approx(balanced_accuracy_score(predictions.labels, predicted))
    assert 0.5 < accuracy(predictions) < 1.0  # the fixture classifier is informative, not perfect


def test_class_and_macro_auroc_match_sklearn_one_vs_rest(predictions):
    expected = roc_auc_score(predictions.labels, predictions.probabilities, multi_class="ovr", average=None)
    assert list(class_auroc(predictions).values()) == pytest.approx(list(expected))
    assert list(class_auroc(predictions)) == list(CLASSES)
    assert macro_auroc(predictions) == pytest.approx(
        roc_auc_score(predictions.labels, predictions.probabilities, multi_class="ovr", average="macro")
    )


def test_classes_below_the_minimums_are_none_and_left_out_of_the_mean(predictions):
    positives = Counter(predictions.labels.tolist())
    rarest = min(positives, key=positives.get)
    strict = class_auroc(predictions, min_positives=positives[rarest] + 1)
    assert strict[CLASSES[rarest]] is None
    others = [v for name, v in class_auroc(predictions).items() if name != CLASSES[rarest]]
    assert all(strict[name] is not None for name in CLASSES if name != CLASSES[rarest])
    assert macro_auroc(predictions, min_positives=positives[rarest] + 1) == pytest.approx(np.mean(others))
    # A class with no sample at all has no AUROC even with the loosest minimum.
    absent = Predictions(np.array([0, 1, 0, 1]), np.array([[0.7, 0.2, 0.1]] * 4), np.array(["I"] * 4), ("a", "b", "c"))
    assert class_auroc(absent)["c"] is None
    assert macro_auroc(absent) == pytest.approx(0.5)


def test_macro_auroc_is_none_when_no_class_qualifies():
    one_class = Predictions(np.zeros(5, dtype=int), np.full((5, 2), 0.5), np.array(["I"] * 5), ("a", "b"))
    assert macro_auroc(one_class) is None
    with pytest.raises(ValueError, match="min_positives"):
        macro_auroc(one_class, min_positives=0)


def test_group_auroc_matches_roc_auc_on_each_group_slice(predictions):
    per_group = group_auroc(predictions)
    assert list(per_group) == ["I", "II", "III", "IV", "V", "VI"]  # "unknown" is left out
    for group, value in per_group.items():
        rows = predictions.groups == group
        assert value == pytest.approx(hand_macro_auroc(predictions.labels[rows], predictions.probabilities[rows]))


def test_group_auroc_through_the_ddi_grouping(predictions):
    per_group = group_auroc(predictions, group_of=ddi_group)
    assert list(per_group) == ["I-II", "III-IV", "V-VI"]
    for group, members in {"I-II": ("I", "II"), "III-IV": ("III", "IV"), "V-VI": ("V", "VI")}.items():
        rows = np.isin(predictions.groups, members)
        expected = hand_macro_auroc(predictions.labels[rows], predictions.probabilities[rows])
        assert per_group[group] == pytest.approx(expected)


def test_a_group_with_one_class_is_none_and_the_gap_ignores_it(predictions):
    extra = 6
    labels = np.concatenate([predictions.labels, np.zeros(extra, dtype=int)])
    probabilities = np.concatenate([predictions.probabilities, np.full((extra, len(CLASSES)), 0.25)])
    groups = np.concatenate([predictions.groups, np.array(["X"] * extra)])
    p = Predictions(labels, probabilities, groups, CLASSES)
    per_group = group_auroc(p)
    assert per_group["X"] is None
    defined = [v for g, v in per_group.items() if g != "X"]
    assert auroc_gap(per_group) == pytest.approx(max(defined) - min(defined))
    assert auroc_gap(per_group) == pytest.approx(auroc_gap(group_auroc(predictions)))


def test_gap_needs_two_defined_groups():
    assert auroc_gap({"I": 0.8, "II": None}) is None
    assert auroc_gap({}) is None
    assert auroc_gap({"I": 0.8, "II": None, "III": 0.6}) == pytest.approx(0.2)


def test_perfect_classifier_has_auroc_one_and_no_fairness_difference(predictions):
    one_hot = np.eye(len(CLASSES))[predictions.labels]  # (N, C)
    perfect = Predictions(predictions.labels, one_hot, predictions.groups, CLASSES)
    assert macro_auroc(perfect) == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in group_auroc(perfect).values())
    assert auroc_gap(group_auroc(perfect)) == pytest.approx(0.0)
    difference = equalized_odds_difference(perfect, HIGH_RISK)
    assert difference.value == pytest.approx(0.0)
    assert difference.groups_used == ("I", "II", "III", "IV", "V", "VI")
    assert high_risk_sensitivity(perfect, HIGH_RISK)["overall"] == pytest.approx(1.0)


def test_perfect_on_one_group_and_random_on_another_has_a_large_gap():
    rng = np.random.default_rng(1)
    n = 200
    labels = rng.integers(0, len(CLASSES), n)  # (N,)
    groups = np.array(["I"] * (n // 2) + ["VI"] * (n // 2))  # (N,)
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), n)  # (N, C) random for group VI
    probabilities[: n // 2] = np.eye(len(CLASSES))[labels[: n // 2]]  # perfect for group I
    per_group = group_auroc(Predictions(labels, probabilities, groups, CLASSES))
    assert per_group["I"] == pytest.approx(1.0)
    assert abs(per_group["VI"] - 0.5) < 0.15
    assert auroc_gap(per_group) > 0.35


# ---------------------------------------------------------------------------------------------
# Fairness of the high-risk task
# ---------------------------------------------------------------------------------------------


def test_differences_match_fairlearn_when_every_group_has_both_outcomes(predictions):
    y_true, y_pred = binary(predictions)
    known = predictions.groups != "unknown"
    groups = predictions.groups[known]
    for group in np.unique(groups):  # the precondition of this test
        assert 0 < y_true[known][groups == group].sum() < (groups == group).sum()

    eod = equalized_odds_difference(predictions, HIGH_RISK)
    assert eod.value == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y_true[known], y_pred[known], sensitive_features=groups)
    )
    assert eod.dropped == () and eod.groups_used == ("I", "II", "III", "IV", "V", "VI")
    dpd = demographic_parity_difference(predictions, HIGH_RISK)
    assert dpd.value == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y_true[known], y_pred[known], sensitive_features=groups)
    )
    tpr = fairlearn_metrics.MetricFrame(
        metrics=fairlearn_metrics.true_positive_rate, y_true=y_true[known], y_pred=y_pred[known],
        sensitive_features=groups,
    )
    assert equal_opportunity_difference(predictions, HIGH_RISK).value == pytest.approx(tpr.difference())
    assert eod.value > 0 and dpd.value > 0  # the fixture is not trivially fair


def test_without_unknown_samples_the_differences_are_fairlearns_on_all_samples():
    p = make_predictions(n=240, seed=3, groups=np.repeat(["I", "III", "V"], 80))
    y_true, y_pred = binary(p)
    assert equalized_odds_difference(p, HIGH_RISK).value == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y_true, y_pred, sensitive_features=p.groups)
    )
    assert demographic_parity_difference(p, HIGH_RISK).value == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y_true, y_pred, sensitive_features=p.groups)
    )


def _with_one_sided_groups(predictions: Predictions) -> Predictions:
    """The fixture plus group "X" of nevi only (no high-risk sample) and group "Y" of high-risk ones only."""
    labels = np.concatenate([predictions.labels, [0, 0, 0, 0], [1, 2, 1, 2]])
    probabilities = np.concatenate([predictions.probabilities, np.eye(len(CLASSES))[[1, 1, 0, 3, 1, 0, 0, 2]]])
    groups = np.concatenate([predictions.groups, ["X"] * 4, ["Y"] * 4])
    return Predictions(labels, probabilities, groups, CLASSES)


def test_groups_without_positives_or_negatives_are_dropped_and_reported(predictions):
    p = _with_one_sided_groups(predictions)
    y_true, y_pred = binary(p)
    six = np.isin(p.groups, ["I", "II", "III", "IV", "V", "VI"])

    eod = equalized_odds_difference(p, HIGH_RISK)
    assert eod.dropped == ("X", "Y")
    assert eod.groups_used == ("I", "II", "III", "IV", "V", "VI")
    assert eod.value == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y_true[six], y_pred[six], sensitive_features=p.groups[six])
    )
    # fairlearn alone scores X's undefined TPR as 0 (sklearn maps 0/0 to 0): dropping X matters.
    known = p.groups != "unknown"
    naive = fairlearn_metrics.equalized_odds_difference(
        y_true[known], y_pred[known], sensitive_features=p.groups[known]
    )
    assert naive > eod.value + 0.1

    with_positives = np.isin(p.groups, ["I", "II", "III", "IV", "V", "VI", "Y"])
    eop = equal_opportunity_difference(p, HIGH_RISK)
    assert eop.dropped == ("X",)
    tpr = fairlearn_metrics.MetricFrame(
        metrics=fairlearn_metrics.true_positive_rate, y_true=y_true[with_positives], y_pred=y_pred[with_positives],
        sensitive_features=p.groups[with_positives],
    )
    assert eop.value == pytest.approx(tpr.difference())

    dpd = demographic_parity_difference(p, HIGH_RISK)  # selection rates need no positives
    assert dpd.dropped == ()
    assert dpd.value == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(
            y_true[known], y_pred[known], sensitive_features=p.groups[known]
        )
    )

    sensitivity = high_risk_sensitivity(p, HIGH_RISK)
    assert sensitivity["per_group"]["X"] is None
    assert sensitivity["per_group"]["Y"] == pytest.approx(0.5)  # Y predicts 1, 0, 0, 2: two of four high-risk
    assert "unknown" not in sensitivity["per_group"]


def test_a_difference_needs_two_usable_groups():
    labels = np.array([1, 0, 1, 0, 0, 0])  # group II has no high-risk sample
    groups = np.array(["I", "I", "unknown", "unknown", "II", "II"])
    p = Predictions(labels, np.eye(len(CLASSES))[labels], groups, CLASSES)
    eod = equalized_odds_difference(p, HIGH_RISK)
    assert eod.value is None and eod.groups_used == ("I",) and eod.dropped == ("II",)
    assert demographic_parity_difference(p, HIGH_RISK).value == pytest.approx(0.5)


def test_high_risk_sensitivity_is_recall_overall_and_per_group(predictions):
    y_true, y_pred = binary(predictions)
    sensitivity = high_risk_sensitivity(predictions, HIGH_RISK)
    assert sensitivity["overall"] == pytest.approx(recall_score(y_true, y_pred))  # unknown samples included
    for group, value in sensitivity["per_group"].items():
        rows = predictions.groups == group
        assert value == pytest.approx(recall_score(y_true[rows], y_pred[rows]))


@pytest.mark.parametrize("high_risk", [("melanoma", "wart"), (), "melanoma"])
def test_high_risk_names_must_be_classes(predictions, high_risk):
    with pytest.raises(ValueError, match="^high_risk:"):
        equalized_odds_difference(predictions, high_risk)


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_estimate():
    p = make_predictions(n=400, seed=4)
    interval = bootstrap(p, accuracy, resamples=300)
    assert interval.estimate == pytest.approx(accuracy(p))
    assert interval.low < interval.estimate < interval.high
    assert interval.usable == interval.resamples == 300 and interval.level == 0.95


def test_bootstrap_interval_narrows_when_the_set_quadruples():
    small = bootstrap(make_predictions(n=200, seed=5), accuracy, resamples=300)
    large = bootstrap(make_predictions(n=800, seed=5), accuracy, resamples=300)
    # The standard error scales as 1/sqrt(N): four times the samples, half the width (give or take).
    assert (large.high - large.low) < 0.7 * (small.high - small.low)


def test_bootstrap_is_deterministic_for_a_seed(predictions):
    first = bootstrap(predictions, accuracy, resamples=100, seed=7)
    assert bootstrap(predictions, accuracy, resamples=100, seed=7) == first
    other = bootstrap(predictions, accuracy, resamples=100, seed=8)
    assert (other.low, other.high) != (first.low, first.high)


def test_stratified_resamples_keep_every_group_size(predictions):
    rng = np.random.default_rng(0)
    sizes = Counter(predictions.groups.tolist())
    for _ in range(5):
        assert Counter(predictions.groups[resample_rows(predictions, rng)].tolist()) == sizes
    unstratified = [predictions.groups[resample_rows(predictions, rng, stratify_groups=False)] for _ in range(5)]
    assert any(Counter(groups.tolist()) != sizes for groups in unstratified)


def _rare_group(vi_labels: list[int]) -> Predictions:
    """Twelve samples of type I and a handful of type VI with the given labels."""
    rng = np.random.default_rng(2)
    labels = np.concatenate([rng.integers(0, len(CLASSES), 12), vi_labels])
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), labels.size)  # (N, C)
    groups = np.array(["I"] * 12 + ["VI"] * len(vi_labels))
    return Predictions(labels, probabilities, groups, CLASSES)


def test_bootstrap_drops_replicates_where_a_rare_group_is_undefined():
    # Type VI holds one nevus among three melanomas: a resample without it (P = (3/4)^4 = 0.32)
    # has no class with both positives and negatives in VI.
    p = _rare_group([0, 1, 1, 1])
    interval = bootstrap(p, lambda q: group_auroc(q).get("VI"), resamples=100)
    assert interval.estimate == pytest.approx(group_auroc(p)["VI"])
    assert 50 <= interval.usable < 90
    assert interval.low is not None and interval.low <= interval.high


def test_bootstrap_gives_no_interval_when_fewer_than_half_are_usable():
    # Two of each class and minimums of two: only resamples with exactly 2 + 2 qualify (P = 6/16).
    p = _rare_group([0, 0, 1, 1])
    statistic = lambda q: group_auroc(q, min_positives=2, min_negatives=2).get("VI")  # noqa: E731
    interval = bootstrap(p, statistic, resamples=100)
    assert interval.estimate is not None
    assert 0 < interval.usable < 50
    assert interval.low is None and interval.high is None


def test_bootstrap_of_an_undefined_statistic_is_undefined(predictions):
    interval = bootstrap(predictions, lambda q: None, resamples=10)
    assert (interval.estimate, interval.low, interval.high, interval.usable) == (None, None, None, 0)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def test_report_is_json_and_holds_every_number(predictions):
    p = _with_one_sided_groups(predictions)
    result = json.loads(json.dumps(report(p, HIGH_RISK, resamples=10, seed=1)))
    y_true, _ = binary(p)
    assert result["groups"] == {
        g: {"samples": int((p.groups == g).sum()), "high_risk": int(y_true[p.groups == g].sum())}
        for g in ["I", "II", "III", "IV", "V", "VI", "X", "Y", "unknown"]
    }
    assert result["accuracy"]["estimate"] == pytest.approx(accuracy(p))
    assert result["balanced_accuracy"]["estimate"] == pytest.approx(balanced_accuracy(p))
    assert result["macro_auroc"]["estimate"] == pytest.approx(macro_auroc(p))
    assert {c: v["estimate"] for c, v in result["class_auroc"].items()} == pytest.approx(class_auroc(p))
    per_group = group_auroc(p)
    assert per_group["X"] is None  # one class only
    assert {g: v["estimate"] for g, v in result["group_auroc"].items()} == pytest.approx(per_group)
    assert result["group_auroc"]["X"]["low"] is None and result["group_auroc"]["X"]["usable"] == 0
    assert result["auroc_gap"]["estimate"] == pytest.approx(auroc_gap(per_group))
    for name, function in [
        ("equalized_odds_difference", equalized_odds_difference),
        ("equal_opportunity_difference", equal_opportunity_difference),
        ("demographic_parity_difference", demographic_parity_difference),
    ]:
        difference = function(p, HIGH_RISK)
        assert result[name]["estimate"] == pytest.approx(difference.value)
        assert result[name]["dropped"] == list(difference.dropped)
    sensitivity = high_risk_sensitivity(p, HIGH_RISK)
    assert result["high_risk_sensitivity"]["overall"]["estimate"] == pytest.approx(sensitivity["overall"])
    assert result["high_risk_sensitivity"]["per_group"]["X"]["estimate"] is None
    assert result["accuracy"]["low"] <= result["accuracy"]["estimate"] <= result["accuracy"]["high"]
    assert result["accuracy"]["resamples"] == 10


def test_report_through_the_ddi_grouping(predictions):
    result = report(predictions, HIGH_RISK, group_of=ddi_group, resamples=5)
    json.dumps(result)
    assert list(result["groups"]) == ["I-II", "III-IV", "V-VI", "unknown"]
    assert result["groups"]["V-VI"]["samples"] == int(np.isin(predictions.groups, ["V", "VI"]).sum())
    assert list(result["group_auroc"]) == ["I-II", "III-IV", "V-VI"]
    assert result["group_auroc"]["V-VI"]["estimate"] == pytest.approx(group_auroc(predictions, ddi_group)["V-VI"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("minimum", [1, 3])
def test_fast_replicate_numbers_equal_the_library_numbers(seed, minimum):
    """Bootstrap replicates use a numpy copy of every definition; it must agree with sklearn/fairlearn."""
    from fairsynth.downstream.fairness import _report_numbers, _report_numbers_fast

    p = make_predictions(n=120, seed=seed, signal=0.8)
    # ties in the scores, an all-negative group and a resample with repeated rows
    p = p.subset(np.concatenate([np.arange(120), np.arange(10)]))
    rounded = np.round(p.probabilities, 1)
    rounded = rounded / rounded.sum(1, keepdims=True)
    p = Predictions(p.labels, rounded, p.groups, p.classes)
    high_risk = [p.classes[0], p.classes[1]]
    library = _report_numbers(p, high_risk, minimum, minimum)
    fast = _report_numbers_fast(p, high_risk, minimum, minimum)
    assert library.keys() == fast.keys()
    for key, value in library.items():
        if value is None:
            assert fast[key] is None, key
        else:
            assert fast[key] == pytest.approx(value, abs=1e-12), key
