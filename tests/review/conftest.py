"""Small real and synthetic sets in the project's manifest formats, and sheet/key writers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from fairsynth.data.records import Record, write_manifest


def make_synthetic(root: Path, cells: dict[tuple[str, int], int], rejected: int = 0, size: int = 16) -> Path:
    """``metadata.jsonl`` as `fairsynth generate` writes it: PNGs under images/<slug>/<slug>-<index>.png with a
    text chunk naming the prompt, rows with cell labels, seed and filter verdicts; ``rejected`` extra images per
    cell fail the brightness check (``brightness_ok`` False, ``accepted`` False)."""
    rng = np.random.default_rng(1)
    rows = []
    for (label, fst), count in cells.items():
        slug = f"{label}-fst{fst}"
        (root / "images" / slug).mkdir(parents=True, exist_ok=True)
        for index in range(count + rejected):
            name = f"images/{slug}/{slug}-{index:06d}.png"
            info = PngInfo()
            info.add_text("parameters", f"a dermoscopic image of {label}, synthetic")
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name, pnginfo=info)
            ok = index < count
            rows.append({
                "file_name": name, "id": f"{slug}-{index:06d}", "label": label, "caption": f"a photo of {label}",
                "fst": fst, "fst_group": "V-VI" if fst >= 5 else "I-IV", "cell": slug, "index": index,
                "seed": 1000 + index, "synthetic": True, "brightness_mean": 0.5 if ok else 0.02,
                "brightness_ok": ok, "accepted": ok, "selected": ok, "status": "selected" if ok else "rejected",
            })
    path = root / "metadata.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_real(root: Path, cells: dict[tuple[str, int], int], split: str = "test", size: int = 24) -> Path:
    """A prepared manifest (write_manifest) of JPEGs with EXIF and revealing names, ``split`` on every row, plus
    two train images per cell that must never be drawn."""
    rng = np.random.default_rng(2)
    records = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for (label, fst), count in cells.items():
        for i in range(count + 2):
            which = split if i < count else "train"
            name = f"images/real-{label}-{fst}-{i}.jpg"
            exif = Image.Exif()
            exif[0x010F] = "RealCameraMaker"  # Make
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name, exif=exif)
            records.append(Record(f"real-{label}-{fst}-{i}", name, label, f"a photo of {label}", {"fst": fst, "split": which}))
    return write_manifest(records, root / "metadata.jsonl")


@pytest.fixture
def sets(tmp_path):
    """4 synthetic cells (one with only 3 images) and 4 real cells of 10 test images."""
    synthetic = make_synthetic(
        tmp_path / "generated",
        {("melanoma", 1): 20, ("melanoma", 6): 20, ("psoriasis", 1): 20, ("psoriasis", 6): 3}, rejected=2,
    )
    real = make_real(tmp_path / "prepared", {("melanoma", 1): 10, ("melanoma", 6): 10, ("psoriasis", 1): 10, ("psoriasis", 6): 10})
    return synthetic, real


def write_key(path: Path, sources: dict[str, str], fst: dict[str, int] | None = None) -> Path:
    """A key as the export writes it, for ids -> source (and skin type)."""
    images = []
    for image_id, source in sources.items():
        skin = (fst or {}).get(image_id, 1)
        images.append({"id": image_id, "source": source, "label": "melanoma", "fst": skin,
                       "stratum": f"label=melanoma, fst={skin}"})
    path.write_text(json.dumps({"images": images}))
    return path


def write_sheet(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("id", "rating", "real_or_synthetic", "comment")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(list(row) + [""] * (len(header) - len(row)))
    return path
