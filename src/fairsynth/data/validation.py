"""Image-level checks, the same for every reader.

The reader reports table-level problems (columns, labels, skin types, duplicate ids); this
module opens every image and reports the rest — all of them, each naming its row and file:
a path that leaves the dataset root (``..``, absolute paths, symlinks out), a missing,
zero-byte, truncated or not-an-image file, an image smaller than the target resolution, an
empty caption where captions are required. Grayscale, CMYK, 16-bit, palette and alpha
images are accepted with a note: :func:`fairsynth.data.preprocess.load_rgb` converts them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem, errors
from fairsynth.data.readers import ReadResult, read_dataset
from fairsynth.data.records import Record
from fairsynth.io import UnsafePathError, resolve_inside

#: Modes PIL opens that are converted to 8-bit RGB on the way in.
CONVERTED_MODES = {
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "1": "1-bit",
    "P": "palette",
    "PA": "palette with alpha",
    "CMYK": "CMYK",
    "RGBA": "RGB with alpha",
    "I": "32-bit integer",
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "F": "floating point",
    "YCbCr": "YCbCr",
    "LAB": "CIELAB",
    "HSV": "HSV",
}


@dataclass
class ValidationReport:
    """What validation found: the records, every problem, and which rows are clean."""

    records: list[Record]
    root: Path
    problems: list[Problem] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return not errors(self.problems)

    def invalid_ids(self) -> set[str]:
        return {p.row_id for p in errors(self.problems) if p.row_id is not None}

    def table_errors(self) -> list[Problem]:
        """Errors that concern the whole table (no row), e.g. a missing column."""
        return [p for p in errors(self.problems) if p.row_id is None]

    def valid_records(self) -> list[Record]:
        bad = self.invalid_ids()
        return [r for r in self.records if r.id not in bad]


def check_image(record: Record, root: Path, min_size: int = 0) -> list[Problem]:
    """Every problem with one record's image file."""
    shown = record.image

    def problem(kind: str, message: str, severity: str = "error") -> Problem:
        return Problem(kind, message, row_id=record.id, file=shown, severity=severity)  # type: ignore[arg-type]

    try:
        path = resolve_inside(root, record.image)
    except UnsafePathError as err:
        return [problem("unsafe_path", str(err))]
    shown = str(path)
    if not path.exists():
        return [problem("missing_file", "image file does not exist")]
    if not path.is_file():
        return [problem("not_a_file", "image path is not a regular file")]
    if path.stat().st_size == 0:
        return [problem("empty_file", "image file is empty (0 bytes)")]
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums, without decoding pixels
        with Image.open(path) as image, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()  # decodes every pixel: catches truncated files
            mode, (width, height) = image.mode, image.size
            has_transparency = "transparency" in image.info
    except UnidentifiedImageError:
        return [problem("not_an_image", "file is not an image PIL can read")]
    except (OSError, SyntaxError, ValueError) as err:
        return [problem("truncated", f"image cannot be decoded ({err})")]
    found: list[Problem] = []
    if min(width, height) < min_size:
        found.append(problem("too_small", f"image is {width}x{height}, smaller than {min_size} px on its short side"))
    if mode in CONVERTED_MODES or has_transparency:
        what = CONVERTED_MODES.get(mode, f"{mode} with transparency")
        found.append(problem("converted", f"{what} image ({mode}) will be converted to RGB", "note"))
    return found


def check_records(
    records: list[Record], root: Path, *, min_size: int = 0, require_captions: bool = False
) -> list[Problem]:
    found: list[Problem] = []
    for record in records:
        found.extend(check_image(record, root, min_size))
        if require_captions and not (record.caption or "").strip():
            found.append(Problem("empty_caption", "caption is empty but captions are required", record.id, record.image))
    return found


def validate(
    cfg: DataConfig,
    path: str | Path | None = None,
    images: str | Path | None = None,
    *,
    min_size: int | None = None,
) -> ValidationReport:
    """Read a dataset with its reader and check every row and image, changing nothing."""
    result: ReadResult = read_dataset(cfg, path, images)
    size = cfg.min_size if min_size is None else min_size
    found = list(result.problems)
    found.extend(check_records(result.records, result.root, min_size=size, require_captions=cfg.require_captions))
    return ValidationReport(result.records, result.root, found, result.source)
