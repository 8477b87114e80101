"""`fairsynth review export`: the blinded rating folder and, apart from it, its key.

    <output>/                    handed to the raters
      images/0001.png ...        re-encoded: RGB pixels only, no EXIF, text chunks or ICC
                                 profile, one common size
      ratings.csv                id, rating (1-7), real_or_synthetic, comment (blank)
      gallery.html               offline page: a card per image, the 1-7 scale, a download button
      README.txt                 the rater instructions
    <output>.key.json            id -> source (real/synthetic), file, diagnosis, skin type, seed

Blinding: the ids are positions in a seeded shuffle, every image is re-encoded the same way
and fitted to the same size, and every text in the folder is built from the ids alone. The
key is refused inside the rater folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from fairsynth.data.images import image_size, read_image, upright
from fairsynth.data.records import Record, read_manifest
from fairsynth.io import atomic_write_text, resolve_inside, sha256_file, staged_dir
from fairsynth.review.config import ExportConfig
from fairsynth.review.sample import ReviewExportError, allocate, check_fields, draw, eligible, field_value, stratum
from fairsynth.review.sheet import blank_sheet, gallery_html, instructions


@dataclass
class ExportResult:
    """Where the folder and key went, what was drawn, and what fell short."""

    folder: Path
    key: Path
    synthetic: int
    real: int
    #: {"synthetic" | "real": {stratum: images missing from its quota}}
    shortfall: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plain_png(path: Path, size: tuple[int, int] | None) -> bytes:
    """The image's pixels only (EXIF orientation applied), fitted to ``size``: a PNG with no metadata."""
    pixels = upright(read_image(path)).convert("RGB")
    if size is not None and pixels.size != size:
        pixels = ImageOps.fit(pixels, size, method=Image.Resampling.LANCZOS)
    clean = Image.frombytes("RGB", pixels.size, pixels.tobytes())  # a fresh image: no info dict carried over
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return buffer.getvalue()


def _image_size(path: Path) -> tuple[int, int]:
    return image_size(path, oriented=True)


def _check_destinations(cfg: ExportConfig) -> tuple[Path, Path]:
    output, key = Path(cfg.output), cfg.key_path
    resolved = output.resolve()
    if key.resolve() == resolved or key.resolve().is_relative_to(resolved):
        raise ReviewExportError(f"the key {key} must not be inside the rater folder {output}: the raters would see it")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ReviewExportError(f"{output} exists and is not an empty folder; choose a new folder for the raters")
    if key.exists():
        raise ReviewExportError(
            f"the key {key} already exists (the key of an earlier export?); move it away or give another --key"
        )
    return output, key


def export_review(cfg: ExportConfig) -> ExportResult:
    """Draw the sample, write the rater folder ``cfg.output`` and the key ``cfg.key_path``."""
    output, key = _check_destinations(cfg)
    synthetic_manifest, real_manifest = Path(cfg.synthetic), Path(cfg.real)
    notes: list[str] = []

    # 1. what may be drawn: synthetic images that passed the filters, real images of the chosen split
    synthetic = eligible(read_manifest(synthetic_manifest))
    if not synthetic.records:
        raise ReviewExportError(f"{synthetic_manifest}: no synthetic image passed the filters; nothing to review")
    check_fields(synthetic.records, cfg.by, str(synthetic_manifest))
    notes.append(synthetic.note("synthetic"))
    real_records: list[Record] = []
    n_real = round(cfg.n * cfg.real_share)
    if n_real:
        real_records = eligible(read_manifest(real_manifest)).records
        if cfg.real_split and any(r.split == cfg.real_split for r in real_records):
            real_records = [r for r in real_records if r.split == cfg.real_split]
            notes.append(f"real: images of the {cfg.real_split!r} split only ({len(real_records)})")
        else:
            notes.append(f"real: every split ({len(real_records)} images; the manifest has no {cfg.real_split!r} split)")
        if not real_records:
            raise ReviewExportError(f"{real_manifest}: no real image to mix in (or set real_share to 0)")

    # 2. equal quotas per stratum, a seeded draw, a seeded shuffle
    rng = random.Random(cfg.seed)
    strata = sorted({stratum(r, cfg.by) for r in synthetic.records})
    quotas_synthetic = allocate(cfg.n - n_real, strata)
    if len(strata) > cfg.n - n_real:
        notes.append(f"{len(strata)} strata but {cfg.n - n_real} synthetic images: some strata get none (raise n)")
    chosen_synthetic, short_synthetic = draw(synthetic.records, quotas_synthetic, cfg.by, rng)
    chosen_real, short_real = draw(real_records, allocate(n_real, strata), cfg.by, rng) if n_real else ([], {})
    if short_synthetic or short_real:
        missing = sum(short_synthetic.values()) + sum(short_real.values())
        notes.append(f"{missing} images short of n = {cfg.n}: strata with too few images gave what they had "
                     f"(never filled from other strata; see shortfall)")
    items: list[tuple[str, Record, Path]] = [("synthetic", r, synthetic_manifest.parent) for r in chosen_synthetic]
    items += [("real", r, real_manifest.parent) for r in chosen_real]
    rng.shuffle(items)
    paths = [resolve_inside(root, record.image) for _, record, root in items]  # manifest paths stay inside their root
    for path in paths:
        if not path.is_file():
            raise ReviewExportError(f"image {path} named in a manifest does not exist")

    # 3. one common size, so that size does not tell the source
    size: tuple[int, int] | None
    if cfg.resolution is not None:
        size = (cfg.resolution, cfg.resolution)
    else:
        sizes = Counter(_image_size(p) for (source, _, _), p in zip(items, paths) if source == "synthetic")
        size = sizes.most_common(1)[0][0] if sizes else None
    resized = sum(1 for p in paths if size is not None and _image_size(p) != size)
    if resized:
        notes.append(f"{resized} images fitted to {size[0]}x{size[1]} px (centre crop and resize) so that all share one size")

    # 4. the rater folder, built aside and moved into place, then the key
    width = max(4, len(str(len(items))))
    ids = [f"{index:0{width}d}" for index in range(1, len(items) + 1)]
    entries: list[dict[str, Any]] = []
    digest = hashlib.sha256()
    with staged_dir(output) as staging:
        (staging / "images").mkdir()
        for image_id, (source, record, root), path in zip(ids, items, paths):
            data = plain_png(path, size)
            digest.update(data)
            (staging / "images" / f"{image_id}.png").write_bytes(data)
            entries.append({
                "id": image_id, "source": source, "file": str(path), "file_name": record.image,
                "record_id": record.id, "label": record.label, "stratum": stratum(record, cfg.by),
                **{name: field_value(record, name) for name in cfg.by if name not in ("label", "class")},
                "fst": record.attributes.get("fst"), "seed": record.attributes.get("seed"),
            })
        (staging / "ratings.csv").write_text(blank_sheet(ids), encoding="utf-8")
        # the browser's storage key is a hash of the pixels: distinct per folder, and it says nothing of the sources
        storage_key = f"fairsynth-review-{digest.hexdigest()[:16]}"
        (staging / "gallery.html").write_text(gallery_html(ids, cfg.what, storage_key), encoding="utf-8")
        (staging / "README.txt").write_text(instructions(len(ids), cfg.what), encoding="utf-8")
        shortfall = {"synthetic": short_synthetic, "real": short_real}
        key_data = {
            "what": "fairsynth review key: keep it from the raters",
            "config": asdict(cfg),
            "manifests": {"synthetic": {"path": str(synthetic_manifest), "sha256": sha256_file(synthetic_manifest)},
                          "real": {"path": str(real_manifest), "sha256": sha256_file(real_manifest)} if n_real else None},
            "image_size": list(size) if size else None,
            "quotas": {"synthetic": quotas_synthetic, "real": allocate(n_real, strata) if n_real else {}},
            "shortfall": shortfall,
            "notes": notes,
            "images": entries,
        }
        atomic_write_text(key, json.dumps(key_data, indent=1, default=str) + "\n")
    return ExportResult(output, key, len(chosen_synthetic), len(chosen_real), shortfall, notes)
