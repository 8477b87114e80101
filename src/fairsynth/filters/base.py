"""What a quality check is.

A check measures each synthetic image once and decides from the measurement alone::

    check = FILTERS.get("brightness")(options)     # options: an instance of check.Config
    check.setup(context)                           # load references / extractors, fail early
    values = check.measure(images, rows, context)  # one dict of columns per image (stored)
    ok = check.passes(values, row)                 # True / False / None (does not apply)

``measure`` is the expensive part (a network, ITA of the skin region); ``passes`` only
compares the stored values with the thresholds of ``check.config``, so a set can be
re-thresholded without measuring again. A *set-level* check (near-duplicates) cannot measure
one image alone: its :meth:`Filter.measure_set` sees every candidate of a cell in order.

Columns are prefixed with the check's name; the verdict column is ``<name>_ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np
from PIL import Image

from fairsynth.filters import FilterError

if TYPE_CHECKING:
    from fairsynth.filters.context import FilterContext

__all__ = ["Filter", "FilterError", "NoOptions", "luminance", "percentile_rank"]


@dataclass
class NoOptions:
    """This check has no options."""


class Filter:
    """Base class of quality checks. Subclasses live in ``filters/<name>.py`` and register."""

    #: Registry name; also the prefix of the check's manifest columns.
    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions
    #: Value columns the check writes into the manifest.
    columns: ClassVar[tuple[str, ...]] = ()
    #: True when an image's values depend on the other candidates (measured by measure_set).
    set_level: ClassVar[bool] = False

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @property
    def verdict_column(self) -> str:
        return f"{self.name}_ok"

    @property
    def provenance_column(self) -> str:
        """Column naming what measured the values (an extractor and its weights), where that matters."""
        return f"{self.name}_measured_with"

    def setup(self, context: "FilterContext") -> None:
        """Load what measuring needs (reference features, extractors); raise :class:`FilterError` early."""

    def measured_with(self, context: "FilterContext") -> str:
        """Identity of what measures the values; stored values measured by something else are measured again."""
        return ""

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: "FilterContext") -> list[dict[str, Any]]:
        """Values of each image (``rows`` are the images' manifest rows: cell labels, requested size)."""
        raise NotImplementedError

    def measure_set(
        self, rows: list[dict[str, Any]], eligible: list[bool], context: "FilterContext"
    ) -> list[dict[str, Any]]:
        """Set-level checks: values of every row of one cell, in index order; ``eligible[i]``
        says whether row i passed every other check (only those can make another a duplicate)."""
        raise NotImplementedError

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        """The verdict from stored values and this check's thresholds; None: the check does not apply."""
        raise NotImplementedError


def luminance(image: Image.Image) -> np.ndarray:
    """``(H, W)`` uint8 luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, PIL's ``convert("L")``)."""
    return np.asarray(image.convert("L"), dtype=np.uint8)


def percentile_rank(value: float, reference: np.ndarray) -> float:
    """Share of ``reference`` values below ``value``, in percent (0: below all, 100: above all)."""
    reference = np.asarray(reference, dtype=np.float64)
    if reference.size == 0:
        raise ValueError("a percentile rank needs reference values")
    return float(100.0 * np.mean(reference < value))
