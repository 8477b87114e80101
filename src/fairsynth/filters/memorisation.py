"""Memorisation: a synthetic image too close to an image the generator was trained on.

For each synthetic image, its nearest training image in a feature space (DINOv2 by default,
features L2-normalised) and the distance to it, ``memorisation_distance``. The image counts
as a copy when it is closer to that training image than training images typically are to each
other: ``memorisation_percentile`` ranks the distance among the training set's own
nearest-neighbour distances (each training image to its nearest *other* one), and a rank below
``percentile`` (5 by default, as in :mod:`fairsynth.metrics.memorisation`) rejects it. With an
LPIPS extractor, an image whose LPIPS to its perceptually nearest training image is below
``min_lpips`` (0.1) is rejected too. Rejected images are reported with the training image they
copy (``memorisation_nearest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter, FilterError, percentile_rank


@dataclass
class MemorisationConfig:
    """Extractors and thresholds of the memorisation check."""

    extractor: str | None = knob("dinov2", "Feature extractor of the nearest-training-image distance; None: not measured.")
    percentile: float = knob(
        5.0, "Reject an image closer to a training image than this percentile of the training set's own "
        "nearest-neighbour distances."
    )
    lpips_extractor: str | None = knob("lpips", "LPIPS extractor; None: no LPIPS test.")
    min_lpips: float = knob(0.1, "Reject an image whose LPIPS to its nearest training image is below this.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentile <= 100.0:
            raise ConfigError(f"memorisation: percentile must be in [0, 100], got {self.percentile}")
        if self.min_lpips < 0:
            raise ConfigError(f"memorisation: min_lpips must be >= 0, got {self.min_lpips}")
        if self.extractor is None and self.lpips_extractor is None:
            raise ConfigError("memorisation: extractor and lpips_extractor are both None; drop the check instead")


@FILTERS.register("memorisation", help="Too close to a training image (feature NN below the 5th percentile, or LPIPS < 0.1)")
class Memorisation(Filter):
    """Nearest training image of every synthetic image."""

    name = "memorisation"
    Config = MemorisationConfig
    columns = ("memorisation_distance", "memorisation_percentile", "memorisation_nearest", "memorisation_lpips")

    def setup(self, context: Any) -> None:
        train = context.image_set("train")
        if len(train.records) < 2 and self.config.extractor is not None:
            raise FilterError(f"memorisation needs at least 2 training images, {context.cfg.train} has {len(train.records)}")
        for name in (self.config.extractor, self.config.lpips_extractor):
            if name is not None:
                context.reference_features(name, "train")

    def measured_with(self, context: Any) -> str:
        return "+".join(context.identity(n) for n in (self.config.extractor, self.config.lpips_extractor) if n is not None)

    def _self_distances(self, context: Any) -> Any:
        from fairsynth.filters.realism import normalise
        from fairsynth.metrics.functional.memorisation import self_nearest_distances

        key = ("memorisation-self", self.config.extractor, context.cfg.extractor)
        if key not in context.memo:
            context.memo[key] = self_nearest_distances(normalise(context.reference_features(self.config.extractor, "train"))).numpy()
        return context.memo[key]

    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        from fairsynth.filters.realism import normalise
        from fairsynth.metrics.functional.memorisation import nearest_neighbours
        from fairsynth.metrics.functional.prdc import pairwise_distances

        hashes = [row.get("sha256") for row in rows]
        train = context.image_set("train")
        out: list[dict[str, Any]] = [dict.fromkeys(self.columns) for _ in rows]
        if self.config.extractor is not None:
            features = normalise(context.embed(self.config.extractor, images, hashes))
            reference = normalise(context.reference_features(self.config.extractor, "train"))
            distances, indices = nearest_neighbours(features, reference)
            own = self._self_distances(context)
            for i, (distance, index) in enumerate(zip(distances.tolist(), indices.tolist())):
                out[i]["memorisation_distance"] = distance
                out[i]["memorisation_percentile"] = percentile_rank(distance, own)
                out[i]["memorisation_nearest"] = train.records[index].image
        if self.config.lpips_extractor is not None:
            embeddings = context.embed(self.config.lpips_extractor, images, hashes)
            reference = context.reference_features(self.config.lpips_extractor, "train")
            lpips = pairwise_distances(embeddings, reference).square()  # (B, N_train)
            best = lpips.min(dim=1)
            for i, (value, index) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
                out[i]["memorisation_lpips"] = value
                if out[i]["memorisation_nearest"] is None:
                    out[i]["memorisation_nearest"] = train.records[index].image
        return out

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        verdicts = []
        if values.get("memorisation_percentile") is not None:
            verdicts.append(values["memorisation_percentile"] >= self.config.percentile)
        if values.get("memorisation_lpips") is not None:
            verdicts.append(values["memorisation_lpips"] >= self.config.min_lpips)
        return all(verdicts) if verdicts else None
