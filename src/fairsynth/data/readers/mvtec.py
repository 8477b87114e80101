"""MVTec AD (Bergmann et al., 2019): industrial images, defect-free and with labelled defects.

The layout, per category (``bottle``, ``screw``, ...)::

    <category>/train/good/000.png                    defect-free training images
    <category>/test/good/000.png                     defect-free test images
    <category>/test/<defect>/000.png                 defective test images, by defect type
    <category>/ground_truth/<defect>/000_mask.png    the defect's pixel mask

``path`` is the dataset root (holding categories) or one category folder. Image paths and
ids start with the category (``bottle/test/broken_large/000.png``), relative to the folder
holding the categories. label = the defect type, ``good`` for defect-free images.
"""

from __future__ import annotations

from pathlib import Path

from fairsynth.config import DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult
from fairsynth.data.readers._folders import image_files, images_option_ignored
from fairsynth.data.records import Record

GOOD = "good"
#: The folders a category holds; anything else is a layout problem.
CATEGORY_FOLDERS = ("train", "test", "ground_truth")


def is_category(folder: Path) -> bool:
    """A category folder holds ``train/`` or ``test/``."""
    return (folder / "train").is_dir() or (folder / "test").is_dir()


@READERS.register("mvtec", help="MVTec AD folder tree: <category>/{train,test}/<defect>/*.png with masks")
def read_mvtec(path: Path, images: Path | None, cfg: DataConfig) -> ReadResult:
    """Read an MVTec AD dataset root or one category; attributes ``category``, ``split``, ``mask``."""
    if is_category(path):
        root, categories = path.parent, [path]
    else:
        root = path
        categories = sorted(e for e in path.iterdir() if e.is_dir() and is_category(e)) if path.is_dir() else []
    problems = images_option_ignored(images, path, "mvtec")
    result = ReadResult(records=[], root=root, problems=problems, source=str(path))
    if not categories:
        result.problems.append(
            Problem(
                "bad_layout",
                "no MVTec AD category here: expected <category>/train/good/*.png and <category>/test/<defect>/*.png",
                file=str(path),
            )
        )
        return result
    for category in categories:
        records, problems = _read_category(category, root)
        result.records.extend(records)
        result.problems.extend(problems)
    return result


def _read_category(category: Path, root: Path) -> tuple[list[Record], list[Problem]]:
    """Records of one category folder, and every layout problem in it."""
    records: list[Record] = []
    problems: list[Problem] = []
    for entry in sorted(category.iterdir()):
        if entry.is_dir() and entry.name not in CATEGORY_FOLDERS and not entry.name.startswith("."):
            problems.append(
                Problem(
                    "bad_layout",
                    f"unexpected folder {entry.name!r} in category {category.name!r}; "
                    f"an MVTec AD category holds {', '.join(CATEGORY_FOLDERS)}",
                    file=str(entry),
                )
            )
    ground_truth = category / "ground_truth"
    defects_seen: set[str] = set()
    for split in ("train", "test"):
        split_folder = category / split
        if not split_folder.is_dir():
            continue
        for label_folder in sorted(entry for entry in split_folder.iterdir() if entry.is_dir()):
            label = label_folder.name
            if split == "train" and label != GOOD:
                problems.append(
                    Problem(
                        "unknown_label",
                        f"train/{label}: MVTec AD trains on defect-free images only (train/good)",
                        file=str(label_folder),
                    )
                )
                continue
            if label != GOOD:
                defects_seen.add(label)
            for image in image_files(label_folder):
                record_id = f"{category.name}/{split}/{label}/{image.stem}"
                mask: str | None = None
                if label != GOOD:
                    mask_file = ground_truth / label / f"{image.stem}_mask.png"
                    if mask_file.is_file():
                        mask = mask_file.relative_to(root).as_posix()
                    else:
                        problems.append(
                            Problem(
                                "missing_mask",
                                f"no defect mask {mask_file.relative_to(root).as_posix()}; mask is None",
                                row_id=record_id,
                                file=str(image),
                                severity="note",
                            )
                        )
                records.append(
                    Record(
                        id=record_id,
                        image=image.relative_to(root).as_posix(),
                        label=label,
                        attributes={"category": category.name, "split": split, "mask": mask, "source": "mvtec"},
                    )
                )
    if ground_truth.is_dir():
        for defect_folder in sorted(entry for entry in ground_truth.iterdir() if entry.is_dir()):
            if defect_folder.name not in defects_seen:
                problems.append(
                    Problem(
                        "unknown_label",
                        f"ground_truth/{defect_folder.name} has no test/{defect_folder.name} folder",
                        file=str(defect_folder),
                        severity="note",
                    )
                )
    return records, problems
