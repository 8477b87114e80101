"""Resolution: the image is at least the size that was asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter


@dataclass
class ResolutionConfig:
    """Smallest acceptable width and height."""

    min_width: int = knob(0, "Smallest acceptable width in pixels; 0: the width asked for (the row's `width`).")
    min_height: int = knob(0, "Smallest acceptable height in pixels; 0: the height asked for (the row's `height`).")

    def __post_init__(self) -> None:
        if self.min_width < 0 or self.min_height < 0:
            raise ConfigError(f"resolution: min_width and min_height must be >= 0, got {self.min_width}, {self.min_height}")


@FILTERS.register("resolution", help="Image at least the size asked for (or min_width x min_height)")
class Resolution(Filter):
    """Width and height of each image against the requested (or a minimum) size."""

    name = "resolution"
    Config = ResolutionConfig
    columns = ("resolution_width", "resolution_height")

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return [{"resolution_width": image.width, "resolution_height": image.height} for image in images]

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        min_width = self.config.min_width or int(row.get("width") or 0)
        min_height = self.config.min_height or int(row.get("height") or 0)
        return values["resolution_width"] >= min_width and values["resolution_height"] >= min_height
