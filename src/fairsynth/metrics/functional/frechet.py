"""Fréchet distance between Gaussians fitted to two feature sets (FID, FD-DINOv2).

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}          (Heusel et al. 2017, Eq. 6)

The matrix square root is never formed: ``tr (Σ₁Σ₂)^{1/2}`` is the sum of the square roots of
the eigenvalues of ``Σ₁Σ₂``, which are the eigenvalues of the symmetric positive semi-definite
``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (so ``eigvalsh`` applies and they are real). When either set has fewer
images than feature dimensions the same eigenvalues come from the small cross matrix: with
centred, scaled features ``A`` (n₁×d) and ``B`` (n₂×d), ``Σ₁ = AᵀA`` and ``Σ₂ = BᵀB``, the
non-zero eigenvalues of ``Σ₁Σ₂`` are the squared singular values of ``ABᵀ`` (n₁×n₂), so the
trace term is the nuclear norm of ``ABᵀ``. Both routes are exact; the cheaper one is used.
(SciPy's ``sqrtm(..., disp=)``, which older FID code relies on, is going away.)

Rounding can push d² a hair below zero for identical sets; it is clamped at 0.
All arithmetic is float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``features`` ``(N, d)``, float64."""
    x = features.to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows of shape (N, d), got {tuple(x.shape)}")
    mean = x.mean(dim=0)
    centred = x - mean  # (N, d)
    return mean, centred.T @ centred / (x.shape[0] - 1)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix via its eigendecomposition."""
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """``tr (Σ₁Σ₂)^{1/2}`` from the eigenvalues of ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}``."""
    root1 = _sqrt_psd(sigma1.to(torch.float64))
    middle = root1 @ sigma2.to(torch.float64) @ root1
    middle = (middle + middle.T) / 2  # exact symmetry for eigvalsh
    return torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()


def frechet_distance_from_stats(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), clamped at 0."""
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    sigma1, sigma2 = sigma1.to(torch.float64), sigma2.to(torch.float64)
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def _frechet_distance_gram(real: Tensor, synthetic: Tensor) -> float:
    """Same value through the n₁×n₂ cross matrix (cheap when n < d)."""
    x, y = real.to(torch.float64), synthetic.to(torch.float64)
    mu1, mu2 = x.mean(dim=0), y.mean(dim=0)
    a = (x - mu1) / (x.shape[0] - 1) ** 0.5  # (n1, d): Σ₁ = AᵀA
    b = (y - mu2) / (y.shape[0] - 1) ** 0.5  # (n2, d): Σ₂ = BᵀB
    cross = a @ b.T  # (n1, n2)
    trace_sqrt = torch.linalg.svdvals(cross).sum()
    value = (mu1 - mu2).square().sum() + a.square().sum() + b.square().sum() - 2 * trace_sqrt
    return max(float(value), 0.0)


def frechet_distance(real: Tensor, synthetic: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to ``real`` ``(N₁, d)`` and ``synthetic`` ``(N₂, d)``.

    Each set needs at least 2 rows. With fewer rows than dimensions the covariances are
    singular; the distance is still defined (and exact here) but mostly measures the
    estimator's bias, which is why evaluation reports groups below a minimum size as undefined.
    """
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"feature shapes differ: {tuple(real.shape)} vs {tuple(synthetic.shape)}")
    n1, n2, d = real.shape[0], synthetic.shape[0], real.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 images per set, got {n1} and {n2}")
    # Floating-point work of each exact route; the d×d route pays two d×d eigendecompositions.
    gram_cost = n1 * n2 * d + n1 * n2 * min(n1, n2) * 4
    stats_cost = (n1 + n2) * d * d + 30 * d**3
    if gram_cost < stats_cost:
        return _frechet_distance_gram(real, synthetic)
    mu1, sigma1 = gaussian_stats(real)
    mu2, sigma2 = gaussian_stats(synthetic)
    return frechet_distance_from_stats(mu1, sigma1, mu2, sigma2)
