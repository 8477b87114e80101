"""Kernel Inception Distance: the unbiased squared MMD under a cubic polynomial kernel.

    k(x, y) = (γ xᵀy + c)^p,   γ = 1/d, c = 1, p = 3              (Bińkowski et al. 2018, Sec. 2.3)
    MMD²ᵤ = Σ_{i≠j} k(xᵢ,xⱼ)/(m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(n(n−1)) − 2 Σ k(xᵢ,yⱼ)/(mn)

KID is the mean of MMD²ᵤ over random subsets of ``subset_size`` images drawn from each set
without replacement (torchmetrics' and torch-fidelity's convention; the spread over subsets is
returned too). Subsets are drawn like torchmetrics draws them — ``randperm`` of the real set,
then of the synthetic set, per subset — so with the same seed the values agree.

The inner products are float32 matrix products (the kernel's sums are what need float64).
"""

from __future__ import annotations

import torch
from torch import Tensor


def polynomial_kernel(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> Tensor:
    """``(γ x yᵀ + c)^p`` ``(N, M)`` in float64; γ defaults to 1/d."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    dot = (x.to(torch.float32) @ y.to(torch.float32).T).to(torch.float64)  # (N, M)
    return (dot * gamma + coef) ** degree


def mmd2_unbiased(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> float:
    """Unbiased MMD² from the three kernel blocks (diagonals of k_xx and k_yy left out)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD² needs at least 2 images per set, got {m} and {n}")
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def mmd2_unbiased_counts(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor, counts_x: Tensor, counts_y: Tensor) -> float:
    """MMD²ᵤ of a resample given as counts per original row (a bootstrap replicate).

    A resample with repeats is a sample in its own right: pairs of distinct *positions* are
    summed, ``Σ_{p≠q} k = wᵀKw − Σᵢ wᵢ kᵢᵢ``, at O(N²) per replicate without touching features.
    """
    wx, wy = counts_x.to(torch.float64), counts_y.to(torch.float64)
    m, n = float(wx.sum()), float(wy.sum())
    within_x = (wx @ k_xx @ wx - (wx * k_xx.diagonal()).sum()) / (m * (m - 1))
    within_y = (wy @ k_yy @ wy - (wy * k_yy.diagonal()).sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * (wx @ k_xy @ wy) / (m * n))


def kernel_inception_distance(
    real: Tensor,
    synthetic: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID mean and (population) standard deviation over ``subsets`` random subsets.

    ``subset_size`` must not exceed either set; evaluation sets it from the data
    (``min(subset_size, n_real, n_synthetic)``).
    """
    n_real, n_synthetic = real.shape[0], synthetic.shape[0]
    if subset_size < 2:
        raise ValueError(f"KID subset_size must be >= 2, got {subset_size}")
    if subset_size > n_real or subset_size > n_synthetic:
        raise ValueError(
            f"KID subset_size {subset_size} is larger than a set ({n_real} real, {n_synthetic} synthetic)"
        )
    if subset_size == n_real == n_synthetic:
        # Every subset is a permutation of both full sets and MMD²ᵤ is permutation-invariant:
        # all subsets give the same value (torchmetrics would compute it `subsets` times).
        value = mmd2_unbiased(
            polynomial_kernel(real, real, degree, gamma, coef),
            polynomial_kernel(synthetic, synthetic, degree, gamma, coef),
            polynomial_kernel(real, synthetic, degree, gamma, coef),
        )
        return value, 0.0
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(n_real, generator=generator)[:subset_size]]  # (m, d)
        y = synthetic[torch.randperm(n_synthetic, generator=generator)[:subset_size]]  # (m, d)
        values.append(
            mmd2_unbiased(
                polynomial_kernel(x, x, degree, gamma, coef),
                polynomial_kernel(y, y, degree, gamma, coef),
                polynomial_kernel(x, y, degree, gamma, coef),
            )
        )
    scores = torch.tensor(values, dtype=torch.float64)
    return float(scores.mean()), float(scores.std(unbiased=False))
