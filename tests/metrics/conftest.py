"""Metric tests run offline, on one torch thread, with every weights cache pointed at tmp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    """No download is ever attempted, and no real cache on this machine is read: the fairsynth
    weights folder, torch.hub's cache and the Hugging Face cache are all empty tmp folders."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FAIRSYNTH_OFFLINE", "1")
    monkeypatch.delenv("FAIRSYNTH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small tensors gain nothing from threads; on a shared 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_set(
    root: Path,
    n: int,
    *,
    seed: int = 0,
    brightness: int = 0,
    size: int | tuple[int, int] = 40,
    fst: list[int] | None = None,
    labels: list[str] | None = None,
    splits: list[str] | None = None,
    captions: bool = True,
) -> Path:
    """``n`` small noisy PNGs with a metadata.jsonl (imagefolder manifest); returns the manifest."""
    rng = np.random.default_rng(seed)
    fst = fst or [1, 2, 3, 4, 5, 6]
    labels = labels or ["melanoma", "nevus"]
    width, height = (size, size) if isinstance(size, int) else size
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        skin, label = fst[i % len(fst)], labels[i % len(labels)]
        array = rng.normal(110 + brightness + 12 * skin, 35, (height, width, 3)).clip(0, 255).astype(np.uint8)
        name = f"images/{i:04d}.png"
        Image.fromarray(array).save(root / name)
        rows.append({
            "file_name": name, "id": f"{root.name}-{i}", "label": label,
            "caption": f"a dermoscopic image of {label} on skin type {skin}" if captions else None,
            "fst": skin, "fst_group": ["I-II", "III-IV", "V-VI"][(skin - 1) // 2],
            "split": splits[i % len(splits)] if splits else None,
        })
    manifest = root / "metadata.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest
