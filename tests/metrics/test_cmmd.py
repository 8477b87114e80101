"""CMMD: the core against a direct implementation of the paper's formula and scikit-learn's RBF
kernel, its estimators, its bootstrap replicates, its response to a controlled shift, and the
registered metric in `evaluate` on a tiny extractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import rbf_kernel as sklearn_rbf_kernel

from fairsynth.metrics import METRICS
from fairsynth.metrics.config import EvaluateConfig, headline_first
from fairsynth.metrics.evaluate import evaluate
from fairsynth.metrics.functional.bootstrap import index_counts
from fairsynth.metrics.functional.cmmd import cmmd, cmmd_from_counts, cmmd_kernels, l2_normalise
from tests.metrics.conftest import write_set


def embeddings(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """CLIP-like embeddings: correlated, of arbitrary norm (CMMD normalises them)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(d, d)) / d**0.5
    return (rng.normal(size=(n, d)) @ mixing + shift) * rng.uniform(0.5, 3.0, size=(n, 1))


def reference_cmmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """The formula of Jayasumana et al. 2024 written out: normalise, Gaussian kernel with
    gamma = 1 / (2 sigma^2) on squared distances ||a||^2 + ||b||^2 - 2 a.b, each block's mean over
    all pairs (the diagonal included), scaled by 1000."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1.0 / (2.0 * sigma**2)

    def block(a: np.ndarray, b: np.ndarray) -> float:
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return float(np.exp(-gamma * squared).mean())

    return scale * (block(x, x) + block(y, y) - 2.0 * block(x, y))


def unbiased_by_hand(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    """Gretton et al. 2012 Eq. 3 with scikit-learn's kernel: within-set means over distinct pairs."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx, k_yy, k_xy = (sklearn_rbf_kernel(a, b, gamma=gamma) for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return 1000.0 * float(within_x + within_y - 2.0 * k_xy.mean())


@pytest.mark.parametrize("n_real, n_synthetic, d", [(60, 45, 16), (12, 30, 768)])
def test_cmmd_equals_the_reference_formula_within_1e_6(n_real, n_synthetic, d):
    x, y = embeddings(n_real, d, 0), embeddings(n_synthetic, d, 1, shift=0.3)
    ours = cmmd(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    # float32 features, as the feature cache stores them: the reference gets the same numbers
    x32, y32 = torch.from_numpy(x).float().double().numpy(), torch.from_numpy(y).float().double().numpy()
    assert abs(ours - reference_cmmd(x32, y32)) < 1e-6
    gamma = 1.0 / 200.0
    xn = x32 / np.linalg.norm(x32, axis=1, keepdims=True)
    yn = y32 / np.linalg.norm(y32, axis=1, keepdims=True)
    by_sklearn = 1000.0 * (sklearn_rbf_kernel(xn, xn, gamma=gamma).mean() + sklearn_rbf_kernel(yn, yn, gamma=gamma).mean()
                           - 2.0 * sklearn_rbf_kernel(xn, yn, gamma=gamma).mean())
    assert abs(ours - by_sklearn) < 1e-6
    assert ours > 0


def test_the_unbiased_form_is_offered_by_name_and_differs_by_the_diagonal():
    x, y = embeddings(20, 8, 2), embeddings(25, 8, 3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    unbiased = cmmd(tx, ty, estimator="unbiased")
    assert abs(unbiased - unbiased_by_hand(x, y)) < 1e-6
    assert cmmd(tx, ty) > unbiased  # the biased form adds the diagonal's k = 1: a positive bias
    assert cmmd(tx, tx) == pytest.approx(0.0, abs=1e-9)  # a set against itself
    with pytest.raises(ValueError, match="unknown CMMD estimator"):
        cmmd(tx, ty, estimator="median")
    with pytest.raises(ValueError, match="at least 2 image"):
        cmmd(tx[:1], ty, estimator="unbiased")
    with pytest.raises(ValueError, match="all zeros"):
        l2_normalise(torch.zeros(2, 4))


def test_cmmd_grows_with_every_step_of_added_noise():
    """A controlled shift: the same embeddings with more noise at each step. The embeddings share a
    common direction, as CLIP image embeddings do (isotropic ones would saturate once normalised)."""
    rng = np.random.default_rng(5)
    real = embeddings(80, 32, 0, shift=1.0)
    base = embeddings(80, 32, 1, shift=1.0)
    noise = rng.normal(size=base.shape)
    levels = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    values = [cmmd(torch.from_numpy(real), torch.from_numpy(base + level * noise)) for level in levels]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_cmmd_on_a_tiny_extractor_grows_with_every_step_of_pixel_noise():
    """The controlled shift on images: one seeded set of images, noise added to the pixels in
    steps, embedded by the tiny random extractor and compared with another set of the same kind."""
    from fairsynth.metrics.extractors import create_extractor

    rng = np.random.default_rng(0)
    tone = rng.uniform(60, 200, size=(64, 1, 1, 3))

    def images(seed: int) -> np.ndarray:
        return tone + np.random.default_rng(seed).normal(0, 20, size=(64, 32, 32, 3))  # (N, H, W, 3)

    extractor = create_extractor("random")

    def embed(array: np.ndarray) -> torch.Tensor:
        return extractor(torch.from_numpy(array.clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2))

    real, synthetic = embed(images(1)), images(2)
    noise = np.random.default_rng(3).normal(size=synthetic.shape)
    values = [cmmd(real, embed(synthetic + level * noise)) for level in (0, 15, 30, 60, 120)]
    assert all(a < b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_a_bootstrap_replicate_from_counts_equals_the_statistic_on_the_resampled_rows(estimator):
    x, y = torch.from_numpy(embeddings(15, 6, 3)), torch.from_numpy(embeddings(12, 6, 4, shift=0.5))
    g = torch.Generator().manual_seed(0)
    rows_x, rows_y = torch.randint(0, 15, (15,), generator=g), torch.randint(0, 12, (12,), generator=g)
    from_counts = cmmd_from_counts(*cmmd_kernels(x, y), index_counts(rows_x, 15), index_counts(rows_y, 12), estimator)
    # the unbiased form of a resample with repeats leaves out pairs of the same *position* only
    direct = cmmd(x[rows_x], y[rows_y], estimator=estimator)
    assert from_counts == pytest.approx(direct, abs=1e-9)


def test_the_shell_labels_its_features_and_estimator():
    shell = METRICS.get("cmmd")()
    assert shell.display_name("clip-l14-336") == "CMMD" and shell.default_extractor == "clip-l14-336"
    assert shell.display_name("random") == "CMMD on random features"
    assert shell.details()["estimator"] == "biased" and shell.details()["sigma"] == 10.0
    unbiased = METRICS.get("cmmd")(estimator="unbiased")
    assert set(unbiased.higher_is_better) == {"cmmd_unbiased"} and unbiased.display_name("clip-l14-336") == "CMMD (unbiased)"
    assert "all pairs, diagonal included" in shell.formula and "distinct images" in unbiased.formula
    x, y = torch.from_numpy(embeddings(30, 8, 0)), torch.from_numpy(embeddings(20, 8, 1))
    for chunk in x.split(7):
        shell.update(chunk, real=True)
    shell.update(y)
    assert shell.compute()["cmmd"] == pytest.approx(cmmd(x, y))


def test_evaluate_gives_cmmd_overall_and_per_group_with_intervals_on_a_tiny_extractor(tmp_path):
    real = write_set(tmp_path / "real", 48, seed=0)
    close = write_set(tmp_path / "close", 36, seed=1)
    far = write_set(tmp_path / "far", 36, seed=2, brightness=40)
    values = {}
    for name, synthetic in (("close", close), ("far", far)):
        cfg = EvaluateConfig(
            real=str(real), synthetic=str(synthetic), output=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
            metrics=["kid@random", "cmmd@random"], by=["fst_group"], bootstrap=30, kid_subsets=5, min_group_size=5,
        )
        result = evaluate(cfg)
        report = json.loads((tmp_path / name / "evaluation.json").read_text())
        assert report["results"][0]["metric"] == "cmmd"  # CMMD leads, though listed second
        rows = [r for r in result.results if r["metric"] == "cmmd"]
        assert {r["group"] for r in rows} == {"all", "I-II", "III-IV", "V-VI"}
        for row in rows:
            assert row["display"] == "CMMD on random features" and row["extractor"] == "random"
            assert row["test_only"] and "RANDOM WEIGHTS" in row["warning"]
            assert 0.0 <= row["ci_low"] <= row["value"] <= row["ci_high"]
        assert report["metrics"]["cmmd@random"]["estimator"] == "biased"
        values[name] = next(r["value"] for r in rows if r["group"] == "all")
    assert values["far"] > values["close"]  # brighter synthetic images are further from the real ones


def test_cmmd_and_fd_dinov2_lead_the_default_metrics_and_any_list():
    from fairsynth.metrics.config import DEFAULT_METRICS

    assert DEFAULT_METRICS[:2] == ["fd@dinov2", "cmmd@clip-l14-336"]
    specs = [("kid", "inception"), ("fd", "inception"), ("cmmd", "classifier"), ("fd", "dinov2"), ("prdc", "inception")]
    assert headline_first(specs) == [("fd", "dinov2"), ("cmmd", "classifier"), ("kid", "inception"),
                                     ("fd", "inception"), ("prdc", "inception")]


def test_missing_clip_336_weights_name_the_file(tmp_path):
    from fairsynth.metrics.extractors import WeightsNotFound

    real = write_set(tmp_path / "real", 12, seed=0)
    synthetic = write_set(tmp_path / "synthetic", 12, seed=1)
    cfg = EvaluateConfig(real=str(real), synthetic=str(synthetic), output=str(tmp_path / "out"),
                         cache_dir=str(tmp_path / "cache"), metrics=["cmmd"])
    with pytest.raises(WeightsNotFound, match=r"CLIP ViT-L/14@336.*open_clip_vit_l_14_336_openai\.safetensors.*"
                                              r"fairsynth weights fetch clip-l14-336"):
        evaluate(cfg)


def test_config_refuses_a_bad_bandwidth_or_estimator():
    from fairsynth.config import ConfigError

    with pytest.raises(ConfigError, match="cmmd_sigma must be > 0"):
        EvaluateConfig(cmmd_sigma=0)
    with pytest.raises(ConfigError, match="cmmd_estimator must be biased or unbiased"):
        EvaluateConfig(cmmd_estimator="mean")
