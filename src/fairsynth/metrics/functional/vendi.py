"""Vendi score: the effective number of distinct images in a set (Friedman & Dieng 2023).

    VS_q = exp(H_q(λ)),   λ = eigenvalues of K / n,   K = cosine similarities (Kᵢᵢ = 1)

``H_q`` is the Rényi entropy of order q of the eigenvalues (Shannon at q = 1). With
L2-normalised features X the kernel is ``K = XXᵀ``, whose non-zero eigenvalues equal those of
``XᵀX`` (d×d), so the smaller of the two is decomposed. The score lies in [1, n]: 1 when all
images are the same, n when all are orthogonal.

The vendi-score package's ``score_X`` ignores its ``q`` argument (it always uses q = 1);
this function honours it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def renyi_entropy(probabilities: Tensor, q: float = 1.0) -> float:
    """Rényi entropy of order q (Shannon at 1, min-entropy at ``inf``); zeros are dropped."""
    p = probabilities[probabilities > 0].to(torch.float64)
    if q == 1.0:
        return float(-(p * p.log()).sum())
    if math.isinf(q):
        return float(-p.max().log())
    return float(torch.log((p**q).sum()) / (1.0 - q))


def vendi_score(features: Tensor, q: float = 1.0, normalize: bool = True) -> float:
    """Vendi score of ``features`` ``(N, d)`` under the cosine-similarity kernel."""
    x = features.to(torch.float64)
    n = x.shape[0]
    if n < 1:
        raise ValueError("the Vendi score needs at least one image")
    if normalize:
        x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    small = x @ x.T if n <= x.shape[1] else x.T @ x  # (n, n) or (d, d): same non-zero spectrum
    eigenvalues = torch.linalg.eigvalsh(small / n).clamp(min=0)
    return math.exp(renyi_entropy(eigenvalues, q))
