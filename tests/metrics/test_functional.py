"""Every metric core against a reference implementation, on the same features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from fairsynth.metrics.functional.bootstrap import bootstrap_intervals
from fairsynth.metrics.functional.clip_score import clip_score, cosine_similarity
from fairsynth.metrics.functional.diversity import mean_pairwise_cosine_distance, mean_pairwise_squared_distance
from fairsynth.metrics.functional.frechet import (
    _frechet_distance_gram,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
)
from fairsynth.metrics.functional.kid import kernel_inception_distance
from fairsynth.metrics.functional.memorisation import nearest_neighbours, normalise, self_nearest_distances
from fairsynth.metrics.functional.prdc import pairwise_distances, prdc, prdc_from_distances
from fairsynth.metrics.functional.vendi import vendi_score

pytestmark = [
    pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features"),
    pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning"),  # inside vendi-score
]


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Inception-like features: non-negative, correlated."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=torch.Generator().manual_seed(99)) / d**0.5
    return (torch.randn(n, d, generator=g) @ mixing + shift).relu()


class Passthrough(nn.Module):
    """A torchmetrics 'feature extractor' that hands our features through unchanged."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def scipy_fid(real: np.ndarray, synthetic: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), synthetic.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(synthetic, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n_real, n_synthetic, d", [(300, 250, 32), (40, 30, 64)], ids=["n>d", "n<d"])
def test_fid_equals_torchmetrics_and_scipy(n_real, n_synthetic, d):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, synthetic = features(n_real, d, 0), features(n_synthetic, d, 1, shift=0.3)
    ours = frechet_distance(real, synthetic)
    reference = FrechetInceptionDistance(feature=Passthrough(d)).double()
    reference.update(real.double(), real=True)
    reference.update(synthetic.double(), real=False)
    theirs = float(reference.compute())
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert ours == pytest.approx(scipy_fid(real.double().numpy(), synthetic.double().numpy()), rel=1e-4)


def test_both_exact_routes_agree_and_identical_sets_give_zero():
    real, synthetic = features(50, 40, 2), features(45, 40, 3, shift=0.2)
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(synthetic)
    assert _frechet_distance_gram(real, synthetic) == pytest.approx(frechet_distance_from_stats(mu1, s1, mu2, s2), rel=1e-9)
    assert 0.0 <= frechet_distance(real, real) < 1e-9  # clamped: never a tiny negative, at most rounding


def test_fid_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(features(1, 8, 0), features(5, 8, 1))


def test_kid_equals_torchmetrics_with_the_same_subsets():
    from torchmetrics.image.kid import KernelInceptionDistance

    real, synthetic = features(120, 16, 4), features(100, 16, 5, shift=0.2)
    reference = KernelInceptionDistance(feature=Passthrough(16), subsets=20, subset_size=50)
    reference.update(real, real=True)
    reference.update(synthetic, real=False)
    torch.manual_seed(7)
    mean, std = reference.compute()
    ours = kernel_inception_distance(real, synthetic, subsets=20, subset_size=50, generator=torch.Generator().manual_seed(7))
    assert ours[0] == pytest.approx(float(mean), rel=1e-4, abs=1e-7)
    assert ours[1] == pytest.approx(float(std), rel=1e-3, abs=1e-7)


def test_kid_on_whole_equal_sets_equals_torchmetrics_and_has_no_spread():
    from torchmetrics.image.kid import KernelInceptionDistance

    real, synthetic = features(30, 16, 6), features(30, 16, 7, shift=0.1)
    reference = KernelInceptionDistance(feature=Passthrough(16), subsets=5, subset_size=30)
    reference.update(real, real=True)
    reference.update(synthetic, real=False)
    mean, _ = reference.compute()
    ours, spread = kernel_inception_distance(real, synthetic, subsets=5, subset_size=30)
    assert ours == pytest.approx(float(mean), rel=1e-4, abs=1e-7) and spread == 0.0


def direct_vendi(x: np.ndarray, q: float) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(x @ x.T / len(x))
    p = eigenvalues[eigenvalues > 1e-15]
    entropy = -(p * np.log(p)).sum() if q == 1 else np.log((p**q).sum()) / (1 - q)
    return float(np.exp(entropy))


@pytest.mark.parametrize("n, d", [(40, 16), (12, 30)], ids=["n>d", "n<d"])
def test_vendi_equals_direct_eigencomputation_and_the_vendi_package(n, d):
    vendi = pytest.importorskip("vendi_score.vendi", reason="the vendi-score reference package is not installed")

    x = features(n, d, 8).numpy().astype(np.float64)
    ours = vendi_score(torch.from_numpy(x))
    assert ours == pytest.approx(direct_vendi(x, 1.0), rel=1e-8)
    assert ours == pytest.approx(float(vendi.score_X(x)), rel=1e-6)
    # q != 1: the package's score_X ignores q; ours follows the definition
    assert vendi_score(torch.from_numpy(x), q=2.0) == pytest.approx(direct_vendi(x, 2.0), rel=1e-8)
    assert float(vendi.score_X(x, q=2.0)) == pytest.approx(ours, rel=1e-6)


def test_vendi_bounds():
    same = torch.ones(10, 4)
    assert vendi_score(same) == pytest.approx(1.0)
    assert vendi_score(torch.eye(6)) == pytest.approx(6.0)


def test_prdc_equals_the_prdc_package_within_one_sample(capsys):
    compute_prdc = pytest.importorskip("prdc", reason="the prdc reference package is not installed").compute_prdc

    real, synthetic = features(150, 12, 9), features(120, 12, 10, shift=0.15)
    ours = prdc(real, synthetic, k=3, chunk=40)  # chunks smaller than the sets
    theirs = compute_prdc(real.double().numpy(), synthetic.double().numpy(), nearest_k=3)
    for name in ("precision", "density"):
        assert abs(ours[name] - theirs[name]) <= 1 / 120 + 1e-12, name
    for name in ("recall", "coverage"):
        assert abs(ours[name] - theirs[name]) <= 1 / 150 + 1e-12, name


def test_precision_recall_equal_torch_fidelity_within_one_sample():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    real, synthetic = features(90, 12, 11), features(80, 12, 12, shift=0.1)
    ours = prdc(real, synthetic, k=3)
    precision, recall = calculate_precision_recall_full(synthetic.double(), real.double(), neighborhood=3)
    assert abs(ours["precision"] - precision) <= 1 / 80 + 1e-12
    assert abs(ours["recall"] - recall) <= 1 / 90 + 1e-12


def test_prdc_from_distances_equals_the_chunked_version():
    real, synthetic = features(60, 8, 13), features(50, 8, 14)
    direct = prdc(real, synthetic, k=3, chunk=16)
    from_matrices = prdc_from_distances(
        pairwise_distances(real, real), pairwise_distances(synthetic, synthetic), pairwise_distances(real, synthetic), k=3
    )
    assert direct == pytest.approx(from_matrices)


def test_memorisation_neighbours_equal_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    train, synthetic = normalise(features(80, 10, 15)), normalise(features(30, 10, 16))
    distances, indices = nearest_neighbours(synthetic, train, chunk=7)
    reference = NearestNeighbors(n_neighbors=1).fit(train.numpy())
    ref_distances, ref_indices = reference.kneighbors(synthetic.numpy())
    assert torch.equal(indices, torch.from_numpy(ref_indices[:, 0]))
    assert np.allclose(distances.numpy(), ref_distances[:, 0], atol=1e-9)
    # each training image's nearest *other* training image
    own = self_nearest_distances(train, chunk=9)
    ref_own, _ = reference.kneighbors(train.numpy(), n_neighbors=2)
    assert np.allclose(own.numpy(), ref_own[:, 1], atol=1e-9)


def test_pairwise_diversities_equal_brute_force():
    x = features(25, 6, 17) + 0.01
    unit = x.double() / x.double().norm(dim=1, keepdim=True)  # the reference in float64, as the function computes
    cos = unit @ unit.T
    off = ~torch.eye(25, dtype=torch.bool)
    assert mean_pairwise_cosine_distance(x) == pytest.approx(float(1 - cos[off].mean()), rel=1e-9)
    squared = torch.cdist(x.double(), x.double()) ** 2
    assert mean_pairwise_squared_distance(x) == pytest.approx(float(squared[off].mean()), rel=1e-9)


def test_clip_score_formulas():
    image, text = features(20, 8, 18) - 0.3, features(20, 8, 19) - 0.3
    cos = torch.nn.functional.cosine_similarity(image.double(), text.double())
    assert torch.allclose(cosine_similarity(image, text), cos)
    # torchmetrics: the mean of 100 cos, clamped at 0 once
    assert clip_score(image, text, "torchmetrics") == pytest.approx(max(float(100 * cos.mean()), 0.0))
    # Hessel et al.: 2.5 max(cos, 0) per image
    assert clip_score(image, text, "hessel") == pytest.approx(float((2.5 * cos.clamp(min=0)).mean()))


def test_bootstrap_intervals_contain_the_estimate_and_respect_ranges():
    values = torch.rand(200, generator=torch.Generator().manual_seed(0))
    estimate = {"mean": float(values.mean()), "share": float((values < 0.02).double().mean())}

    def replicate(indices):
        sample = values[indices[0]]
        return {"mean": float(sample.mean()), "share": float((sample < 0.02).double().mean())}

    normal = bootstrap_intervals(estimate, replicate, [200], resamples=200, ranges={"share": (0.0, 1.0)})
    assert normal["mean"].low < estimate["mean"] < normal["mean"].high
    assert normal["mean"].se == pytest.approx(math.sqrt(1 / 12 / 200), rel=0.25)  # SE of a uniform mean
    assert normal["share"].low >= 0.0
    percentile = bootstrap_intervals(estimate, replicate, [200], resamples=200, method="percentile")
    assert percentile["mean"].low < estimate["mean"] < percentile["mean"].high
    assert percentile["mean"].method == "percentile bootstrap" and percentile["mean"].resamples == 200
