"""HAM10000 (Tschandl et al., 2018): dermoscopic images of seven diagnoses.

``HAM10000_metadata.csv`` has ``lesion_id, image_id, dx, dx_type, age, sex, localization``
and, in the Dataverse copy only, ``dataset`` (the Kaggle copy lacks it). Images are
``{image_id}.jpg``, by default in ``images/`` next to the CSV. Several images can show one
lesion: ``lesion_id`` is kept so that splits can keep a lesion in one split
(``prepare.split.group_by: lesion_id``). There is no skin-type column: ``fst`` is None and is
estimated later from the image (ITA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._table import SeenIds, read_table
from fairsynth.data.records import Record

#: ``dx`` code -> diagnosis, as named in the HAM10000 paper.
DIAGNOSES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

REQUIRED = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


@READERS.register("ham10000", help="HAM10000 metadata CSV (Dataverse or Kaggle copy); images/{image_id}.jpg")
def read_ham10000(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read HAM10000 metadata: label = ``dx`` code, ``diagnosis`` = its full name."""
    table = read_table(path, id_column="image_id")
    root = images or path.parent / "images"
    result = ReadResult(records=[], root=root, problems=list(table.problems), source=str(path))
    missing = table.missing_columns(REQUIRED, "HAM10000")
    if missing:
        result.problems.extend(missing)
        return result

    seen = SeenIds()
    for row in table.rows:
        image_id = row.get("image_id")
        if not image_id:
            result.problems.append(table.problem("missing_value", "image_id is blank", row))
            continue
        duplicate = seen.add(image_id, table.file, row.line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        row_problems: list[Problem] = []
        dx = row.get("dx")
        if dx not in DIAGNOSES:
            row_problems.append(
                table.problem(
                    "unknown_label", f"dx {dx!r} is not one of {', '.join(DIAGNOSES)}", row, image_id
                )
            )
        if not row.get("lesion_id"):
            row_problems.append(table.problem("missing_value", "lesion_id is blank", row, image_id))
        try:
            age = _age(row.get("age"))
        except ValueError as err:
            row_problems.append(table.problem("bad_value", f"age {row.get('age')!r} {err}", row, image_id))
        if row_problems:
            result.problems.extend(row_problems)
            continue

        attributes: dict[str, Any] = {
            "fst": None,
            "diagnosis": DIAGNOSES[dx],
            "dx": dx,
            "lesion_id": row.get("lesion_id"),
            "dx_type": row.optional("dx_type"),
            "age": age,
            "sex": row.optional("sex"),
            "localization": row.optional("localization"),
            "source": "ham10000",
        }
        if "dataset" in table.columns:
            attributes["dataset"] = row.optional("dataset")
        result.records.append(Record(id=image_id, image=f"{image_id}.jpg", label=dx, attributes=attributes))
    return result


#: Ages outside this range (years) are errors in the file, not patients.
AGE_RANGE = (0, 150)


def _age(text: str) -> int | float | None:
    """Age in years: blank -> None; ``80.0`` -> 80. Raises ValueError (saying why) for anything
    that is not an age: not a number, infinite, negative, above 150."""
    if not text:
        return None
    try:
        age = float(text)
    except ValueError:
        raise ValueError("is not a number") from None
    if age != age:  # "nan" written out by pandas
        return None
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise ValueError(f"is outside {AGE_RANGE[0]}-{AGE_RANGE[1]} years")
    return int(age) if age.is_integer() else age
