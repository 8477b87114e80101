"""What the checks share: reference image sets, feature extractors and the feature cache.

Features of real and training images come from :func:`fairsynth.metrics.features.extract_features`
(cached on disk by image content, so ``evaluate`` and later runs reuse them). Features of
newly generated images are computed from the in-memory images (:meth:`FilterContext.embed`)
and written to the same cache in one shard per round (:meth:`FilterContext.flush`), keyed by
the PNG's sha256 that the writer records, so set-level checks find them without reading the
files again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fairsynth.filters import FilterError
from fairsynth.filters.config import FilterConfig


class FilterContext:
    """Lazily loaded references and extractors for one filtering run.

    Args:
        cfg: the filter section (real / train manifests, extractor overrides, cache).
        progress: where messages about long steps go (feature extraction of references).
    """

    def __init__(self, cfg: FilterConfig, progress: Callable[[str], None] | None = None) -> None:
        from fairsynth.metrics.features import FeatureCache

        self.cfg = cfg
        self.progress = progress
        self.cache = FeatureCache(cfg.cache_dir or None)
        self.warnings: list[str] = []
        self._extractors: dict[str, Any] = {}
        self._sets: dict[str, Any] = {}
        self._references: dict[tuple[str, str], Tensor] = {}
        #: extractor name -> image sha256 -> (feature (d,), (width, height)), not yet in the cache.
        self._pending: dict[str, dict[str, tuple[Tensor, tuple[int, int]]]] = {}
        #: Anything a check wants to keep between calls (per-group statistics).
        self.memo: dict[Any, Any] = {}

    # -- extractors ------------------------------------------------------------------------
    def extractor(self, name: str) -> Any:
        """The extractor ``name`` (or ``filter.extractor`` when set: it replaces every one)."""
        from fairsynth.metrics.extractors import create_extractor

        name = self.cfg.extractor or name
        if name not in self._extractors:
            try:
                extractor = create_extractor(
                    name, self.cfg.weights.get(name), device=self.cfg.torch_device, download=self.cfg.download,
                    **self.cfg.extractor_options.get(name, {}),
                )
            except (TypeError, ValueError) as err:
                raise FilterError(f"filter: extractor {name!r}: {err}") from None
            if extractor.test_only:
                self.warn(f"filters use the {name!r} extractor, which has random weights: tests only, the values mean nothing")
            self._extractors[name] = extractor
        return self._extractors[name]

    def identity(self, name: str) -> str:
        """``extractor:weights-sha256-prefix``: what a stored value was measured with."""
        extractor = self.extractor(name)
        return f"{extractor.name}:{extractor.weights_identity()[:16]}"

    def provenance(self) -> dict[str, Any]:
        """What produced every feature the checks used: extractor, weights hash, size policy."""
        return {name: extractor.provenance() for name, extractor in self._extractors.items()}

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- reference sets ----------------------------------------------------------------------
    def image_set(self, role: str) -> Any:
        """The real (``"real"``) or training (``"train"``) images as a metrics ImageSet."""
        from fairsynth.metrics.evaluate import EvaluationError, load_image_set

        if role in self._sets:
            return self._sets[role]
        try:
            if role == "real":
                if not self.cfg.real:
                    raise FilterError("the realism check needs real images: set filter.real (or generate.real)")
                found = load_image_set(self.cfg.real, "real")
            elif self.cfg.train:
                found = load_image_set(self.cfg.train, "train", self._train_split())
            else:
                raise FilterError("the memorisation check needs the training images: set filter.train (or train.data)")
        except EvaluationError as err:
            raise FilterError(f"filter: {err}") from None
        self._sets[role] = found
        return found

    def _train_split(self) -> str | None:
        """``train_split`` where the training manifest has splits; None (every row) where it has none."""
        from fairsynth.data.records import read_manifest

        try:
            records = read_manifest(self.cfg.train)
        except (FileNotFoundError, ValueError):
            return None  # load_image_set reports it
        return self.cfg.train_split if any(r.split == self.cfg.train_split for r in records) else None

    def reference_features(self, name: str, role: str) -> Tensor:
        """Features ``(N, d)`` of every image of a reference set, through the feature cache."""
        from fairsynth.metrics.features import extract_features

        key = (self.cfg.extractor or name, role)
        if key not in self._references:
            extractor = self.extractor(name)
            images = self.image_set(role)
            tables, _ = extract_features(
                images.paths, [extractor], self.cache, batch_size=self.cfg.batch_size, progress=self.progress
            )
            self._references[key] = tables[extractor.name].features
        return self._references[key]

    # -- generated images --------------------------------------------------------------------
    def embed(self, name: str, images: list[Image.Image], hashes: list[str | None]) -> Tensor:
        """Features ``(B, d)`` of in-memory images; kept for the cache under their PNG sha256."""
        from fairsynth.metrics.extractors import prepare_image

        extractor = self.extractor(name)
        pending = self._pending.setdefault(extractor.name, {})
        rows = []
        for start in range(0, len(images), self.cfg.batch_size):
            chunk = images[start : start + self.cfg.batch_size]
            arrays = np.stack([prepare_image(image.convert("RGB"), extractor.input_size) for image in chunk])
            rows.append(extractor(torch.from_numpy(arrays).permute(0, 3, 1, 2)))  # (b, d)
        features = torch.cat(rows) if rows else torch.zeros(0, extractor.feature_dim)
        if not torch.isfinite(features).all():
            raise FilterError(f"extractor {extractor.name} produced NaN or infinite features; check its weights")
        for image, digest, feature in zip(images, hashes, features):
            if digest:
                pending[digest] = (feature, image.size)
        return features

    def features_of(self, name: str, rows: list[dict[str, Any]]) -> Tensor:
        """Features ``(N, d)`` of generated images: kept from :meth:`embed`, else cached, else extracted."""
        from fairsynth.metrics.features import extract_features

        extractor = self.extractor(name)
        pending = self._pending.setdefault(extractor.name, {})
        hashes = [row["sha256"] for row in rows]
        found = {h: pending[h][0] for h in hashes if h in pending}
        wanted = set(hashes) - found.keys()
        if wanted:
            found.update({h: value[0] for h, value in self.cache.lookup(extractor.cache_key(), wanted).items()})
        missing = [row for row in rows if row["sha256"] not in found]
        if missing:
            paths = [Path(row["_path"]) for row in missing]
            tables, _ = extract_features(paths, [extractor], self.cache, batch_size=self.cfg.batch_size)
            for row, feature in zip(missing, tables[extractor.name].features):
                found[row["sha256"]] = feature
        if not rows:
            return torch.zeros(0, extractor.feature_dim)
        return torch.stack([found[h] for h in hashes])

    def flush(self) -> None:
        """Write the features of generated images kept by :meth:`embed` to the cache (one shard each)."""
        for name, pending in self._pending.items():
            if not pending:
                continue
            extractor = self._extractors[name]
            hashes = list(pending)
            self.cache.store(
                extractor.cache_key(), extractor.provenance(), hashes,
                torch.stack([pending[h][0] for h in hashes]), [pending[h][1] for h in hashes],
            )
            pending.clear()
