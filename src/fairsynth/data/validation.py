"""Image-level checks, the same for every reader.

The reader reports table-level problems (columns, labels, skin types, duplicate ids); this
module opens every image and reports the rest — all of them, each naming its row and file:
a path that leaves the dataset root (``..``, absolute paths, symlinks out) or cannot be
followed (a symlink loop, a NUL byte, a name too long), a missing, zero-byte, truncated or
not-an-image file (an HTML page saved as ``.jpg`` is named as one), an image above the pixel
limit (``data.max_image_pixels``: refused from its header, never decoded), a PNG metadata
chunk that inflates beyond Pillow's safety limit, a broken EXIF orientation, an image smaller
than the target resolution, an empty caption where captions are required. Grayscale, CMYK, 16-bit, palette and alpha
images are accepted with a note: :func:`fairsynth.data.preprocess.load_rgb` converts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fairsynth.config import DataConfig
from fairsynth.data.images import ImageReadError, exif_orientation, read_image
from fairsynth.data.problems import Problem, errors
from fairsynth.data.readers import ReadResult, read_dataset
from fairsynth.data.records import Record
from fairsynth.io import UnresolvablePathError, UnsafePathError, resolve_inside

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


def check_image(record: Record, root: Path, min_size: int = 0, *, max_pixels: int | None = None) -> list[Problem]:
    """Every problem with one record's image file (opened through :mod:`fairsynth.data.images`)."""
    shown = record.image

    def problem(kind: str, message: str, severity: str = "error") -> Problem:
        return Problem(kind, message, row_id=record.id, file=shown, severity=severity)  # type: ignore[arg-type]

    try:
        path = resolve_inside(root, record.image)
    except UnresolvablePathError as err:
        return [problem("unreadable", str(err))]
    except UnsafePathError as err:
        return [problem("unsafe_path", str(err))]
    shown = str(path)
    try:
        image = read_image(path, max_pixels=max_pixels, verify=True)
    except ImageReadError as err:
        return [problem(err.kind, err.reason)]
    mode, (width, height) = image.mode, image.size
    has_transparency = "transparency" in image.info
    orientation = exif_orientation(image)
    found: list[Problem] = []
    if orientation.problem:
        found.append(problem("bad_exif", orientation.problem, orientation.severity))
    if min(width, height) < min_size:
        found.append(problem("too_small", f"image is {width}x{height}, smaller than {min_size} px on its short side"))
    if mode in CONVERTED_MODES or has_transparency:
        what = CONVERTED_MODES.get(mode, f"{mode} with transparency")
        found.append(problem("converted", f"{what} image ({mode}) will be converted to RGB", "note"))
    return found


def check_records(
    records: list[Record], root: Path, *, min_size: int = 0, require_captions: bool = False,
    max_pixels: int | None = None,
) -> list[Problem]:
    found: list[Problem] = []
    for record in records:
        found.extend(check_image(record, root, min_size, max_pixels=max_pixels))
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
    found.extend(check_records(
        result.records, result.root, min_size=size, require_captions=cfg.require_captions,
        max_pixels=cfg.max_image_pixels,
    ))
    return ValidationReport(result.records, result.root, found, result.source)
