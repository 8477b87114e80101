"""A tiny downstream study made in code: derm-world images as a prepared real set and a synthetic set.

The real set is skewed like the world (few images of types V-VI in training); the
"synthetic" set holds further world renders of types V-VI. They stand in for generated images
so that these tests check the classifier's plumbing and protocol, not a generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairsynth.data.fst import group_of
from fairsynth.world.derm import render_layers
from fairsynth.world.judge import JUDGE_CLASSES

SIZE = 32


def _write(root: Path, name: str, label: str, fst: int, seed: int, index: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    image = render_layers(label, fst, rng, size=SIZE, hair_probability=0.0).image
    relative = f"images/{name}.png"
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / relative)
    return relative


def write_set(root: Path, plan: list[tuple[str, int, str | None]], seed: int, prefix: str) -> Path:
    """Render ``plan`` ((label, fst, split) per image) into ``root`` with a metadata.jsonl."""
    rows = []
    for index, (label, fst, split) in enumerate(plan):
        name = f"{prefix}{index:04d}"
        row = {"file_name": _write(root, name, label, fst, seed, index), "id": name, "label": label, "caption": None,
               "fst": fst, "fst_group": group_of(fst)}
        if split is not None:
            row["split"] = split
        rows.append(row)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "metadata.jsonl"


def real_plan(train_per_cell: dict[int, int], eval_per_cell: int) -> list[tuple[str, int, str]]:
    plan = []
    for label in JUDGE_CLASSES:
        for fst, count in train_per_cell.items():
            plan += [(label, fst, "train")] * count
        for fst in train_per_cell:
            plan += [(label, fst, "val")] * eval_per_cell + [(label, fst, "test")] * eval_per_cell
    return plan


@pytest.fixture(scope="session")
def derm_study(tmp_path_factory) -> dict[str, Path]:
    """Real manifest (train skewed to light skin, val/test balanced) and a synthetic manifest of types V-VI."""
    root = tmp_path_factory.mktemp("downstream")
    real = write_set(root / "real", real_plan({1: 6, 2: 6, 3: 5, 4: 4, 5: 1, 6: 1}, eval_per_cell=2), seed=1, prefix="r")
    fake_plan = [(label, fst, None) for label in JUDGE_CLASSES for fst in (5, 6) for _ in range(4)]
    synthetic = write_set(root / "synthetic", fake_plan, seed=2, prefix="s")
    return {"real": real, "synthetic": synthetic, "root": root}
