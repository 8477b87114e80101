"""FID against the training images during training, and early stopping when it plateaus.

Every ``train.fid.every`` steps process 0 samples ``num_images`` images with the components
under training (adapters active, as the validation grid), prompts cycling over the training
captions in manifest order and image ``k`` seeded with ``fid.seed + k`` — the same prompts and
seeds at every measurement. Their features and those of the training images (extracted once
per run, through the metrics feature cache) give the Fréchet distance
(:func:`fairsynth.metrics.functional.frechet.frechet_distance`).

Sampling draws only from explicit generators, and torch's global RNG state is saved and
restored around it anyway, so a run with FID on trains exactly the weights of a run without.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairsynth.config import ConfigError
from fairsynth.data.records import Record
from fairsynth.methods.base import Components, Method
from fairsynth.training.config import TrainConfig
from fairsynth.training.validation import GridCell, sample_images


def create_fid_extractor(cfg: TrainConfig, device: torch.device | str) -> Any:
    """The configured extractor with its weights resolved now (a missing file fails before training)."""
    from fairsynth.metrics.extractors import create_extractor
    from fairsynth.registry import UnknownNameError

    try:
        extractor = create_extractor(cfg.fid.extractor, weights=cfg.fid.weights or None, device=str(device))
    except UnknownNameError as err:
        raise ConfigError(f"train.fid.extractor: {err}") from None
    extractor.weights_identity()  # raises WeightsNotFound naming the file and the fetch command
    return extractor


class FidTracker:
    """Measures FID at given steps and decides when training stops."""

    def __init__(self, cfg: TrainConfig, extractor: Any, records: list[Record], dataset_root: Path) -> None:
        self.cfg = cfg
        self.extractor = extractor
        self.paths = [Path(dataset_root) / r.image for r in records]
        captioned = [r for r in records if r.caption] or list(records)
        n = cfg.fid.num_images
        self.cells = [
            GridCell(r.label, r.fst, r.caption or "", r) for r in (captioned[k % len(captioned)] for k in range(n))
        ]
        self.sampling = dataclasses.replace(cfg.validation, seed=cfg.fid.seed)
        self._reference: torch.Tensor | None = None
        self.history: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_fid = math.inf
        self.without_improvement = 0

    def due(self, step: int) -> bool:
        return self.cfg.fid.every > 0 and step % self.cfg.fid.every == 0

    def reference(self) -> torch.Tensor:
        """Features ``(N, d)`` of the training images, once per run (and cached on disk)."""
        if self._reference is None:
            from fairsynth.metrics.features import FeatureCache, extract_features

            tables, _ = extract_features(self.paths, [self.extractor], FeatureCache(self.cfg.cache_dir or None))
            self._reference = tables[self.extractor.name].features
        return self._reference

    @torch.no_grad()
    def features_of_samples(self, components: Components, method: Method, device: torch.device | str) -> torch.Tensor:
        from fairsynth.metrics.extractors import prepare_image

        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training RNG stream is untouched
            images = sample_images(components, method, self.cells, self.cfg.size, self.sampling, device)
        arrays = [prepare_image(image.convert("RGB"), self.extractor.input_size) for image in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
        return torch.cat([self.extractor(batch[i : i + 32]) for i in range(0, len(batch), 32)])  # (N, d)

    def measure(self, step: int, components: Components, method: Method, device: torch.device | str) -> float:
        from fairsynth.metrics.functional.frechet import frechet_distance

        value = frechet_distance(self.reference(), self.features_of_samples(components, method, device))
        self.record(step, value)
        return value

    def record(self, step: int, value: float) -> None:
        self.history.append(
            {"step": step, "fid": value, "extractor": self.extractor.name, "weights_sha256": self.extractor.weights_sha256}
        )
        if value < self.best_fid - self.cfg.fid.min_delta or self.best_step is None:
            self.best_fid, self.best_step, self.without_improvement = value, step, 0
        else:
            self.without_improvement += 1

    @property
    def should_stop(self) -> bool:
        return self.cfg.fid.patience > 0 and self.without_improvement >= self.cfg.fid.patience

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Replays the measurements of a checkpoint (so a resumed run stops where it would have)."""
        for entry in (state or {}).get("history", []):
            self.record(int(entry["step"]), float(entry["fid"]))

    def info(self, stopped_early: bool) -> dict[str, Any]:
        return {
            "fid": self.history,
            "fid_extractor": self.extractor.provenance(),
            "fid_best_step": self.best_step,
            "fid_best": self.best_fid if self.best_step is not None else None,
            "stopped_early": stopped_early,
        }
