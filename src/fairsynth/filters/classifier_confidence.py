"""Classifier confidence: a classifier trained on *real* images must recognise the requested class.

The FairSkin plan keeps a synthetic image only if a classifier trained on real data gives its
requested diagnosis a softmax probability of at least 0.6: an image the real-data classifier
cannot read as its class teaches the downstream model little, or the wrong thing. The
classifier is a ``fairsynth downstream`` run folder of the ``real`` arm
(``<downstream.output>/real/seed-<k>``: ``model.safetensors`` + ``classifier.json``).

Beware the circularity when the same classifier family is then trained on the filtered set:
the filter keeps what a real-data model already finds easy. The values are stored, so the
threshold can be lowered without measuring again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.filters import FILTERS
from fairsynth.filters.base import Filter, FilterError
from fairsynth.io import sha256_file


@dataclass
class ClassifierConfidenceConfig:
    """Which real-data classifier judges, and how sure it must be."""

    model: str = knob("", "A `fairsynth downstream` run folder of the real arm (model.safetensors + classifier.json).")
    threshold: float = knob(0.6, "Least softmax probability of the requested class (FairSkin plan: 0.6).")
    field: str = knob("label", "Manifest field holding the requested class.")

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"classifier_confidence: threshold must be in (0, 1], got {self.threshold}")


def load_run_classifier(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """The classifier of a downstream run folder and its description (backbone, classes, size)."""
    from fairsynth.downstream.train import load_run_model

    folder = Path(folder)
    described, weights = folder / "classifier.json", folder / "model.safetensors"
    for path in (described, weights):
        if not path.is_file():
            raise FilterError(
                f"classifier_confidence: {path} does not exist; train a real-data classifier with "
                "`fairsynth downstream compare --config <recipe> downstream.arms=[real]` and point model at its "
                "<output>/real/seed-<k> folder"
            )
    return load_run_model(folder)


@FILTERS.register(
    "classifier_confidence", help="a classifier trained on real images gives the requested class softmax >= threshold"
)
class ClassifierConfidence(Filter):
    """Softmax probability of the requested class under a real-data classifier."""

    name = "classifier_confidence"
    Config = ClassifierConfidenceConfig
    columns = ("classifier_confidence_probability", "classifier_confidence_predicted")

    def setup(self, context: Any) -> None:
        if not self.config.model:
            raise FilterError(
                "classifier_confidence needs filter.checks.classifier_confidence.model: a downstream run folder "
                "of the real arm (see `fairsynth downstream compare --help`)"
            )
        self.model, self.info = load_run_classifier(self.config.model)

    def measured_with(self, context: Any) -> str:
        return f"{self.info['backbone']}@{sha256_file(Path(self.config.model) / 'model.safetensors')[:16]}"

    @torch.no_grad()
    def measure(self, images: list[Image.Image], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        size, classes = int(self.info["image_size"]), list(self.info["classes"])
        batch = torch.stack([
            torch.from_numpy(np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)).copy())
            .permute(2, 0, 1).float().div(127.5).sub(1.0)
            for image in images
        ])  # (B, 3, S, S)
        logits, _ = self.model(batch)  # (B, C)
        probabilities = logits.float().softmax(1)
        out = []
        for row, p in zip(rows, probabilities):
            requested = row.get(self.config.field)
            value = float(p[classes.index(requested)]) if requested in classes else None
            out.append({
                "classifier_confidence_probability": value,
                "classifier_confidence_predicted": classes[int(p.argmax())],
            })
        return out

    def passes(self, values: Mapping[str, Any], row: Mapping[str, Any]) -> bool | None:
        value = values.get("classifier_confidence_probability")
        if value is None:
            return None if row.get(self.config.field) is None else False
        return value >= self.config.threshold
