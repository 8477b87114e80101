"""Realism against real images of the same group: feature nearest neighbour and LPIPS.

Two measurements per synthetic image, each against the real images that share its group
(``group_by``, by default the skin type ``fst``: a FST VI image is compared with real FST VI
images):

* ``realism_nn_distance``: distance from the image to its nearest real image in a feature
  space (DINOv2 by default; features L2-normalised, so ``sqrt(2 - 2 cos)``). This is what the
  FairSkin plan calls a "per-image FID": it is *not* a Fréchet distance, which compares two
  distributions, but a nearest-neighbour distance, and is named so. ``realism_nn_percentile``
  places it among the real images' own nearest-neighbour distances within the group (each
  real image to its nearest *other* one): 50 is as typical as a real image, 100 farther than
  every real image is from its neighbour. The verdict compares this percentile rank with
  ``max_nn_percentile``, so the threshold means the same for any extractor.
* ``realism_lpips``: the mean LPIPS (Zhang et al. 2018) to the ``k`` perceptually nearest real
  images of the group, compared with ``max_lpips``.

A group with no real image cannot be judged: its values stay empty and the verdict is None,
and the run's report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter, percentile_rank


@dataclass
class RealismConfig:
    """References, extractors and thresholds of the realism check."""

    extractor: str | None = knob("dinov2", "Feature extractor of the nearest-neighbour distance; None: not measured.")
    lpips_extractor: str | None = knob("lpips", "LPIPS extractor (`lpips`, or `lpips` with {net: vgg}); None: not measured.")
    k: int = knob(5, "Real images each synthetic image's mean LPIPS is taken over (its k nearest in LPIPS).")
    group_by: list[str] = knob(["fst"], "Fields a real image must share with the synthetic one to be a reference (`label` for the class); [] : every real image.")
    max_nn_percentile: float = knob(
        95.0, "Reject an image whose nearest-real distance ranks above this percentile of the group's real-to-real "
        "nearest-neighbour distances (100: never)."
    )
    max_lpips: float = knob(0.7, "Reject an image whose mean LPIPS to its k nearest real images exceeds this.")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"realism: k must be >= 1, got {self.k}")
        if not 0.0 <= self.max_nn_percentile <= 100.0:
            raise ConfigError(f"realism: max_nn_percentile must be in [0, 100], got {self.max_nn_percentile}")
        if self.max_lpips <= 0:
            raise ConfigError(f"realism: max_lpips must be > 0, got {self.max_lpips}")
        if self.extractor is None and self.lpips_extractor is None:
            raise ConfigError("realism: extractor and lpips_extractor are both None; drop the check from filter.checks instead")


def field_value(record: Any, field: str) -> Any:
    """A record's value of a grouping field (``label``/``class`` is the class label)."""
    return record.label if field in ("label", "class") else record.attributes.get(field)


def group_members(records: list[Any], row: Mapping[str, Any], fields: list[str]) -> tuple[tuple, np.ndarray]:
    """(group key, indices of ``records`` sharing the row's value of every field); a field the
    row has no value for does not narrow the group."""
    values = {f: row.get("label" if f == "class" else f) for f in fields}
    key = tuple((f, None if values[f] is None else str(values[f])) for f in fields)
    keep = [
        i for i, record in enumerate(records)
        if all(value is None or str(field_value(record, f)) == value for f, value in key)
    ]
    return key, np.asarray(keep, dtype=np.int64)


def normalise(features: torch.Tensor) -> torch.Tensor:
    from fairsynth.metrics.functional.memorisation import normalise as unit_rows

    return unit_rows(features)


@FILTERS.register("realism", help="Nearest-real feature distance (percentile rank) and mean LPIPS to k real images of the same group")
class Realism(Filter):
    """Distance to real images of the same group."""

    name = "realism"
    Config = RealismConfig
    columns = ("realism_nn_distance", "realism_nn_percentile", "realism_lpips", "realism_references")

    def setup(self, context: Any) -> None:
        for name in (self.config.extractor, self.config.lpips_extractor):
            if name is not None:
                context.reference_features(name, "real")  # missing weights / images fail before generating

    def measured_with(self, context: Any) -> str:
        parts = [context.identity(n) for n in (self.config.extractor, self.config.lpips_extractor) if n is not None]
        return "+".join(parts) + f"|k={self.config.k}|group_by={','.join(self.config.group_by)}"

    def _group(self, context: Any, row: Mapping[str, Any]) -> tuple[tuple, np.ndarray]:
        records = context.image_set("real").records
        return group_members(records, row, self.config.group_by)

    def _self_distances(self, context: Any, key: tuple, members: np.ndarray) -> np.ndarray | None:
        from fairsynth.metrics.functional.memorisation import self_nearest_distances

        memo_key = ("realism-self", self.config.extractor, context.cfg.extractor, key)
        if memo_key not in context.memo:
            if len(members) < 2:
                context.memo[memo_key] = None
            else:
                reference = normalise(context.reference_features(self.config.extractor, "real")[members])
                context.memo[memo_key] = self_nearest_distances(reference).numpy()
        return context.memo[memo_key]

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        from fairsynth.metrics.functional.prdc import pairwise_distances

        hashes = [row.get("sha256") for row in rows]
        out: list[dict[str, Any]] = [dict.fromkeys(self.columns) for _ in rows]
        features = normalise(context.embed(self.config.extractor, images, hashes)) if self.config.extractor else None
        embeddings = context.embed(self.config.lpips_extractor, images, hashes) if self.config.lpips_extractor else None
        for i, row in enumerate(rows):
            key, members = self._group(context, row)
            out[i]["realism_references"] = int(len(members))
            if len(members) == 0:
                context.warn(f"realism: no real image of group {dict(key)}; its synthetic images are not judged for realism")
                continue
            if features is not None:
                reference = normalise(context.reference_features(self.config.extractor, "real")[members])
                distance = float(pairwise_distances(features[i : i + 1], reference).min())
                out[i]["realism_nn_distance"] = distance
                own = self._self_distances(context, key, members)
                if own is not None:
                    out[i]["realism_nn_percentile"] = percentile_rank(distance, own)
            if embeddings is not None:
                reference = context.reference_features(self.config.lpips_extractor, "real")[members]
                lpips = pairwise_distances(embeddings[i : i + 1], reference).square()[0]  # ‖φx − φy‖² = LPIPS
                nearest = torch.topk(lpips, min(self.config.k, lpips.numel()), largest=False).values
                out[i]["realism_lpips"] = float(nearest.mean())
        return out

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        verdicts = []
        if values.get("realism_nn_percentile") is not None:
            verdicts.append(values["realism_nn_percentile"] <= self.config.max_nn_percentile)
        if values.get("realism_lpips") is not None:
            verdicts.append(values["realism_lpips"] <= self.config.max_lpips)
        return all(verdicts) if verdicts else None
