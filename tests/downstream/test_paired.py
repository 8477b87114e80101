"""Paired comparisons of runs: the weighted replicates equal the numbers on resampled rows, and the
intervals over seeds and over test images are what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fairsynth.downstream import fairness
from fairsynth.downstream.compare import headline
from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.fairness import bootstrap_counts, report_draws
from fairsynth.downstream.paired import describe, draw_runs, headline_draws, images_by_group, paired_difference, point
from fairsynth.downstream.train import evaluate_predictions

CLASSES = ("basal cell carcinoma", "melanoma", "nevocytic nevus", "psoriasis")
TYPES = ("I", "II", "III", "IV", "V", "VI")


def predictions(seed: int, n: int = 180, skill: float = 1.5, ties: bool = True) -> fairness.Predictions:
    """A run's predictions on one fixed test set (its labels and groups do not depend on ``seed``)."""
    labels = np.random.default_rng(12345).integers(0, 4, n)
    rng = np.random.default_rng(seed)
    groups = np.array([TYPES[i % 6] for i in range(n)])
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += skill * np.linspace(0.2, 1.5, n)[np.argsort(np.argsort(groups))]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if ties:  # tied scores across classes and groups: mid-ranks must count them one half
        probabilities[1::7] = probabilities[0]
    return fairness.Predictions(labels, probabilities, groups, CLASSES)


def _same(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and not math.isnan(b) and abs(a - b) < 1e-12)


@pytest.mark.parametrize("high_risk", [("melanoma", "basal cell carcinoma"), ()])
def test_weighted_replicates_equal_the_numbers_on_the_resampled_rows(high_risk):
    p = predictions(0)
    rng = np.random.default_rng(3)
    rows = [fairness.resample_rows(p, rng) for _ in range(6)]
    counts = np.vstack([np.bincount(r, minlength=p.labels.size) for r in rows]).astype(float)
    draws = report_draws(p, counts, high_risk, 3, 3)
    for r, chosen in enumerate(rows):
        expected = fairness._report_numbers_fast(p.subset(chosen), high_risk, 3, 3)
        assert set(expected) == set(draws)
        for path, value in expected.items():
            assert _same(value, draws[path][r]), (path, value, draws[path][r])


def test_the_report_intervals_agree_with_resampling_rows_one_by_one():
    """report() draws its replicates as row counts; the intervals are those of resampling rows."""
    p = predictions(4, n=300)
    counted = fairness.report(p, ["melanoma"], resamples=2000, seed=0)
    by_rows = fairness.bootstrap_many(p, lambda q: fairness._report_numbers_fast(q, ["melanoma"], 1, 1), 2000, seed=1)
    for path in [("accuracy",), ("macro_auroc",), ("group_auroc", "VI"), ("auroc_gap",), ("equalized_odds_difference",)]:
        node = counted
        for key in path:
            node = node[key]
        assert node["low"] == pytest.approx(by_rows[path].low, abs=0.015), path
        assert node["high"] == pytest.approx(by_rows[path].high, abs=0.015), path


def test_estimates_equal_the_headline_of_the_saved_metrics():
    p = predictions(1)
    config = DownstreamConfig(high_risk=["melanoma"], bootstrap_resamples=5, min_positives=2)
    from_metrics = headline(evaluate_predictions(p, config, seed=0))
    runs = draw_runs({"run": p}, high_risk=["melanoma"], min_positives=2, resamples=5)
    for key, value in from_metrics.items():
        estimate = runs["run"].estimates[key]
        assert (value is None and estimate is None) or estimate == pytest.approx(value, abs=1e-12), key


def test_bootstrap_counts_keep_every_group_its_size():
    groups = np.array(["I"] * 5 + ["VI"] * 3 + ["unknown"] * 2)
    counts = bootstrap_counts(groups, 200, np.random.default_rng(0))
    assert counts.shape == (200, 10)
    assert (counts[:, :5].sum(1) == 5).all() and (counts[:, 5:8].sum(1) == 3).all() and (counts[:, 8:].sum(1) == 2).all()
    assert counts[:, 0].mean() == pytest.approx(1.0, abs=0.2)


def test_a_clear_improvement_is_beyond_noise_on_both_tests_and_a_copy_is_within():
    base = {s: predictions(10 + s, skill=0.5) for s in range(3)}
    better = {s: predictions(10 + s, skill=3.0) for s in range(3)}
    runs = draw_runs({(arm, s): p for arm, by_seed in (("base", base), ("better", better)) for s, p in by_seed.items()},
                     high_risk=["melanoma"], min_positives=2, resamples=200)
    arm = {s: runs[("better", s)] for s in range(3)}
    ref = {s: runs[("base", s)] for s in range(3)}
    delta = paired_difference(arm, ref, "accuracy")
    by_hand = [arm[s].estimates["accuracy"] - ref[s].estimates["accuracy"] for s in range(3)]
    assert delta["mean"] == pytest.approx(np.mean(by_hand)) and delta["n"] == 3
    half = 4.302652729911275 * np.std(by_hand, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert delta["low"] == pytest.approx(np.mean(by_hand) - half) and delta["within_noise"] is False
    # the paired test as scipy states it: ttest_rel's confidence interval of the mean difference
    reference = stats.ttest_rel([arm[s].estimates["accuracy"] for s in range(3)],
                                [ref[s].estimates["accuracy"] for s in range(3)]).confidence_interval(0.95)
    assert [delta["low"], delta["high"]] == [pytest.approx(reference.low, abs=1e-12), pytest.approx(reference.high, abs=1e-12)]
    assert delta["test_images"]["within_noise"] is False and delta["test_images"]["low"] > 0
    assert set(delta["test_images"]["per_seed"]) == {"0", "1", "2"}
    same = paired_difference(ref, ref, "macro_auroc")
    assert same["mean"] == 0 and same["test_images"]["low"] == 0 == same["test_images"]["high"]


def test_a_point_has_its_mean_sd_and_both_intervals():
    runs = draw_runs({s: predictions(20 + s) for s in range(4)}, high_risk=[], min_positives=2, resamples=100)
    summary = point(runs, "auroc.V-VI")
    values = [runs[s].estimates["auroc.V-VI"] for s in range(4)]
    assert summary["mean"] == pytest.approx(np.mean(values)) and summary["sd"] == pytest.approx(np.std(values, ddof=1))
    low, high = summary["seed_interval"]
    assert low < summary["mean"] < high
    t_low, t_high = summary["test_image_interval"]
    assert t_low < summary["mean"] < t_high
    assert summary["per_seed"] == {str(s): v for s, v in enumerate(values)}


def test_runs_on_other_test_images_are_refused():
    with pytest.raises(ValueError, match="tested on other images"):
        draw_runs({"a": predictions(0), "b": predictions(1, n=120)}, high_risk=[], min_positives=1, resamples=5)


def test_the_description_names_seeds_images_per_group_and_both_tests():
    p = predictions(0, n=60)
    groups = images_by_group(p)
    assert groups == {"I-II": 20, "III-IV": 20, "V-VI": 20}
    text = describe([0, 1, 2], groups, 500, "world-test")
    assert "3 seeds (0, 1, 2)" in text and "I-II 20, III-IV 20, V-VI 20" in text
    assert "paired t-interval over seeds (Student's t, 2 df)" in text and "500 resamples" in text


def test_group_numbers_without_skin_types_use_the_groups_as_they_are():
    p = fairness.Predictions(predictions(0).labels, predictions(0).probabilities,
                             np.array(["site-a", "site-b"] * 90), CLASSES)
    draws = headline_draws(p, np.ones((1, 180)), [], 2, ddi_groups=False)
    assert {"auroc.site-a", "auroc.site-b", "auroc_gap"} <= set(draws)
