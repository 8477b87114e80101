"""CMMD: the squared maximum mean discrepancy under a Gaussian RBF kernel on L2-normalised embeddings.

    k(x, y) = exp(−‖x − y‖² / (2σ²)),   σ = 10                     (Jayasumana et al., CVPR 2024, Sec. 4)
    CMMD    = 1000 · ( mean_{i,j} k(xᵢ, xⱼ) + mean_{i,j} k(yᵢ, yⱼ) − 2 mean_{i,j} k(xᵢ, yⱼ) )

Every embedding is divided by its L2 norm first; with CLIP ViT-L/14@336 image embeddings this is
the paper's CMMD, with any other extractor it is the same distance on other features (and
evaluation says which). The reference implementation (google-research/cmmd) averages each block
over *all* pairs, the diagonal included: the minimum-variance, biased estimator of MMD²
(a V-statistic; Gretton et al. 2012, JMLR, Eq. 5), which is ≥ 0 and carries a positive bias of
order 1/n. The unbiased estimator (Gretton et al. Eq. 3: the diagonals of the within-set blocks
left out) is offered as ``estimator="unbiased"``; it is centred on the population value and can
fall below 0 for close sets.

Unlike FID, MMD makes no Gaussian assumption about the features and its estimator is unbiased
(or its bias known) at any sample size, which is why CMMD is usable on small groups.
All arithmetic is float64.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from fairsynth.metrics.functional.kid import mmd2_unbiased, mmd2_unbiased_counts

#: The paper's bandwidth and scale.
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0

Estimator = Literal["biased", "unbiased"]
ESTIMATORS: tuple[str, ...] = ("biased", "unbiased")


def l2_normalise(features: Tensor) -> Tensor:
    """Rows of ``features`` ``(N, d)`` divided by their L2 norm, float64; a zero row is an error."""
    x = features.to(torch.float64)
    norms = x.norm(dim=1, keepdim=True)  # (N, 1)
    if (norms == 0).any():
        rows = torch.nonzero(norms.flatten() == 0).flatten().tolist()
        raise ValueError(f"CMMD normalises every embedding to unit length; row(s) {rows[:5]} are all zeros")
    return x / norms


def rbf_kernel(x: Tensor, y: Tensor, sigma: float = CMMD_SIGMA) -> Tensor:
    """``exp(−‖xᵢ − yⱼ‖² / (2σ²))`` ``(N, M)`` in float64."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # (N, M)
    return torch.exp(-squared.clamp(min=0.0) / (2.0 * sigma**2))


def mmd2_biased(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> float:
    """Minimum-variance (biased) MMD²: the mean of each kernel block over all pairs, diagonals included."""
    return float(k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean())


def mmd2_biased_counts(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor, counts_x: Tensor, counts_y: Tensor) -> float:
    """Biased MMD² of a resample given as counts per original row (a bootstrap replicate):
    every pair of *positions* counts, so each block's mean is ``wᵀKw / (Σw)²``."""
    wx, wy = counts_x.to(torch.float64), counts_y.to(torch.float64)
    m, n = float(wx.sum()), float(wy.sum())
    return float((wx @ k_xx @ wx) / m**2 + (wy @ k_yy @ wy) / n**2 - 2.0 * (wx @ k_xy @ wy) / (m * n))


def cmmd_kernels(real: Tensor, synthetic: Tensor, sigma: float = CMMD_SIGMA) -> tuple[Tensor, Tensor, Tensor]:
    """The three kernel blocks ``(K_rr, K_ss, K_rs)`` of the normalised embeddings."""
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"feature shapes differ: {tuple(real.shape)} vs {tuple(synthetic.shape)}")
    x, y = l2_normalise(real), l2_normalise(synthetic)
    return rbf_kernel(x, x, sigma), rbf_kernel(y, y, sigma), rbf_kernel(x, y, sigma)


def cmmd_from_kernels(k_rr: Tensor, k_ss: Tensor, k_rs: Tensor, estimator: Estimator = "biased", scale: float = CMMD_SCALE) -> float:
    """``scale`` · MMD² from the kernel blocks with the named estimator."""
    if estimator == "biased":
        return scale * mmd2_biased(k_rr, k_ss, k_rs)
    if estimator == "unbiased":
        return scale * mmd2_unbiased(k_rr, k_ss, k_rs)
    raise ValueError(f"unknown CMMD estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")


def cmmd_from_counts(
    k_rr: Tensor, k_ss: Tensor, k_rs: Tensor, counts_real: Tensor, counts_synthetic: Tensor,
    estimator: Estimator = "biased", scale: float = CMMD_SCALE,
) -> float:
    """:func:`cmmd_from_kernels` of a resample given as counts per row (no features touched)."""
    if estimator == "biased":
        return scale * mmd2_biased_counts(k_rr, k_ss, k_rs, counts_real, counts_synthetic)
    if estimator == "unbiased":
        return scale * mmd2_unbiased_counts(k_rr, k_ss, k_rs, counts_real, counts_synthetic)
    raise ValueError(f"unknown CMMD estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")


def cmmd(
    real: Tensor, synthetic: Tensor, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
    estimator: Estimator = "biased",
) -> float:
    """CMMD between ``real`` ``(N₁, d)`` and ``synthetic`` ``(N₂, d)`` embeddings (normalised here).

    The biased estimator needs one image per set, the unbiased one two.
    """
    n1, n2 = real.shape[0], synthetic.shape[0]
    needed = 2 if estimator == "unbiased" else 1
    if min(n1, n2) < needed:
        raise ValueError(f"the {estimator} CMMD needs at least {needed} image(s) per set, got {n1} and {n2}")
    return cmmd_from_kernels(*cmmd_kernels(real, synthetic, sigma), estimator=estimator, scale=scale)
