"""Near-duplicates within the synthetic set: keep one of every group of look-alikes.

Within each cell, candidates are taken in index order; an image whose feature cosine to an
earlier *kept* image exceeds ``max_cosine`` is a near-duplicate of it and is dropped. Only
images that pass every other check are kept, so a blurred image never knocks out a good one.
Recorded: ``near_duplicates_cosine`` (the largest cosine to an earlier kept image) and
``near_duplicates_of`` (that image's id). Because what was kept depends on the threshold,
this check is measured again whenever the set is judged (from cached features: no network).
Images of different cells are not compared (their prompts differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter


@dataclass
class NearDuplicatesConfig:
    """Extractor and cosine threshold of near-duplicate removal."""

    extractor: str = knob("dinov2", "Feature extractor whose cosine similarity defines near-duplicates.")
    max_cosine: float = knob(0.95, "Drop an image whose cosine similarity to an earlier kept image of its cell exceeds this.")

    def __post_init__(self) -> None:
        if not -1.0 <= self.max_cosine <= 1.0:
            raise ConfigError(f"near_duplicates: max_cosine must be in [-1, 1], got {self.max_cosine}")


@FILTERS.register("near_duplicates", help="Feature cosine to an earlier kept image of the same cell above max_cosine: keep one")
class NearDuplicates(Filter):
    """Greedy near-duplicate removal in index order, per cell."""

    name = "near_duplicates"
    Config = NearDuplicatesConfig
    columns = ("near_duplicates_cosine", "near_duplicates_of")
    set_level = True

    def setup(self, context: Any) -> None:
        context.extractor(self.config.extractor).load()  # missing weights fail before generating

    def measured_with(self, context: Any) -> str:
        return context.identity(self.config.extractor)

    def measure_set(self, rows: list[dict[str, Any]], eligible: list[bool], context: Any) -> list[dict[str, Any]]:
        from fairsynth.filters.realism import normalise

        features = normalise(context.features_of(self.config.extractor, rows))  # (N, d)
        kept: list[int] = []
        out = []
        for i in range(len(rows)):
            values: dict[str, Any] = {"near_duplicates_cosine": None, "near_duplicates_of": None}
            if kept:
                cosines = features[kept] @ features[i]  # (len(kept),)
                best = int(cosines.argmax())
                values = {"near_duplicates_cosine": float(cosines[best]), "near_duplicates_of": rows[kept[best]]["id"]}
            if eligible[i] and self.passes(values, rows[i]) is not False:
                kept.append(i)
            out.append(values)
        return out

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        cosine = values.get("near_duplicates_cosine")
        return True if cosine is None else cosine <= self.config.max_cosine
