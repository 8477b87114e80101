"""The generic ``csv`` reader: any CSV, with its columns named in ``data.columns`` (fairsynth field -> CSV column).

    data:
      reader: csv
      path: photos.csv
      columns: {image: path, label: condition, fst: skin_type, sex: patient_sex}

Fields: ``image`` (required: the image path, relative to ``data.images``, default the CSV's
folder), ``id`` (default: the image path), ``label``, ``caption``, ``fst`` (parsed as a skin
type 1-6 / I-VI, -1 or blank = unknown), ``group`` (a skin-type group such as ``V-VI``, stored
as ``fst_group``; derived from ``fst`` when not mapped), ``split``; any other key becomes an
attribute of that name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairsynth.config import DataConfig
from fairsynth.data.fst import group_of, parse_fst
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._table import SeenIds, read_table
from fairsynth.data.records import Record

#: Fields with a meaning of their own; any other key of ``data.columns`` is an attribute name.
FIELDS = ("id", "image", "label", "caption", "fst", "group", "split")
#: Attribute names the mapped fields are stored under.
ATTRIBUTE_OF = {"fst": "fst", "group": "fst_group", "split": "split"}


@READERS.register("csv", help="Any CSV; map columns with data.columns {image: ..., label: ..., fst: ...}")
def read_csv(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read a CSV whose columns are mapped by ``data.columns``; ``image`` must be mapped."""
    mapping = dict(cfg.columns)
    result = ReadResult(records=[], root=images or path.parent, source=str(path))
    if "image" not in mapping:
        result.problems.append(
            Problem(
                "missing_mapping",
                "the csv reader needs data.columns.image, the column holding image paths "
                f"(fields: {', '.join(FIELDS)}, or any attribute name)",
                file=str(path),
            )
        )
    for reserved in ("file_name", "fst_group"):
        if reserved in mapping:
            field = "image" if reserved == "file_name" else "group"
            result.problems.append(
                Problem(
                    "bad_mapping",
                    f"data.columns.{reserved} is set by fairsynth; map the column as data.columns.{field}",
                    file=str(path),
                )
            )
    if result.problems:
        return result

    table = read_table(path, id_column=mapping.get("id") or mapping["image"])
    result.problems.extend(table.problems)
    missing = [
        table.problem(
            "missing_column",
            f"data.columns.{field} names column {column!r}, which the file lacks; "
            f"the file has: {', '.join(table.columns)}",
        )
        for field, column in mapping.items()
        if table.columns and column not in table.columns
    ]
    if missing:
        result.problems.extend(missing)
        return result

    seen = SeenIds()
    for row in table.rows:
        image = row.get(mapping["image"])
        record_id = row.get(mapping["id"]) if "id" in mapping else image
        if not image or not record_id:
            blank = "image" if not image else "id"
            result.problems.append(
                table.problem("missing_value", f"{blank} ({mapping[blank]}) is blank", row, record_id or image)
            )
            continue
        duplicate = seen.add(record_id, table.file, row.line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        attributes: dict[str, Any] = {}
        for field, column in mapping.items():
            if field not in ("id", "image", "label", "caption"):
                attributes[ATTRIBUTE_OF.get(field, field)] = row.optional(column)
        if "fst" in mapping:
            try:
                attributes["fst"] = parse_fst(row.get(mapping["fst"]))
            except ValueError as err:
                result.problems.append(table.problem("bad_fst", f"{mapping['fst']}: {err}", row, record_id))
                continue
            if "group" not in mapping:
                attributes["fst_group"] = group_of(attributes["fst"])
        result.records.append(
            Record(
                id=record_id,
                image=image,
                label=row.optional(mapping["label"]) if "label" in mapping else None,
                caption=row.optional(mapping["caption"]) if "caption" in mapping else None,
                attributes=attributes,
            )
        )
    return result
