"""Fixtures of the generation tests: the tiny SD base saved once, a tiny real dataset, and a
"trained" LoRA output laid out as `fairsynth train` writes it (a randomly initialised,
non-zero LoRA: no training steps are needed to change the images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairsynth.data.records import Record, write_manifest


def make_real(folder: Path, n: int = 12, size: int = 32, fsts: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A prepared imagefolder of skin-coloured noisy PNGs: melanoma / psoriasis over ``fsts``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        label, fst = ("melanoma", "psoriasis")[i % 2], fsts[(i // 2) % len(fsts)]
        tone = np.array([225, 190, 160]) - 25 * (fst - 1)
        array = (tone + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
        name = f"images/real{i:03d}.png"
        Image.fromarray(array).save(folder / name)
        split = "train" if i < n - 2 else "val"
        records.append(Record(f"r{i}", name, label, f"a photo of {label}", {"fst": fst, "split": split}))
    return write_manifest(records, folder / "metadata.jsonl")


@pytest.fixture(scope="session")
def real_manifest(tmp_path_factory) -> Path:
    return make_real(tmp_path_factory.mktemp("real"))


def write_trained_output(train_dir: Path, base: Path, manifest: Path, method: str = "lora", **options) -> Path:
    """``<train_dir>/model``: the method's export of a random non-zero adapter, config.yaml and
    training_info.json as the training loop writes them."""
    from fairsynth.config import save_resolved
    from fairsynth.data.records import read_manifest
    from fairsynth.methods.base import Components
    from fairsynth.models.loading import load_base, model_hash
    from fairsynth.recipe import load_recipe

    options = {"rank": 4, "init": False, **options} if method == "lora" else options
    recipe = load_recipe(None, [
        f"workdir={train_dir.parent}", f"train.output={train_dir}", f"train.base.source={base}",
        f"train.method={method}", f"train.options={json.dumps(options)}", f"train.data={manifest}",
        "prepare.resolution=[32]",
    ])
    pipe = load_base(str(base))
    base_hash = model_hash(pipe)
    components = Components.from_pipeline(pipe, source=str(base), base_hash=base_hash)
    method_obj = recipe.train.build_method()
    records = [r for r in read_manifest(manifest) if r.split == "train"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        method_obj.check(components, records)
        method_obj.prepare(components)
    model = train_dir / "model"
    method_obj.export(components, model)
    save_resolved(recipe, model)
    by_class, by_fst = {}, {}
    for r in records:
        by_class[str(r.label)] = by_class.get(str(r.label), 0) + 1
        by_fst[str(r.fst)] = by_fst.get(str(r.fst), 0) + 1
    info = {
        "dataset": {"manifest": str(manifest), "split": "train", "images_by_class": by_class, "images_by_fst": by_fst},
        "base_model": {"source": str(base), "sha256": base_hash, "kind": "sd"},
        "method": method, "options": recipe.train.options, "steps": 1, "seed": 0,
    }
    (model / "training_info.json").write_text(json.dumps(info, indent=2))
    return model


@pytest.fixture(scope="session")
def lora_output(tmp_path_factory, tiny_base, real_manifest) -> Path:
    """A `fairsynth train` output folder with a random non-zero LoRA (its model/ inside)."""
    train_dir = tmp_path_factory.mktemp("study") / "train"
    write_trained_output(train_dir, tiny_base, real_manifest)
    return train_dir


def overrides(workdir: Path, base: Path, real: Path, train_dir: Path | None, **generate) -> list[str]:
    """Dotted overrides of a tiny generation: 32 px, 2 steps, batches of 2, cheap checks only."""
    values: dict[str, object] = {
        "plan.total": 6, "plan.by": "[fst]", "steps": 2, "batch_size": 2, "resolution": "[32]",
        "scheduler": "ddim", "guidance_scale": 2.0,
    }
    values.update(generate)
    out = [
        f"workdir={workdir}", f"train.base.source={base}", f"train.data={real}", f"generate.real={real}",
        "prepare.resolution=[32]", "filter.checks=[resolution, brightness]",
        "filter.options={brightness: {min: 0.0, max: 1.0}}",
    ]
    if train_dir is not None:
        out.append(f"train.output={train_dir}")
    else:
        out.append("generate.adapters=[]")
    return out + [f"generate.{k}={v}" for k, v in values.items()]


def make_recipe(workdir: Path, base: Path, real: Path, train_dir: Path | None, *extra: str, **generate):
    from fairsynth.recipe import load_recipe

    return load_recipe(None, overrides(workdir, base, real, train_dir, **generate) + list(extra))
