"""`fairsynth prepare`: a validated, resized, annotated and split dataset, written atomically.

Steps, for every valid row:

1. load as 8-bit RGB with EXIF orientation applied (:func:`preprocess.load_rgb`);
2. optional DullRazor hair removal (:mod:`fairsynth.data.hair`);
3. resize and crop to the target size, saved as lossless PNG named by a content hash
   (of the source file's bytes and the preprocessing settings);
4. ITA of the skin region and the ITA-based FST estimate (``ita``, ``fst_ita``), so datasets
   without skin-type labels can be balanced and audited;

then splits, captions from the template, and the outputs: ``metadata.jsonl`` (a Hugging Face
imagefolder), ``counts.csv`` (class x skin type), ``rejects.csv`` (with ``--drop-invalid``),
``notes.txt`` (conversions) and ``config.yaml`` (the resolved recipe).

The output folder is built as ``.<name>.partial`` and renamed when complete. Images in it are
written atomically under names that identify their input, so a run killed half-way resumes
where it stopped and never duplicates an image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from fairsynth.config import DataConfig, PrepareConfig
from fairsynth.data.captions import render_caption
from fairsynth.data.fst import GROUP_NAMES, ROMAN, group_of
from fairsynth.data.hair import remove_hair
from fairsynth.data.images import read_image
from fairsynth.data.preprocess import load_rgb, resize_crop
from fairsynth.data.problems import Problem, errors
from fairsynth.data.records import Record, write_manifest
from fairsynth.data.skin import fst_from_ita, ita, skin_mask
from fairsynth.data.splits import assign_splits
from fairsynth.data.validation import ValidationReport, validate
from fairsynth.io import atomic_open, atomic_write_text, resolve_inside, save_png, sha256_file, staged_dir


class PrepareJob(Protocol):
    """What :func:`prepare` reads of a study: its ``data`` and ``prepare`` sections (a
    :class:`fairsynth.recipe.Recipe` is one; the data layer does not import the recipe that
    composes every stage). The whole job is saved beside the output as ``config.yaml``."""

    data: DataConfig
    prepare: PrepareConfig


#: Bumped whenever the preprocessing changes what it writes, so old resumes are not reused.
PREPROCESS_VERSION = 1


class DatasetInvalid(ValueError):
    """The dataset has problems and ``--drop-invalid`` was not given (or cannot help)."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class PrepareResult:
    output: Path
    records: list[Record]
    counts: pd.DataFrame
    rejected: dict[str, list[Problem]] = field(default_factory=dict)
    notes: list[Problem] = field(default_factory=list)


def count_table(records: list[Record], by: str | None = None) -> pd.DataFrame:
    """Class x skin-type counts with totals: the imbalance a user must see first.

    Columns are FST I-VI and ``unknown`` when the dataset has skin types (``fst``), the DDI
    groups when it has only those (``fst_group``), else the ITA estimate (``fst_ita``).
    """
    if by is None:
        has = lambda key: any(r.attributes.get(key) is not None for r in records)  # noqa: E731
        by = "fst" if has("fst") else "fst_group" if has("fst_group") else "fst_ita"
    if by in ("fst", "fst_ita"):
        columns = [f"FST {roman}" for roman in ROMAN.values()] + ["unknown"]
        column_of = lambda v: f"FST {ROMAN[v]}" if v in ROMAN else "unknown"  # noqa: E731
    elif by == "fst_group":
        columns = [f"FST {g}" for g in GROUP_NAMES] + ["unknown"]
        column_of = lambda v: f"FST {v}" if v in GROUP_NAMES else "unknown"  # noqa: E731
    else:
        values = sorted({str(r.attributes.get(by)) for r in records})
        columns, column_of = values, str
    labels = sorted({str(r.label) for r in records})
    table = pd.DataFrame(0, index=labels, columns=columns, dtype=int)
    for record in records:
        table.loc[str(record.label), column_of(record.attributes.get(by))] += 1
    table = table.loc[:, (table.sum(axis=0) > 0) | (table.columns != "unknown")]
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "class"
    table.attrs["skin_type_field"] = by
    return table


def _settings_key(recipe: "PrepareJob") -> str:
    cfg = recipe.prepare
    settings = {
        "version": PREPROCESS_VERSION,
        "size": cfg.size,
        "crop": cfg.crop,
        "hair_removal": vars(cfg.hair_removal),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _prepare_image(source: Path, recipe: "PrepareJob") -> Image.Image:
    return preprocess(load_rgb(source, max_pixels=recipe.data.max_image_pixels), recipe.prepare)


def preprocess(image: Image.Image, cfg: "PrepareConfig") -> Image.Image:
    """One RGB image as ``prepare`` writes it: optional hair removal, then resize and crop."""
    if cfg.hair_removal.enabled:
        array, _ = remove_hair(
            np.asarray(image), kernel=cfg.hair_removal.kernel,
            threshold=cfg.hair_removal.threshold, radius=cfg.hair_removal.radius,
        )
        image = Image.fromarray(array)
    return resize_crop(image, cfg.size, cfg.crop)


def _write_rejects(path: Path, rejected: dict[str, list[Problem]]) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", "kind", "message"])
        for row_id, problems in rejected.items():
            for problem in problems:
                writer.writerow([row_id, problem.file or "", problem.kind, problem.message])


def prepare(recipe: "PrepareJob", *, progress: bool = True) -> PrepareResult:
    """Validate, preprocess, annotate and split the recipe's dataset into ``prepare.output``."""
    from fairsynth.config import save_resolved

    data, cfg = recipe.data, recipe.prepare
    min_size = data.min_size or min(cfg.size)
    report = validate(data, min_size=min_size)
    if report.table_errors():
        raise DatasetInvalid("the dataset's table itself is invalid; fix it first", report)
    if not report.ok and not cfg.drop_invalid:
        raise DatasetInvalid(
            f"{len(report.invalid_ids())} rows have problems; fix them or pass --drop-invalid", report
        )
    rejected: dict[str, list[Problem]] = defaultdict(list)
    for problem in errors(report.problems):
        rejected[str(problem.row_id)].append(problem)
    valid = report.valid_records()
    if not valid:
        raise DatasetInvalid("no valid rows are left after dropping the invalid ones", report)

    key_salt = _settings_key(recipe)
    output = Path(cfg.output)
    prepared: list[Record] = []
    with staged_dir(output, resume=True) as staging:
        (staging / "images").mkdir(exist_ok=True)
        for record in tqdm(valid, desc="prepare", unit="img", disable=not progress):
            source = resolve_inside(report.root, record.image)
            key = hashlib.sha256((sha256_file(source) + key_salt).encode()).hexdigest()[:32]
            name = f"images/{key}.png"
            target = staging / name
            if target.exists():  # done by an earlier, interrupted run
                image = read_image(target).convert("RGB")
            else:
                image = _prepare_image(source, recipe)
                save_png(image, target)
            attributes = dict(record.attributes)
            attributes.setdefault("fst_group", group_of(record.attributes.get("fst")))
            attributes["source_file"] = record.image
            if cfg.estimate_fst:
                pixels = np.asarray(image)
                value = ita(pixels, skin_mask(pixels))
                attributes["ita"] = round(float(value), 3)
                attributes["fst_ita"] = fst_from_ita(value)
            prepared.append(Record(record.id, name, record.label, record.caption, attributes))

        assign_splits(prepared, cfg.split)
        if data.caption_template:
            for record in prepared:
                record.caption = render_caption(data.caption_template, record)

        # Images left by an interrupted run on other inputs or settings do not belong here.
        used = {r.image for r in prepared}
        for path in (staging / "images").iterdir():
            if f"images/{path.name}" not in used:
                path.unlink()
        counts = count_table(prepared)
        write_manifest(prepared, staging / "metadata.jsonl")
        counts.to_csv(buffer := io.StringIO())
        atomic_write_text(staging / "counts.csv", buffer.getvalue())
        notes = [p for p in report.problems if p.severity == "note"]
        atomic_write_text(staging / "notes.txt", "".join(f"{p}\n" for p in notes))
        if rejected:
            _write_rejects(staging / "rejects.csv", rejected)
        save_resolved(recipe, staging)
    return PrepareResult(output, prepared, counts, dict(rejected), notes)
