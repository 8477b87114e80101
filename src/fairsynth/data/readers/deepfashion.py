"""DeepFashion-MultiModal (Jiang et al., 2022): full-body garment photos with text captions.

``captions.json`` is one JSON object ``{image_filename: caption}``; the images are by default
in ``images/`` next to it. ``path`` is the ``captions.json`` file or the folder holding it.
The captions carry no class label: ``label`` is None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._table import SeenIds
from fairsynth.data.records import Record

CAPTIONS_FILE = "captions.json"


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so that repeated keys are seen, not merged."""


@READERS.register("deepfashion", help="DeepFashion-MultiModal captions.json {image_filename: caption}; images/")
def read_deepfashion(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read DeepFashion-MultiModal captions: one record per image, id = image file name."""
    captions_file = path / CAPTIONS_FILE if path.is_dir() else path
    file = str(captions_file)
    result = ReadResult(records=[], root=images or captions_file.parent / "images", source=file)
    if cfg.label_column:
        result.problems.append(
            Problem(
                "ignored_option",
                f"DeepFashion captions carry no label; data.label_column {cfg.label_column!r} is not used",
                file=file,
                severity="note",
            )
        )
    try:
        entries: Any = json.loads(captions_file.read_text(encoding="utf-8-sig"), object_pairs_hook=_Pairs)
    except OSError as err:
        result.problems.append(Problem("unreadable_file", f"cannot read the file: {err.strerror or err}", file=file))
        return result
    except UnicodeDecodeError:
        result.problems.append(Problem("unparseable_json", "not UTF-8 text; save the file as UTF-8", file=file))
        return result
    except json.JSONDecodeError as err:
        result.problems.append(Problem("unparseable_json", f"not valid JSON: {err.msg}", file=file, line=err.lineno))
        return result
    except (ValueError, RecursionError) as err:  # a number of over 4,300 digits; nesting deeper than Python recurses
        result.problems.append(Problem("unparseable_json", f"JSON that cannot be read: {_why(err)}", file=file))
        return result
    if not isinstance(entries, _Pairs):
        result.problems.append(
            Problem(
                "unparseable_json",
                f"expected one JSON object {{image_filename: caption}}, found {_json_type(entries)}",
                file=file,
            )
        )
        return result

    seen = SeenIds()
    for image, caption in entries:
        duplicate = seen.add(image, file)
        if duplicate:
            result.problems.append(duplicate)
            continue
        if not image.strip():
            result.problems.append(Problem("missing_value", "an entry has a blank image file name", file=file))
            continue
        if not isinstance(caption, str):
            result.problems.append(
                Problem("bad_value", f"caption is {_json_type(caption)}, not text", row_id=image, file=file)
            )
            continue
        result.records.append(
            Record(id=image, image=image, caption=caption.strip() or None, attributes={"source": "deepfashion"})
        )
    return result


def _why(err: BaseException) -> str:
    """Why Python's JSON parser gave up, in words (its messages name Python internals)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]


def _json_type(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages."""
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string"}.get(type(value), "a number")
