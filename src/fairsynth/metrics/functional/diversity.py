"""Within-set diversity as mean pairwise distances, in O(N d) rather than O(N² d).

- :func:`mean_pairwise_cosine_distance`: ``1 − mean_{i≠j} cos(xᵢ, xⱼ)``; with unit vectors
  uᵢ, ``Σ_{i≠j} uᵢ·uⱼ = ‖Σᵢ uᵢ‖² − N``. On CLIP image embeddings this is the intra-class
  diversity the FairSkin plan tracks per (class, skin-type group), wanting > 0.3.
- :func:`mean_pairwise_squared_distance`: ``mean_{i≠j} ‖xᵢ − xⱼ‖² = 2/(N−1) Σᵢ ‖xᵢ − x̄‖²``;
  on LPIPS embeddings (:mod:`.lpips`) this is the mean pairwise LPIPS of the set.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mean_pairwise_cosine_distance(features: Tensor) -> float:
    """Mean cosine distance over all ordered pairs of distinct rows of ``features`` ``(N, d)``."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"pairwise diversity needs at least 2 images, got {n}")
    unit = features.to(torch.float64)
    unit = unit / unit.norm(dim=1, keepdim=True).clamp(min=1e-12)
    total = unit.sum(dim=0)  # (d,)
    mean_similarity = (total.square().sum() - unit.square().sum()) / (n * (n - 1))
    return float(1.0 - mean_similarity)


def mean_pairwise_squared_distance(features: Tensor) -> float:
    """Mean squared Euclidean distance over all pairs of distinct rows of ``features`` ``(N, d)``."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"pairwise diversity needs at least 2 images, got {n}")
    x = features.to(torch.float64)
    return float(2.0 * (x - x.mean(dim=0)).square().sum() / (n - 1))
