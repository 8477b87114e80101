"""Fitzpatrick17k (Groh et al., 2021): clinical photos labelled with Fitzpatrick skin type.

The official ``fitzpatrick17k.csv`` has the columns ``md5hash, fitzpatrick_scale,
fitzpatrick_centaur, label, nine_partition_label, three_partition_label, qc, url,
url_alphanum``; subsets written by pandas (skin-diff's ``Fitz_subset.csv``) add a leading
unnamed index column, which is dropped. Images are ``{md5hash}.jpg``, by default in
``images/`` next to the CSV. ``fitzpatrick_scale`` is 1-6, with -1 for unknown (565 rows of
the official file), read as ``fst = None``.
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

#: Columns ``data.label_column`` may choose: the 114 conditions, or their 9- or 3-way grouping.
LABEL_COLUMNS = ("label", "nine_partition_label", "three_partition_label")


@READERS.register(
    "fitzpatrick17k",
    help="Fitzpatrick17k CSV (official, or a subset with an index column); images/{md5hash}.jpg",
)
def read_fitzpatrick17k(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read Fitzpatrick17k metadata into records with ``fst``, ``fst_group`` and ``diagnosis``.

    ``label`` is the column named by ``data.label_column`` (default ``label``);
    ``diagnosis`` is always the condition name from ``label``, for caption templates.
    """
    table = read_table(path, id_column="md5hash")
    root = images or path.parent / "images"
    result = ReadResult(records=[], root=root, problems=list(table.problems), source=str(path))
    label_column = cfg.label_column or "label"
    if label_column not in LABEL_COLUMNS:
        result.problems.append(
            table.problem(
                "bad_label_column",
                f"data.label_column {label_column!r} is not a Fitzpatrick17k label column; "
                f"choose one of {', '.join(LABEL_COLUMNS)}",
            )
        )
        return result
    missing = table.missing_columns(["md5hash", "fitzpatrick_scale", "label", label_column], "Fitzpatrick17k")
    if missing:
        result.problems.extend(missing)
        return result

    seen = SeenIds()
    for row in table.rows:
        md5hash = row.get("md5hash")
        if not md5hash:
            result.problems.append(table.problem("missing_value", "md5hash is blank", row))
            continue
        duplicate = seen.add(md5hash, table.file, row.line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        row_problems: list[Problem] = []
        skin_types: dict[str, int | None] = {}
        for column in ("fitzpatrick_scale", "fitzpatrick_centaur"):
            if column not in table.columns:
                continue
            try:
                skin_types[column] = parse_fst(row.get(column))
            except ValueError as err:
                row_problems.append(table.problem("bad_fst", f"{column}: {err}", row, md5hash))
        for column in dict.fromkeys(("label", label_column)):
            if not row.get(column):
                row_problems.append(table.problem("missing_value", f"{column} is blank", row, md5hash))
        if row_problems:
            result.problems.extend(row_problems)
            continue

        fst = skin_types["fitzpatrick_scale"]
        attributes: dict[str, Any] = {
            "fst": fst,
            "fst_group": group_of(fst),
            "diagnosis": row.get("label"),
            "source": "fitzpatrick17k",
        }
        if "fitzpatrick_centaur" in skin_types:
            attributes["fitzpatrick_centaur"] = skin_types["fitzpatrick_centaur"]
        for column in ("three_partition_label", "nine_partition_label", "qc"):
            if column in table.columns:
                attributes[column] = row.optional(column)
        result.records.append(
            Record(id=md5hash, image=f"{md5hash}.jpg", label=row.get(label_column), attributes=attributes)
        )
    return result
