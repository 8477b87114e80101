"""Brightness: mean luminance in a band, which rejects black, blown-out and washed-out images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter, luminance


def mean_brightness(image: Image.Image) -> float:
    """Mean ITU-R 601 luma of the 8-bit image, scaled to [0, 1]."""
    return float(luminance(image).mean() / 255.0)


@dataclass
class BrightnessConfig:
    """Accepted band of mean luminance."""

    min: float = knob(0.1, "Lowest accepted mean luminance (0 = black, 1 = white).")
    max: float = knob(0.9, "Highest accepted mean luminance.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.min < self.max <= 1.0:
            raise ConfigError(f"brightness: need 0 <= min < max <= 1, got min {self.min}, max {self.max}")


@FILTERS.register("brightness", help="Mean luminance between min and max (default 0.1 to 0.9)")
class Brightness(Filter):
    """Mean luminance of the image in [0, 1]."""

    name = "brightness"
    Config = BrightnessConfig
    columns = ("brightness_mean",)

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return [{"brightness_mean": mean_brightness(image)} for image in images]

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        return self.config.min <= values["brightness_mean"] <= self.config.max
