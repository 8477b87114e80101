"""kohya sd-scripts (DreamBooth-style) training folders: ``<repeats>_<concept>/``.

    train/10_sks dog/001.jpg
    train/10_sks dog/001.txt        caption of 001.jpg (``.caption`` is read when no ``.txt``)
    train/3_dog/002.png

``path`` is the folder holding the concept folders. Each image is one record with
label = the concept (``sks dog``) and attribute ``repeats`` = N from the folder name. Records
are not repeated on reading, so that counts, splits and validation see every image once;
:func:`expand_repeats` repeats them for training the way kohya does (each image N times per
epoch).
"""

from __future__ import annotations

import re
from pathlib import Path

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._folders import image_files, images_option_ignored
from fairsynth.data.records import Record

#: ``<repeats>_<concept>``, e.g. ``10_sks dog``.
FOLDER_NAME = re.compile(r"^(\d+)_(.+)$")
#: The most repeats a folder may ask for: an epoch holds every image this many times, so a typo
#: such as ``1000000_dog`` would make one epoch of a million copies of each image.
MAX_REPEATS = 10_000
#: Caption file suffixes, first found wins (``.txt`` is the common one, ``.caption`` kohya's default).
CAPTION_SUFFIXES = (".txt", ".caption")


@READERS.register("kohya", help="kohya-style folders <repeats>_<concept>/ with image + same-stem .txt caption")
def read_kohya(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read kohya concept folders: label = concept, caption from the ``.txt`` file, ``repeats``."""
    problems = images_option_ignored(images, path, "kohya")
    result = ReadResult(records=[], root=path, problems=problems, source=str(path))
    folders = sorted(e for e in path.iterdir() if e.is_dir() and not e.name.startswith(".")) if path.is_dir() else []
    if not folders:
        result.problems.append(
            Problem("bad_layout", "no <repeats>_<concept> folders here (e.g. '10_sks dog/')", file=str(path))
        )
        return result
    for loose in image_files(path):
        result.problems.append(
            Problem(
                "bad_layout",
                "image outside any <repeats>_<concept> folder is not read",
                row_id=loose.name,
                file=str(loose),
                severity="note",
            )
        )
    for folder in folders:
        match = FOLDER_NAME.match(folder.name)
        if not match:
            result.problems.append(
                Problem(
                    "bad_folder_name",
                    f"folder {folder.name!r} is not named <repeats>_<concept> (e.g. '10_sks dog'); "
                    "its images are not read",
                    file=str(folder),
                )
            )
            continue
        repeats, concept = int(match.group(1)), match.group(2).strip()
        if not 1 <= repeats <= MAX_REPEATS or not concept:
            result.problems.append(
                Problem(
                    "bad_folder_name",
                    f"folder {folder.name!r} needs repeats from 1 to {MAX_REPEATS:,} and a concept name; "
                    "its images are not read",
                    file=str(folder),
                )
            )
            continue
        for image in image_files(folder):
            relative = image.relative_to(path).as_posix()
            try:
                caption = _caption_of(image)
            except (OSError, UnicodeDecodeError) as err:
                message = f"caption file cannot be read as UTF-8 text: {err}"
                result.problems.append(Problem("unreadable_file", message, row_id=relative, file=str(image)))
                continue
            result.records.append(
                Record(
                    id=relative,
                    image=relative,
                    label=concept,
                    caption=caption,
                    attributes={"repeats": repeats, "source": "kohya"},
                )
            )
    return result


def _caption_of(image: Path) -> str | None:
    """The text of the image's caption file, or None where it has none (or it is blank)."""
    for suffix in CAPTION_SUFFIXES:
        caption_file = image.with_suffix(suffix)
        if caption_file.is_file():
            return caption_file.read_text(encoding="utf-8-sig").strip() or None
    return None


def expand_repeats(records: list[Record]) -> list[Record]:
    """Each record ``repeats`` times (1 where it has none), in order: one kohya training epoch.

    The repeated entries are the same :class:`Record` objects, not copies.
    """
    return [record for record in records for _ in range(int(record.attributes.get("repeats") or 1))]
