"""Precision, recall, density and coverage from k-nearest-neighbour balls.

Each real image gets a ball whose radius is the distance to its k-th nearest other real
image; each synthetic image one from the synthetic set (Naeem et al. 2020, Eqs. 1-4;
precision and recall after Kynkäänniemi et al. 2019):

- precision: share of synthetic images inside at least one real ball (fidelity);
- recall: share of real images inside at least one synthetic ball (diversity);
- density: mean number of real balls a synthetic image falls into, divided by k;
- coverage: share of real images whose ball holds at least one synthetic image.

"Inside" is strict (``<``), as in the prdc package (torch-fidelity uses ``<=``; the two differ
only where distances tie exactly). Distances are Euclidean, float64, computed in chunks so
that memory stays at ``chunk × N`` whatever the set sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Rows per distance chunk.
CHUNK = 1024


def pairwise_distances(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean distances ``(N, M)`` in float64."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    squared = x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * x @ y.T  # (N, M)
    return squared.clamp(min=0).sqrt()


def knn_radii(features: Tensor, k: int, chunk: int = CHUNK) -> Tensor:
    """Distance from each row to its k-th nearest *other* row ``(N,)``.

    The row itself is the nearest (distance 0), so this is the (k+1)-th smallest distance.
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} images, got {n}")
    radii = []
    for start in range(0, n, chunk):
        block = pairwise_distances(features[start : start + chunk], features)  # (c, N)
        radii.append(block.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def prdc(real: Tensor, synthetic: Tensor, k: int = 3, chunk: int = CHUNK) -> dict[str, float]:
    """Precision, recall, density and coverage of ``synthetic`` against ``real`` (k nearest)."""
    real_radii = knn_radii(real, k, chunk)  # (Nr,)
    synthetic_radii = knn_radii(synthetic, k, chunk)  # (Ns,)
    in_real_ball = torch.zeros(synthetic.shape[0], dtype=torch.bool)
    real_balls_hit = torch.zeros(synthetic.shape[0], dtype=torch.float64)
    recalled = torch.zeros(real.shape[0], dtype=torch.bool)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, real.shape[0], chunk):
        block = pairwise_distances(real[start : start + chunk], synthetic)  # (c, Ns)
        radii = real_radii[start : start + chunk, None]  # (c, 1)
        inside = block < radii
        in_real_ball |= inside.any(dim=0)
        real_balls_hit += inside.sum(dim=0)
        recalled[start : start + chunk] = (block < synthetic_radii[None, :]).any(dim=1)
        covered[start : start + chunk] = block.min(dim=1).values < radii[:, 0]
    return {
        "precision": float(in_real_ball.double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(real_balls_hit.mean() / k),
        "coverage": float(covered.double().mean()),
    }


def prdc_from_distances(real_real: Tensor, synthetic_synthetic: Tensor, real_synthetic: Tensor, k: int = 3) -> dict[str, float]:
    """The same four values from precomputed distance matrices (bootstrap replicates gather
    rows and columns of these instead of recomputing distances)."""
    real_radii = real_real.kthvalue(k + 1, dim=1).values  # (Nr,)
    synthetic_radii = synthetic_synthetic.kthvalue(k + 1, dim=1).values  # (Ns,)
    inside = real_synthetic < real_radii[:, None]  # (Nr, Ns)
    return {
        "precision": float(inside.any(dim=0).double().mean()),
        "recall": float((real_synthetic < synthetic_radii[None, :]).any(dim=1).double().mean()),
        "density": float(inside.sum(dim=0).double().mean() / k),
        "coverage": float((real_synthetic.min(dim=1).values < real_radii).double().mean()),
    }
