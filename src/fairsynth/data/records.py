"""One record type for every dataset, and manifests that read and write JSONL, CSV and Parquet.

A manifest is a table with one row per image. Its columns are ``file_name`` (the image path
relative to the manifest's folder, as Hugging Face ``imagefolder`` expects), ``id``,
``label``, ``caption`` and one column per attribute (``fst``, ``fst_group``, ``split``,
``source``, ``ita``, or any user column). A ``metadata.jsonl`` written next to the images is
readable by ``pandas.read_json(lines=True)`` and by ``datasets.load_dataset("imagefolder")``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from fairsynth.data.fst import parse_fst
from fairsynth.io import atomic_open, atomic_write_text

FIXED_COLUMNS = ("file_name", "id", "label", "caption")


@dataclass
class Record:
    """One image and what is known about it.

    Attributes:
        id: stable identifier from the dataset (Fitzpatrick17k: md5hash; DDI: DDI_ID).
        image: image path, relative to the dataset root (or absolute for a reader's own files).
        label: class label (diagnosis, defect type, garment), or None where unlabelled.
        caption: text caption, or None.
        attributes: everything else: ``fst`` (1-6 or None), ``fst_group``, ``split``,
            ``source``, ``ita``, and any user column.
    """

    id: str
    image: str
    label: str | None = None
    caption: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def fst(self) -> int | None:
        return self.attributes.get("fst")

    @property
    def split(self) -> str | None:
        return self.attributes.get("split")

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"file_name": self.image, "id": self.id, "label": self.label, "caption": self.caption}
        for key, value in self.attributes.items():
            if key in FIXED_COLUMNS:
                raise ValueError(f"attribute name {key!r} clashes with a manifest column")
            row[key] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        clean = {k: _none_if_nan(v) for k, v in row.items()}
        if clean.get("file_name") is None:
            raise ValueError(f"manifest row {clean.get('id')!r} has no file_name")
        attributes = {k: v for k, v in clean.items() if k not in FIXED_COLUMNS}
        if "fst" in attributes:  # CSV and Parquet manifests hold 3.0 where JSONL holds 3
            attributes["fst"] = parse_fst(attributes["fst"])
        return cls(
            id=str(clean.get("id") if clean.get("id") is not None else clean["file_name"]),
            image=str(clean["file_name"]),
            label=None if clean.get("label") is None else str(clean["label"]),
            caption=clean.get("caption"),
            attributes=attributes,
        )


def _none_if_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        return value.item()
    return value


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    rows = [r.to_row() for r in records]
    frame = pd.DataFrame(rows, columns=None if rows else list(FIXED_COLUMNS))
    if "fst" in frame.columns:
        frame["fst"] = frame["fst"].astype("Int64")
    return frame


def write_manifest(records: Iterable[Record], path: str | Path) -> Path:
    """Write records atomically as JSONL, CSV or Parquet, chosen by the file suffix."""
    path = Path(path)
    records = list(records)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        lines = [json.dumps(r.to_row(), ensure_ascii=False, default=_json_default) for r in records]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    elif suffix == ".csv":
        with atomic_open(path, "w") as handle:
            records_to_frame(records).to_csv(handle, index=False)
    elif suffix == ".parquet":
        with atomic_open(path, "wb") as handle:
            records_to_frame(records).to_parquet(handle, index=False)
    else:
        raise ValueError(f"{path}: manifest must end in .jsonl, .csv or .parquet")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_manifest(path: str | Path) -> list[Record]:
    """Read a manifest written by :func:`write_manifest` (or any table with ``file_name``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            except (ValueError, RecursionError) as err:  # a number of over 4,300 digits; nesting too deep
                why = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
                raise ValueError(f"{path}:{number}: JSON that cannot be read ({why})") from None
    elif suffix == ".csv":
        rows = pd.read_csv(path, encoding="utf-8-sig", dtype={"id": str, "label": str}).to_dict("records")
    elif suffix == ".parquet":
        rows = pd.read_parquet(path).to_dict("records")
    else:
        raise ValueError(f"{path}: manifest must end in .jsonl, .csv or .parquet")
    records = []
    for number, row in enumerate(rows, start=1):
        if "file_name" not in row:
            raise ValueError(f"{path}: row {number} has no file_name column")
        try:
            records.append(Record.from_row(row))
        except ValueError as err:  # a skin type outside 1-6, no file_name
            raise ValueError(f"{path}: row {number}: {err}") from None
    return records
