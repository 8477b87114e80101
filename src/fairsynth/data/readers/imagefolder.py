"""Hugging Face ``imagefolder`` datasets: images plus a ``metadata.jsonl`` or ``metadata.csv``.

    data/metadata.jsonl      {"file_name": "0001.png", "label": "crack", "text": "a cracked tile"}
    data/0001.png

As in 🤗 Datasets, ``file_name`` is relative to the metadata file's folder, and metadata files
may sit in subfolders (``train/metadata.jsonl``). ``path`` is the dataset folder or one
metadata file. Columns: ``file_name`` (required); ``id`` (default: the image path); the label
column (``data.label_column``, default ``label``); the caption (``caption``, else ``text``);
``fst`` parsed as a skin type (``fst_group`` derived unless given); every other column
becomes an attribute. A folder without metadata (labels from folder names) is not read here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fairsynth.config import DataConfig
from fairsynth.data.fst import group_of, parse_fst
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._folders import images_option_ignored
from fairsynth.data.readers._table import SeenIds, read_table
from fairsynth.data.records import FIXED_COLUMNS, Record

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("caption", "text")


@READERS.register("imagefolder", help="Hugging Face imagefolder: images + metadata.jsonl/metadata.csv (file_name)")
def read_imagefolder(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read an imagefolder dataset; ``Record.image`` is relative to the dataset folder."""
    root = path.parent if path.is_file() else path
    problems = images_option_ignored(images, root, "imagefolder")
    result = ReadResult(records=[], root=root, problems=problems, source=str(path))
    metadata_files = [path] if path.is_file() else _metadata_files(root, result.problems)
    if not metadata_files:
        result.problems.append(
            Problem("bad_layout", f"no {' or '.join(METADATA_FILES)} in this folder or below", file=str(path))
        )
        return result
    label_column = cfg.label_column or "label"
    seen = SeenIds()
    for metadata_file in metadata_files:
        _read_metadata(metadata_file, root, label_column, cfg.label_column is not None, seen, result)
    return result


def _metadata_files(root: Path, problems: list[Problem]) -> list[Path]:
    """metadata.jsonl / metadata.csv files under ``root``; jsonl wins where a folder has both."""
    by_folder: dict[Path, list[Path]] = {}
    for name in METADATA_FILES:
        for found in root.rglob(name):
            if found.is_file() and not any(part.startswith(".") for part in found.relative_to(root).parts):
                by_folder.setdefault(found.parent, []).append(found)
    chosen = []
    for folder in sorted(by_folder):
        files = by_folder[folder]
        if len(files) > 1:
            problems.append(
                Problem(
                    "bad_layout",
                    f"both {' and '.join(f.name for f in files)} describe {folder}; keep one ({files[0].name} is read)",
                    file=str(folder),
                )
            )
        chosen.append(files[0])
    return chosen


def _read_metadata(
    metadata_file: Path, root: Path, label_column: str, label_chosen: bool, seen: SeenIds, result: ReadResult
) -> None:
    """Add the records of one metadata file (and its problems) to ``result``."""
    file = str(metadata_file)
    if metadata_file.suffix.lower() == ".csv":
        table = read_table(metadata_file, id_column="file_name")
        result.problems.extend(table.problems)
        columns = table.columns
        rows = [(row.line, {k: (v or None) for k, v in row.cells.items()}) for row in table.rows]
    else:
        rows, problems = _read_jsonl(metadata_file)
        result.problems.extend(problems)
        columns = list(dict.fromkeys(key for _, row in rows for key in row))
    if not columns and not rows:
        return
    required = ["file_name"] + ([label_column] if label_chosen else [])
    missing = [column for column in required if column not in columns]
    for column in missing:
        result.problems.append(
            Problem(
                "missing_column",
                f"imagefolder metadata needs a column {column!r}; the file has: {', '.join(columns)}",
                file=file,
            )
        )
    if missing:
        return
    caption_column = next((c for c in CAPTION_COLUMNS if c in columns), None)
    consumed = {"file_name", "id", label_column, caption_column}
    shadowed = sorted(c for c in columns if c in FIXED_COLUMNS and c not in consumed)
    if shadowed:
        result.problems.append(
            Problem(
                "ignored_column",
                f"column(s) {', '.join(shadowed)} clash with manifest fields and are not read "
                f"(the label is {label_column!r})",
                file=file,
                severity="note",
            )
        )
    folder = metadata_file.parent.relative_to(root)

    for line, row in rows:
        file_name = row.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            result.problems.append(Problem("missing_value", "file_name is blank or not text", file=file, line=line))
            continue
        image = (folder / file_name.strip()).as_posix()
        try:
            record_id = _text(row.get("id"), "id") or image
            label = _text(row.get(label_column), label_column)
        except ValueError as err:
            result.problems.append(Problem("bad_value", str(err), _text_or_none(row.get("id")) or image, file, line))
            continue
        duplicate = seen.add(record_id, file, line)
        if duplicate:
            result.problems.append(duplicate)
            continue
        caption = _missing_to_none(row.get(caption_column)) if caption_column else None
        if caption is not None and not isinstance(caption, str):
            result.problems.append(
                Problem("bad_value", f"{caption_column} is not text: {caption!r}", record_id, file, line)
            )
            continue
        attributes: dict[str, Any] = {}
        problems = []
        for key, value in row.items():
            if key in consumed or key in FIXED_COLUMNS:
                continue
            try:
                attributes[key] = _plain(value, key)
            except ValueError as err:
                problems.append(Problem("bad_value", str(err), record_id, file, line))
        if problems:
            result.problems.extend(problems)
            continue
        if "fst" in columns:
            try:
                attributes["fst"] = parse_fst(row.get("fst"))
            except ValueError as err:
                result.problems.append(Problem("bad_fst", f"fst: {err}", record_id, file, line))
                continue
            if attributes.get("fst_group") is None:
                attributes["fst_group"] = group_of(attributes["fst"])
        result.records.append(
            Record(
                id=record_id,
                image=image,
                label=label,
                caption=(caption or "").strip() or None,
                attributes=attributes,
            )
        )


def _read_jsonl(metadata_file: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    """(line, object) for each line of a JSONL file, and a problem for each line that is not one."""
    file = str(metadata_file)
    try:
        text = metadata_file.read_text(encoding="utf-8-sig")
    except OSError as err:
        return [], [Problem("unreadable_file", f"cannot read the file: {err.strerror or err}", file=file)]
    except UnicodeDecodeError:
        return [], [Problem("unparseable_json", "not UTF-8 text; save the file as UTF-8", file=file)]
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    # split on "\n" only: JSON strings may hold U+2028 and other characters splitlines() breaks on.
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            value = json.loads(content)
        except json.JSONDecodeError as err:
            problems.append(Problem("unparseable_json", f"not valid JSON: {err.msg}", file=file, line=line))
            continue
        except (ValueError, RecursionError) as err:  # a number of over 4,300 digits; nesting too deep
            why = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
            problems.append(Problem("unparseable_json", f"JSON that cannot be read: {why}", file=file, line=line))
            continue
        if not isinstance(value, dict):
            problems.append(Problem("unparseable_json", "a line must be one JSON object", file=file, line=line))
            continue
        rows.append((line, value))
    return rows, problems


def _missing_to_none(value: Any) -> Any:
    """None for what means "no value": JSON null and NaN (pandas writes NaN for a blank cell)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(value: Any, column: str) -> str | None:
    """A text cell (id, label) as text, numbers written out; None where it is absent or blank.

    Raises ValueError naming the column for a value that is no text: true/false, a list, an object,
    an infinite number.
    """
    value = _missing_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (list, dict)) or (isinstance(value, float) and math.isinf(value)):
        raise ValueError(f"{column} is {json.dumps(value)}, not text or a number")
    text = str(value).strip()
    return text or None


def _text_or_none(value: Any) -> str | None:
    try:
        return _text(value, "id")
    except ValueError:
        return None


#: How deep a list or object in an attribute may nest (a manifest is a table, not a document store).
MAX_NESTING = 32


def _plain(value: Any, column: str, depth: int = 0) -> Any:
    """An attribute as a manifest can hold it (strict JSON): NaN becomes None, infinity and
    nesting deeper than :data:`MAX_NESTING` are refused."""
    if depth > MAX_NESTING:
        raise ValueError(f"{column} nests lists or objects more than {MAX_NESTING} levels deep")
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError(f"{column} is {value}, which a manifest cannot hold; leave it blank or give a number")
        return value
    if isinstance(value, list):
        return [_plain(item, column, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, column, depth + 1) for key, item in value.items()}
    return value
