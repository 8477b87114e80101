"""CLIP score: how well an image matches the prompt it was generated from.

Both embeddings are L2-normalised and compared by cosine similarity. Two formulas are in use
and give different numbers, so the one used is always recorded:

- ``torchmetrics``: ``max(100 · mean cos, 0)`` (torchmetrics' ``CLIPScore``: the mean of
  100·cos over images, clamped at 0 once);
- ``hessel``: ``mean 2.5 · max(cos, 0)`` (Hessel et al. 2021, CLIP-S, Eq. 1: w = 2.5, clamped
  per image).

torchmetrics 1.9's ``CLIPScore`` breaks with transformers >= 5 (its issue #3407), so this small
function is ours; the embeddings come from :mod:`fairsynth.metrics.extractors.clip`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Formula = Literal["torchmetrics", "hessel"]

FORMULAS: dict[str, str] = {
    "torchmetrics": "max(100 * mean(cos(image, prompt)), 0)",
    "hessel": "mean(2.5 * max(cos(image, prompt), 0))  [Hessel et al. 2021, w = 2.5]",
}


def cosine_similarity(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Row-wise cosine similarity ``(N,)`` of matching image and text embeddings."""
    if image_features.shape != text_features.shape:
        raise ValueError(f"image and text embeddings differ in shape: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
    image = image_features.to(torch.float64)
    text = text_features.to(torch.float64)
    image = image / image.norm(dim=1, keepdim=True).clamp(min=1e-12)
    text = text / text.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (image * text).sum(dim=1)


def clip_score_from_cosine(cosine: Tensor, formula: Formula = "torchmetrics") -> float:
    """Aggregate per-image cosine similarities ``(N,)`` with ``formula``."""
    if cosine.numel() == 0:
        raise ValueError("the CLIP score needs at least one image")
    cos = cosine.to(torch.float64)
    if formula == "torchmetrics":
        return max(float(100.0 * cos.mean()), 0.0)
    if formula == "hessel":
        return float((2.5 * cos.clamp(min=0)).mean())
    raise ValueError(f"unknown CLIP score formula {formula!r}; use one of {', '.join(FORMULAS)}")


def clip_score(image_features: Tensor, text_features: Tensor, formula: Formula = "torchmetrics") -> float:
    """CLIP score of images against their prompts (matching rows)."""
    return clip_score_from_cosine(cosine_similarity(image_features, text_features), formula)
