"""LPIPS (Zhang et al. 2018) as a distance between cacheable per-image embeddings.

LPIPS v0.1 compares two images through a backbone's activations at L layers:

    d(x, y) = Σ_l 1/(H_l W_l) Σ_{h,w} Σ_c w_{l,c} (f̂ˣ_{l,c,h,w} − f̂ʸ_{l,c,h,w})²        (Eq. 1)

where f̂ is the activation normalised to unit length over channels at every position and
w_l ≥ 0 are the linear heads the lpips package ships. Because the heads are non-negative the
sum is a squared Euclidean distance between embeddings

    φ(x) = concat_l  sqrt(w_l / (H_l W_l)) ⊙ f̂ˣ_l          so that  d(x, y) = ‖φ(x) − φ(y)‖²,

which lets a feature cache hold φ once per image and makes the mean pairwise LPIPS of a set
an O(N) computation (:func:`fairsynth.metrics.functional.diversity.mean_pairwise_squared_distance`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: LPIPS v0.1's input scaling layer (images in [-1, 1]), from the lpips package.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: Added to the channel norm (the lpips package's ``normalize_tensor``).
EPS = 1e-10


def scale_input(images: Tensor) -> Tensor:
    """uint8 ``(B, 3, H, W)`` → LPIPS backbone input: [-1, 1], then shifted and scaled."""
    x = images.to(torch.float32) / 127.5 - 1.0
    shift = torch.tensor(SHIFT, dtype=x.dtype, device=x.device)[None, :, None, None]
    scale = torch.tensor(SCALE, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - shift) / scale


def normalise_channels(activation: Tensor) -> Tensor:
    """Unit length over channels at every position ``(B, C, H, W)``."""
    return activation / (activation.square().sum(dim=1, keepdim=True).sqrt() + EPS)


def lpips_embedding(activations: Sequence[Tensor], heads: Sequence[Tensor]) -> Tensor:
    """φ ``(B, D)`` from backbone activations ``(B, C_l, H_l, W_l)`` and heads ``(1, C_l, 1, 1)``."""
    if len(activations) != len(heads):
        raise ValueError(f"{len(activations)} activations but {len(heads)} LPIPS heads")
    parts = []
    for activation, head in zip(activations, heads):
        weights = head.reshape(1, -1, 1, 1).to(activation.dtype)
        if (weights < 0).any():
            raise ValueError("LPIPS heads must be non-negative to form an embedding")
        _, _, height, width = activation.shape
        scaled = normalise_channels(activation) * (weights / (height * width)).sqrt()
        parts.append(scaled.flatten(1))
    return torch.cat(parts, dim=1)


def lpips_from_embeddings(x: Tensor, y: Tensor) -> Tensor:
    """LPIPS ``(B,)`` between matching rows of two embedding batches."""
    return (x.to(torch.float64) - y.to(torch.float64)).square().sum(dim=1)
