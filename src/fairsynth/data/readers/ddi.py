"""Diverse Dermatology Images (DDI, Daneshjou et al., 2022): biopsy-proven lesions by skin tone.

``ddi_metadata.csv`` has a leading unnamed index column (dropped), then ``DDI_ID, DDI_file,
skin_tone, malignant, disease``. ``skin_tone`` gives only a group of Fitzpatrick types —
12 = I-II, 34 = III-IV, 56 = V-VI — so ``fst`` is None and ``fst_group`` holds the group.
The dataset ships its images as ``DDI/images/{DDI_file}``; by default they are looked for in
``images/`` next to the CSV.
"""

from __future__ import annotations

from pathlib import Path

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._table import SeenIds, read_table
from fairsynth.data.records import Record

#: DDI's ``skin_tone`` code -> Fitzpatrick group (as in :data:`fairsynth.data.fst.GROUPS`).
SKIN_TONE_GROUPS = {"12": "I-II", "34": "III-IV", "56": "V-VI"}
#: ``malignant`` is written TRUE/FALSE in the DDI file (True/False by pandas).
MALIGNANT = {"true": True, "false": False}

REQUIRED = ("DDI_ID", "DDI_file", "skin_tone", "malignant", "disease")


@READERS.register("ddi", help="Diverse Dermatology Images metadata CSV; skin_tone 12/34/56 -> FST groups")
def read_ddi(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read DDI metadata: label = ``disease``, with ``fst_group`` and a boolean ``malignant``."""
    table = read_table(path, id_column="DDI_ID")
    root = images or path.parent / "images"
    result = ReadResult(records=[], root=root, problems=list(table.problems), source=str(path))
    missing = table.missing_columns(REQUIRED, "DDI")
    if missing:
        result.problems.extend(missing)
        return result

    seen = SeenIds()
    for row in table.rows:
        ddi_id = row.get("DDI_ID")
        if not ddi_id:
            result.problems.append(table.problem("missing_value", "DDI_ID is blank", row))
            continue
        duplicate = seen.add(ddi_id, table.file, row.line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        row_problems: list[Problem] = []
        skin_tone = row.get("skin_tone")
        if skin_tone not in SKIN_TONE_GROUPS:
            row_problems.append(
                table.problem(
                    "bad_fst",
                    f"skin_tone {skin_tone!r} is not one of 12 (FST I-II), 34 (III-IV), 56 (V-VI)",
                    row,
                    ddi_id,
                )
            )
        malignant = MALIGNANT.get(row.get("malignant").lower())
        if malignant is None:
            row_problems.append(
                table.problem("bad_value", f"malignant {row.get('malignant')!r} is not TRUE or FALSE", row, ddi_id)
            )
        for column in ("DDI_file", "disease"):
            if not row.get(column):
                row_problems.append(table.problem("missing_value", f"{column} is blank", row, ddi_id))
        if row_problems:
            result.problems.extend(row_problems)
            continue

        disease = row.get("disease")
        result.records.append(
            Record(
                id=ddi_id,
                image=row.get("DDI_file"),
                label=disease,
                attributes={
                    "fst": None,
                    "fst_group": SKIN_TONE_GROUPS[skin_tone],
                    "skin_tone": int(skin_tone),
                    "malignant": malignant,
                    "diagnosis": disease,
                    "source": "ddi",
                },
            )
        )
    return result
