"""What the folder-layout readers (MVTec AD, kohya, imagefolder) share: which files are images."""

from __future__ import annotations

from pathlib import Path

from fairsynth.data.problems import Problem

#: Suffixes (lower case) of the image files a folder reader picks up.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name; hidden files are skipped."""
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_SUFFIXES
    )


def images_option_ignored(images: Path | None, folder: Path, reader: str) -> list[Problem]:
    """A note when the user named an image folder for a reader whose images live in its tree."""
    if images is None or images.resolve() == folder.resolve():
        return []
    return [
        Problem(
            kind="ignored_option",
            message=f"the {reader} reader reads images from the dataset folder {folder}; "
            f"data.images ({images}) is not used",
            file=str(folder),
            severity="note",
        )
    ]
