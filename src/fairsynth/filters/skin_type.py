"""Skin-type agreement: the ITA of the skin region lies in the requested Fitzpatrick band.

The skin pixels are found by :func:`fairsynth.data.skin.skin_mask` (the majority colour of the
image's frame), their Individual Typology Angle by :func:`fairsynth.data.skin.ita` and the
type by the Kinyanjui et al. 2020 cut-offs (:func:`fairsynth.data.skin.fst_from_ita`). ITA is
a proxy that is often off by one type (Groh et al. 2021), hence the default tolerance of ±1.
Images of cells without a skin type are not judged (verdict None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.data.skin import fst_from_ita, ita, skin_mask
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter


@dataclass
class SkinTypeConfig:
    """How far the ITA estimate may be from the requested skin type."""

    tolerance: int = knob(1, "Largest accepted difference, in types, between the ITA estimate and the requested fst.")
    field: str = knob("fst", "Manifest field holding the requested Fitzpatrick type (1-6).")

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 5:
            raise ConfigError(f"skin_type: tolerance must be in 0..5, got {self.tolerance}")


@FILTERS.register("skin_type", help="ITA of the skin region within ±tolerance Fitzpatrick types of the requested fst")
class SkinType(Filter):
    """ITA-based Fitzpatrick estimate against the requested type."""

    name = "skin_type"
    Config = SkinTypeConfig
    columns = ("skin_type_ita", "skin_type_fst_estimate")

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        out = []
        for image in images:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            angle = ita(pixels, skin_mask(pixels))
            out.append({"skin_type_ita": angle, "skin_type_fst_estimate": fst_from_ita(angle)})
        return out

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        requested = row.get(self.config.field)
        if requested is None or values.get("skin_type_fst_estimate") is None:
            return None
        return abs(int(values["skin_type_fst_estimate"]) - int(requested)) <= self.config.tolerance
