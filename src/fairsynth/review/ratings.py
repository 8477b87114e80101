"""Reading the key and the raters' filled sheets; every problem names the file and the line.

A sheet is the ``ratings.csv`` of the rater folder, filled in: ``rating`` a whole number 1-7
or blank (not rated), ``real_or_synthetic`` real, synthetic or blank, ``comment`` free text
(the column may be dropped). Sheets saved by a spreadsheet program are read as they come: a
UTF-8 byte-order mark and ``;`` as the separator are accepted, and an id whose leading zeros
were dropped (``7`` for ``0007``) is matched to the key's id of the same number.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fairsynth.review.config import SCALE
from fairsynth.review.sheet import SHEET_COLUMNS

SOURCES = ("real", "synthetic")
_REQUIRED = SHEET_COLUMNS[:3]


class ReviewError(ValueError):
    """A rating sheet or key that cannot be read (names the file and the line)."""


@dataclass(frozen=True)
class Rating:
    """One rater's answer for one image."""

    rater: str
    id: str
    score: int | None
    guess: str | None


def read_key(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{id: key entry}`` from the key written by the export."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = {str(entry["id"]): entry for entry in data["images"]}
    except FileNotFoundError as err:
        raise ReviewError(f"key {path} does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ReviewError(f"{path} is not a review key (expected {{'images': [{{'id', 'source', ...}}]}}): {err}") from err
    for number, entry in enumerate(data["images"], 1):
        if entry.get("source") not in SOURCES:
            raise ReviewError(f"{path}: image {number} (id {entry.get('id')!r}) has source {entry.get('source')!r}, not real or synthetic")
    return entries


def rater_name(path: Path) -> str:
    """``alice`` for ``alice/ratings.csv`` and for ``ratings-alice.csv``; else the file's stem."""
    stem = path.stem
    if stem.lower() == "ratings":
        return path.resolve().parent.name or stem
    for prefix in ("ratings-", "ratings_"):
        if stem.lower().startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix):]
    return stem


def _match_id(text: str, key: dict[str, dict[str, Any]], numbers: dict[int, str]) -> str | None:
    if text in key:
        return text
    if text.isdigit():  # a spreadsheet turned 0007 into 7
        return numbers.get(int(text))
    return None


def read_sheet(path: str | Path, key: dict[str, dict[str, Any]], rater: str | None = None) -> list[Rating]:
    """One rater's filled sheet, validated against the key."""
    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"rating sheet {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ReviewError(f"{path}: not UTF-8 text ({err.reason}); save the sheet as CSV (UTF-8)") from err
    first = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [column.strip().lower() for column in next(reader, [])]
    missing = [c for c in _REQUIRED if c not in header]
    unknown = [c for c in header if c not in SHEET_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        problem = "; ".join(filter(None, [
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"unexpected column(s) {', '.join(unknown)}" if unknown else "",
            "a column appears twice" if len(set(header)) != len(header) else "",
        ]))
        raise ReviewError(f"{path}, line 1: {problem}; the columns are {', '.join(SHEET_COLUMNS)}")
    rater = rater or rater_name(path)
    numbers = {int(i): i for i in key if i.isdigit()}
    out: list[Rating] = []
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num  # the record's last line in the file (a quoted comment may span lines)
        if not any(v.strip() for v in values):
            continue  # an empty line
        if len(values) > len(header):
            raise ReviewError(f"{path}, line {line}: {len(values)} fields but {len(header)} columns (a comment with "
                              f"'{delimiter}' must be in double quotes)")
        row = dict(zip(header, (v.strip() for v in values)))
        raw_id = row.get("id", "")
        image_id = _match_id(raw_id, key, numbers)
        if image_id is None:
            raise ReviewError(f"{path}, line {line}: id {raw_id!r} is not in the key (is this sheet from another export?)")
        if image_id in seen:
            raise ReviewError(f"{path}, line {line}: id {image_id} appears twice (first on line {seen[image_id]})")
        seen[image_id] = line
        rating = row.get("rating", "")
        score = None
        if rating:
            if not rating.isdigit() or not SCALE[0] <= int(rating) <= SCALE[1]:
                raise ReviewError(
                    f"{path}, line {line}: rating {rating!r} of id {image_id} is not a whole number "
                    f"{SCALE[0]}-{SCALE[1]} (blank: not rated)"
                )
            score = int(rating)
        guess = row.get("real_or_synthetic", "").lower() or None
        if guess is not None and guess not in SOURCES:
            raise ReviewError(
                f"{path}, line {line}: real_or_synthetic {row['real_or_synthetic']!r} of id {image_id} must be "
                f"real, synthetic or blank"
            )
        out.append(Rating(rater, image_id, score, guess))
    return out


def read_sheets(paths: Sequence[str | Path], key: dict[str, dict[str, Any]]) -> tuple[list[str], list[Rating]]:
    """Every sheet, one rater each: the rater names (in order) and all their ratings."""
    if not paths:
        raise ReviewError("no rating sheet given")
    resolved = [Path(p).resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ReviewError(f"rating sheet {paths[i]} is given twice; one sheet per rater")
    names: list[str] = []
    ratings: list[Rating] = []
    for path in paths:
        name = rater_name(Path(path))
        base, suffix = name, 2
        while name in names:
            name, suffix = f"{base} ({suffix})", suffix + 1
        names.append(name)
        ratings += read_sheet(path, key, rater=name)
    return names, ratings
