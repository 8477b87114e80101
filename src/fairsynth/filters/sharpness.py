"""Sharpness: variance of the Laplacian of the luminance (Pech-Pacheco et al. 2000).

A blurred image has few edges, so the response of the 3x3 Laplacian
``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` varies little over it. The value grows with the
image's size and texture: a threshold that suits 512 px dermoscopy does not suit 32 px test
images, which is why the value is stored and ``fairsynth filter`` can re-threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cv2
from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter, luminance


def laplacian_variance(image: Image.Image) -> float:
    """Variance of the 3x3 Laplacian of the 8-bit luma (OpenCV, reflected borders), in grey levels²."""
    return float(cv2.Laplacian(luminance(image), cv2.CV_64F, ksize=1).var())


@dataclass
class SharpnessConfig:
    """Smallest accepted variance of the Laplacian."""

    min_variance: float = knob(
        30.0, "Smallest accepted variance of the Laplacian (grey levels²); blurred images score low. "
        "Depends on size and content: look at the stored values before tightening it."
    )

    def __post_init__(self) -> None:
        if self.min_variance < 0:
            raise ConfigError(f"sharpness: min_variance must be >= 0, got {self.min_variance}")


@FILTERS.register("sharpness", help="Variance of the Laplacian >= min_variance (blur detection)")
class Sharpness(Filter):
    """Variance of the Laplacian of the luminance."""

    name = "sharpness"
    Config = SharpnessConfig
    columns = ("sharpness_laplacian_var",)

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return [{"sharpness_laplacian_var": laplacian_variance(image)} for image in images]

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        return values["sharpness_laplacian_var"] >= self.config.min_variance
