"""The oracle arm's images: true world images in exactly the synthetic set's cells.

What could perfect synthetic images do? On the procedural world the question has an answer:
replace every delivered synthetic image by a *true* world image of the same class and skin
type, painted by the world's own painters from a seed the world never used, prepared exactly
like the real images (hair removal, resize), and train the mixed arm on those instead
(:mod:`fairsynth.downstream.ceiling` turns the difference into the share of the oracle's effect
that the synthetic set reaches).

The pool is written to ``<downstream.output>/oracle-images/``: ``images/*.png`` and
``metadata.jsonl`` (the manifest, written last), ``oracle.json`` (the counts and seeds). A pool
whose ``oracle.json`` matches the request is reused.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fairsynth.data.fst import group_of, parse_fst
from fairsynth.data.records import Record, read_manifest, write_manifest
from fairsynth.io import atomic_write_bytes, atomic_write_text
from fairsynth.world.derm import CONDITIONS, WorldConfig, encode_jpeg, render_layers

if TYPE_CHECKING:
    from fairsynth.config import PrepareConfig


class OracleError(ValueError):
    """The oracle arm cannot be built for this data (a clear, user-facing message)."""


def world_config(world_json: str | Path) -> WorldConfig:
    """The settings of a generated world from its ``world.json``; an error when it is not one."""
    path = Path(world_json)
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if metadata.get("generator") != "fairsynth.world.derm":
            raise ValueError
        return WorldConfig(**metadata["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OracleError(
            f"the oracle arm draws true images from the procedural world, and {path} is not a generated world's "
            "metadata: real data has no truth to draw more of"
        ) from None


def cell_counts(synthetic_manifest: str | Path) -> Counter[tuple[str, int]]:
    """Delivered synthetic images per (class, skin type 1-6) of a generated set's manifest."""
    counts: Counter[tuple[str, int]] = Counter()
    for number, record in enumerate(read_manifest(synthetic_manifest), start=1):
        fst = record.fst
        if record.label not in CONDITIONS or fst is None:
            raise OracleError(
                f"{synthetic_manifest}: row {number} (id {record.id!r}) has class {record.label!r} and skin type "
                f"{fst!r}; the oracle needs a world class and a skin type I-VI on every synthetic image"
            )
        counts[(record.label, int(parse_fst(fst)))] += 1
    return counts


def build_oracle_images(
    world_json: str | Path, synthetic_manifest: str | Path, prepare: "PrepareConfig", output: str | Path,
    caption_template: str | None = None, seed: int = 0,
) -> Path:
    """Write the oracle pool for ``synthetic_manifest`` (see the module docstring); returns its manifest."""
    from fairsynth.data.captions import render_caption
    from fairsynth.data.prepare import preprocess

    world = world_config(world_json)
    counts = cell_counts(synthetic_manifest)
    output = Path(output)
    manifest = output / "metadata.jsonl"
    # a seed the world, its test world and the judge never use: spawn key 3, then the oracle's seed
    wanted = {
        "world": {k: v for k, v in vars(world).items()}, "seed": seed,
        "cells": {f"{label}|{fst}": n for (label, fst), n in sorted(counts.items())},
        "prepare": {"size": list(prepare.size), "crop": prepare.crop, "hair_removal": vars(prepare.hair_removal)},
    }
    described = output / "oracle.json"
    if manifest.is_file() and described.is_file():
        try:
            if json.loads(described.read_text(encoding="utf-8")) == json.loads(json.dumps(wanted, default=str)):
                return manifest
        except ValueError:
            pass
    (output / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for cell_index, ((label, fst), n) in enumerate(sorted(counts.items())):
        for i in range(n):
            rng = np.random.default_rng(np.random.SeedSequence(world.seed, spawn_key=(3, seed, cell_index, i)))
            layers = render_layers(label, fst, rng, world.size, hair_probability=world.hair_probability,
                                   skin_type_effect=world.skin_type_effect)
            # the same path as a real image: JPEG as the world writes it, then prepare's preprocessing
            with Image.open(io.BytesIO(encode_jpeg(layers.image, world.jpeg_quality))) as decoded:
                image = preprocess(decoded.convert("RGB"), prepare)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            png = buffer.getvalue()
            name = f"images/{hashlib.sha256(png).hexdigest()[:32]}.png"
            atomic_write_bytes(output / name, png)
            record = Record(
                f"oracle-{label.replace(' ', '-')}-{fst}-{i:05d}", name, label, None,
                {"fst": fst, "fst_group": group_of(fst), "split": "train", "oracle": True},
            )
            if caption_template:
                record.caption = render_caption(caption_template, record)
            records.append(record)
    write_manifest(records, manifest)
    atomic_write_text(described, json.dumps(wanted, indent=1, default=str) + "\n")
    return manifest
