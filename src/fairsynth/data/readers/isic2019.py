"""ISIC 2019 challenge ground truth: one row per image, one hot column per diagnosis.

``ISIC_2019_Training_GroundTruth.csv`` has ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``; the
values are written ``1.0/0.0`` in the official file and ``1/0`` in many copies. Some image
ids end in ``_downsampled`` (the image file has that name too). The test ground truth adds
a ``score_weight`` column, kept as an attribute. Images are ``{image}.jpg``, by default in
``images/`` next to the CSV.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._table import SeenIds, read_table
from fairsynth.data.records import Record

#: Ground-truth column -> diagnosis.
DIAGNOSES = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "none of the other diagnoses",
}
#: Columns besides the diagnoses that ISIC 2019 ground truth files carry.
OTHER_COLUMNS = ("image", "score_weight")
#: Cell text -> hot or not.
HOT = {"1": True, "1.0": True, "0": False, "0.0": False}


@READERS.register("isic2019", help="ISIC 2019 one-hot ground-truth CSV (image,MEL,NV,...,UNK); images/{image}.jpg")
def read_isic2019(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read ISIC 2019 ground truth: label = the hot column (``MEL``), ``diagnosis`` = its name."""
    table = read_table(path, id_column="image")
    root = images or path.parent / "images"
    result = ReadResult(records=[], root=root, problems=list(table.problems), source=str(path))
    missing = table.missing_columns(["image", *DIAGNOSES], "ISIC 2019 ground truth")
    if missing:
        result.problems.extend(missing)
        return result
    for column in table.columns:
        if column not in DIAGNOSES and column not in OTHER_COLUMNS:
            result.problems.append(
                table.problem(
                    "unknown_label",
                    f"column {column!r} is not an ISIC 2019 diagnosis ({', '.join(DIAGNOSES)})",
                )
            )

    seen = SeenIds()
    for row in table.rows:
        image = row.get("image")
        if not image:
            result.problems.append(table.problem("missing_value", "image is blank", row))
            continue
        duplicate = seen.add(image, table.file, row.line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        row_problems: list[Problem] = []
        hot_columns = []
        for column in DIAGNOSES:
            value = row.get(column)
            if value not in HOT:
                row_problems.append(
                    table.problem("bad_value", f"{column} is {value!r}, not 1/0 (or 1.0/0.0)", row, image)
                )
            elif HOT[value]:
                hot_columns.append(column)
        if not row_problems and len(hot_columns) != 1:
            found = ", ".join(hot_columns) if hot_columns else "none"
            row_problems.append(
                table.problem("bad_label", f"exactly one diagnosis column must be 1; found {found}", row, image)
            )
        score_weight: float | None = None
        if "score_weight" in table.columns and row.get("score_weight"):
            try:
                score_weight = float(row.get("score_weight"))
            except ValueError:
                score_weight = None
            if score_weight is None or not math.isfinite(score_weight) or score_weight < 0:
                row_problems.append(
                    table.problem(
                        "bad_value", f"score_weight {row.get('score_weight')!r} is not a finite number >= 0", row, image
                    )
                )
                score_weight = None
        if row_problems:
            result.problems.extend(row_problems)
            continue

        (label,) = hot_columns
        attributes: dict[str, Any] = {"fst": None, "diagnosis": DIAGNOSES[label], "source": "isic2019"}
        if "score_weight" in table.columns:
            attributes["score_weight"] = score_weight
        result.records.append(Record(id=image, image=f"{image}.jpg", label=label, attributes=attributes))
    return result
