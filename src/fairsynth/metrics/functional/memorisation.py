"""Memorisation: how close each synthetic image comes to an image the generator was trained on.

For every synthetic image: its nearest training image and the distance to it. A synthetic
image counts as *memorised* when it is closer to a training image than the training images
typically are to each other — closer than the ``percentile``-th percentile (5 by default) of
the training set's own nearest-neighbour distances (each training image to its nearest
*other* training image). Features are L2-normalised first, so the Euclidean distance is
``sqrt(2 − 2 cos)`` and the ranking is the cosine ranking.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairsynth.metrics.functional.prdc import CHUNK, pairwise_distances


def normalise(features: Tensor) -> Tensor:
    """Rows scaled to unit length, float64."""
    x = features.to(torch.float64)
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def nearest_neighbours(query: Tensor, reference: Tensor, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Distance ``(Nq,)`` to and index ``(Nq,)`` of the nearest ``reference`` row of each ``query`` row."""
    if reference.shape[0] < 1:
        raise ValueError("nearest neighbours need at least one reference image")
    distances, indices = [], []
    for start in range(0, query.shape[0], chunk):
        block = pairwise_distances(query[start : start + chunk], reference)  # (c, Nr)
        best = block.min(dim=1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(distances), torch.cat(indices)


def self_nearest_distances(reference: Tensor, chunk: int = CHUNK) -> Tensor:
    """Distance of each row to its nearest *other* row ``(N,)`` (itself excluded by index, so a
    duplicated training image shows up as distance 0)."""
    n = reference.shape[0]
    if n < 2:
        raise ValueError(f"training-set nearest-neighbour distances need at least 2 images, got {n}")
    distances = []
    for start in range(0, n, chunk):
        block = pairwise_distances(reference[start : start + chunk], reference)  # (c, N)
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = float("inf")
        distances.append(block.min(dim=1).values)
    return torch.cat(distances)


def memorisation_threshold(reference_self_distances: Tensor, percentile: float = 5.0) -> float:
    """The ``percentile``-th percentile of the training set's own nearest-neighbour distances."""
    return float(torch.quantile(reference_self_distances.to(torch.float64), percentile / 100.0))


def memorised_share(nn_distances: Tensor, threshold: float) -> float:
    """Share of synthetic images closer to a training image than ``threshold``."""
    return float((nn_distances < threshold).double().mean())
