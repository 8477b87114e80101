"""Small datasets made inside tests (the real metadata files live in ../shared/data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

#: Environment of CLI subprocesses in tests: one intra-op thread each (on a few shared cores
#: torch's thread pool mostly waits: a 4-step training run took 21 s with 2 threads, 3 s with 1),
#: and offline.
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}

FITZ_COLUMNS = [
    "md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label",
    "nine_partition_label", "three_partition_label", "qc", "url", "url_alphanum",
]


def make_image(path: Path, size: int = 96, seed: int = 0, mode: str = "RGB") -> Path:
    """A small random image; the format follows the suffix."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def fitz_rows(n: int, fst: list[int] | None = None) -> pd.DataFrame:
    """``n`` Fitzpatrick17k-format rows with unique md5 ids and two classes."""
    rows = []
    for i in range(n):
        md5 = hashlib.md5(f"row{i}".encode()).hexdigest()
        label = ["melanoma", "psoriasis"][i % 2]
        nine = ["malignant melanoma", "inflammatory"][i % 2]
        three = ["malignant", "non-neoplastic"][i % 2]
        scale = fst[i] if fst else (i % 6) + 1
        rows.append([md5, scale, scale, label, nine, three, None, f"https://example.org/{i}.jpg", f"example{i}jpg.jpg"])
    return pd.DataFrame(rows, columns=FITZ_COLUMNS)
