"""Fixtures of the training tests: a tiny seeded base model saved once, tiny prepared datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairsynth.data.records import Record, write_manifest

import tests.training.bias_method  # noqa: F401  (registers test_unet_bias)

CLASSES = ("melanoma", "psoriasis")



def make_prepared(folder: Path, n_train: int = 8, n_val: int = 2, size: int = 32, synthetic: int = 0) -> Path:
    """A prepared imagefolder: ``n_train + n_val`` seeded PNGs with label, fst, split and caption."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_train + n_val):
        rng = np.random.default_rng(i)
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        name = f"images/img{i:03d}.png"
        Image.fromarray(array, "RGB").save(folder / name)
        label = CLASSES[i % 2]
        fst = (i % 6) + 1
        attributes = {"fst": fst, "split": "train" if i < n_train else "val"}
        if i < synthetic:
            attributes["synthetic"] = True
        records.append(Record(f"r{i}", name, label, f"a photo of {label} on skin type {fst}", attributes))
    return write_manifest(records, folder / "metadata.jsonl")


@pytest.fixture
def prepared(tmp_path) -> Path:
    return make_prepared(tmp_path / "prepared")


def recipe_overrides(workdir: Path, base: Path, manifest: Path, **train: object) -> list[str]:
    """Dotted overrides of a small, fast training recipe; ``train`` adds/overrides train.* keys."""
    values: dict[str, object] = {
        "base.source": str(base),
        "method": "test_unet_bias",
        "data": str(manifest),
        "resolution": "[32]",
        "steps": 4,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "checkpoint_every": 2,
        "report_to": "none",
    }
    values.update(train)
    return [f"workdir={workdir}", "prepare.resolution=[32]"] + [f"train.{k}={v}" for k, v in values.items()]


def make_recipe(workdir: Path, base: Path, manifest: Path, **train: object):
    from fairsynth.recipe import load_recipe

    return load_recipe(None, recipe_overrides(workdir, base, manifest, **train))
