"""The blinded, stratified rating folder and its key (``fairsynth review export``).

Allocation: the synthetic share of ``n`` is split equally over the strata (every
combination of ``by`` found in the synthetic set); the real share likewise over the same
strata among the real images. A stratum with too few images gives what it has and its
shortfall is reported, never silently filled from another stratum (that would unbalance the
protocol). Blinding: every image is re-encoded to a plain PNG (no text chunks, no EXIF) under
an id that is its position in a seeded shuffle, so neither the name nor the file tells its
source. The key lives outside the rater folder.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Sequence

from PIL import Image

from fairsynth.data.records import Record, read_manifest
from fairsynth.io import atomic_write_text, resolve_inside, staged_dir

#: Columns of the rating sheet, in order.
SHEET_COLUMNS = ("id", "rating", "real_or_synthetic", "comment")

INSTRUCTIONS = """Rating instructions
===================

This folder holds {n} images, some generated and some real, in random order. Rate each
image on its own, in `ratings.csv` or in `gallery.html` (open it in a browser; the button at
the bottom downloads your filled sheet as ratings.csv):

  rating             1 = clearly wrong or implausible ... 7 = indistinguishable from a real
                     {what}; judge anatomy, colour, texture and lesion morphology
  real_or_synthetic  your guess: real or synthetic (leave blank if you cannot tell)
  comment            optional

Do not try to find out which images are real: the file names and files carry no hint.
Return the filled ratings.csv. Each rater fills their own copy.
"""


class ReviewExportError(ValueError):
    """The review sample cannot be drawn as asked (a clear, user-facing message)."""


@dataclass
class ExportResult:
    """Where the folder and key went, what was drawn, and what fell short."""

    folder: Path
    key: Path
    synthetic: int
    real: int
    shortfall: dict[str, dict[str, int]] = field(default_factory=dict)  # {"synthetic"|"real": {stratum: missing}}
    notes: list[str] = field(default_factory=list)


def stratum(record: Record, by: Sequence[str]) -> str:
    values = []
    for name in by:
        value = record.label if name in ("label", "class") else record.attributes.get(name)
        values.append(f"{name}={value}")
    return ", ".join(values)


def allocate(total: int, strata: Sequence[str]) -> dict[str, int]:
    """``total`` split as equally as possible over ``strata`` (the first ones get the remainder)."""
    if not strata:
        return {}
    base, extra = divmod(total, len(strata))
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(sorted(strata))}


def draw(records: list[Record], quotas: dict[str, int], by: Sequence[str], rng: random.Random) -> tuple[list[Record], dict[str, int]]:
    """A seeded sample of ``quotas[stratum]`` records per stratum; returns it and the shortfall."""
    pools: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        pools[stratum(record, by)].append(record)
    chosen, shortfall = [], {}
    for name, quota in sorted(quotas.items()):
        pool = sorted(pools.get(name, []), key=lambda r: r.id)
        take = min(quota, len(pool))
        chosen += rng.sample(pool, take)
        if take < quota:
            shortfall[name] = quota - take
    return chosen, shortfall


def _plain_png(path: Path) -> bytes:
    """The image's pixels only: RGB, no text chunks, no EXIF, no ICC profile."""
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    clean = Image.new("RGB", pixels.size)
    clean.paste(pixels)
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return buffer.getvalue()


def _usable(records: list[Record], manifest: Path, which: str) -> list[Record]:
    out = []
    for record in records:
        if record.attributes.get("selected") is False or record.attributes.get("accepted") is False:
            continue  # a candidate the filters rejected
        out.append(record)
    if not out:
        raise ReviewExportError(f"{manifest}: no {which} image to draw from")
    return out


def export_review(
    synthetic_manifest: str | Path,
    real_manifest: str | Path,
    output: str | Path,
    *,
    key: str | Path | None = None,
    n: int = 500,
    real_share: float = 0.2,
    by: Sequence[str] = ("label", "fst"),
    real_split: str | None = "test",
    seed: int = 0,
    what: str = "dermoscopic image",
) -> ExportResult:
    """Write the rater folder ``output`` and the key (default ``<output>.key.json``, beside it).

    Real images come from ``real_split`` of the real manifest (default ``test``: images no
    generator was trained on), or every real row when the manifest has no such split.
    """
    synthetic_manifest, real_manifest, output = Path(synthetic_manifest), Path(real_manifest), Path(output)
    key = Path(key) if key is not None else output.parent / f"{output.name}.key.json"
    if key.resolve().is_relative_to(output.resolve()):
        raise ReviewExportError(f"the key {key} must not be inside the rater folder {output}: raters would see it")
    if output.exists() and any(output.iterdir()):
        raise ReviewExportError(f"{output} exists and is not empty; choose a new folder for the rating sheet")
    if not 0 < n:
        raise ReviewExportError(f"n must be positive, got {n}")
    if not 0.0 <= real_share < 1.0:
        raise ReviewExportError(f"real_share must be in [0, 1), got {real_share}")
    synthetic = _usable(read_manifest(synthetic_manifest), synthetic_manifest, "synthetic")
    real = read_manifest(real_manifest)
    if real_split is not None and any(r.attributes.get("split") == real_split for r in real):
        real = [r for r in real if r.attributes.get("split") == real_split]
        split_note = f"real images from the {real_split!r} split"
    else:
        split_note = "real images from every split (the manifest has no test split)"
    real = _usable(real, real_manifest, "real") if real_share > 0 else []

    rng = random.Random(seed)
    strata = sorted({stratum(r, by) for r in synthetic})
    n_real = round(n * real_share)
    chosen_synthetic, short_synthetic = draw(synthetic, allocate(n - n_real, strata), by, rng)
    chosen_real, short_real = draw(real, allocate(n_real, strata), by, rng) if n_real else ([], {})
    items = [("synthetic", r, synthetic_manifest.parent) for r in chosen_synthetic]
    items += [("real", r, real_manifest.parent) for r in chosen_real]
    rng.shuffle(items)

    width = max(4, len(str(len(items))))
    entries = []
    with staged_dir(output) as staging:
        (staging / "images").mkdir()
        for index, (source, record, root) in enumerate(items, 1):
            image_id = f"{index:0{width}d}"
            path = resolve_inside(root, record.image)
            (staging / "images" / f"{image_id}.png").write_bytes(_plain_png(path))
            entries.append({
                "id": image_id, "source": source, "file": str(path), "record_id": record.id, "label": record.label,
                "stratum": stratum(record, by), **{name: record.attributes.get(name) for name in by if name not in ("label", "class")},
                "seed": record.attributes.get("seed"),
            })
        sheet = io.StringIO()
        writer = csv.writer(sheet)
        writer.writerow(SHEET_COLUMNS)
        for entry in entries:
            writer.writerow([entry["id"], "", "", ""])
        (staging / "ratings.csv").write_text(sheet.getvalue(), encoding="utf-8")
        (staging / "gallery.html").write_text(gallery_html([e["id"] for e in entries], what), encoding="utf-8")
        (staging / "README.txt").write_text(INSTRUCTIONS.format(n=len(entries), what=what), encoding="utf-8")
    key_data = {
        "synthetic_manifest": str(synthetic_manifest), "real_manifest": str(real_manifest), "by": list(by),
        "seed": seed, "n": n, "real_share": real_share, "notes": [split_note],
        "shortfall": {"synthetic": short_synthetic, "real": short_real}, "images": entries,
    }
    key.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key, json.dumps(key_data, indent=1, default=str) + "\n")
    notes = [split_note]
    if short_synthetic or short_real:
        notes.append("strata with too few images gave what they had (see shortfall)")
    return ExportResult(output, key, len(chosen_synthetic), len(chosen_real),
                        {"synthetic": short_synthetic, "real": short_real}, notes)


def gallery_html(ids: Sequence[str], what: str) -> str:
    """One offline page: a card per image with the 1-7 scale, the real/synthetic guess and a comment;
    a button writes the answers as ratings.csv (nothing leaves the browser)."""
    cards = []
    for image_id in ids:
        scale = "".join(
            f'<label><input type="radio" name="r{image_id}" value="{v}">{v}</label>' for v in range(1, 8)
        )
        guess = "".join(
            f'<label><input type="radio" name="g{image_id}" value="{v}">{v}</label>' for v in ("real", "synthetic")
        )
        cards.append(
            f'<div class="card" data-id="{escape(image_id)}"><img src="images/{escape(image_id)}.png" alt="image {escape(image_id)}">'
            f'<div class="id">{escape(image_id)}</div><div>{scale}</div><div>{guess}</div>'
            f'<input type="text" name="c{escape(image_id)}" placeholder="comment"></div>'
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Image rating</title>
<style>body{{font:14px system-ui,sans-serif;margin:20px}}.card{{display:inline-block;width:230px;margin:6px;padding:8px;
border:1px solid #ccc;border-radius:6px;vertical-align:top}}.card img{{width:224px;height:224px;image-rendering:pixelated}}
.id{{font-weight:bold}}label{{margin-right:4px;font-size:12px}}input[type=text]{{width:95%}}</style></head><body>
<h1>Rate each image</h1><p>1 = clearly wrong or implausible &hellip; 7 = indistinguishable from a real {escape(what)}.
Guess whether each is real or synthetic. Your answers stay in this browser until you press the button.</p>
{''.join(cards)}
<p><button id="save">Download ratings.csv</button></p>
<script>
document.getElementById("save").addEventListener("click", function () {{
  var lines = ["id,rating,real_or_synthetic,comment"];
  document.querySelectorAll(".card").forEach(function (card) {{
    var id = card.dataset.id;
    var pick = function (name) {{ var c = card.querySelector("input[name='" + name + "']:checked"); return c ? c.value : ""; }};
    var comment = card.querySelector("input[type=text]").value.replace(/"/g, '""');
    lines.push([id, pick("r" + id), pick("g" + id), '"' + comment + '"'].join(","));
  }});
  var link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\\n") + "\\n"], {{type: "text/csv"}}));
  link.download = "ratings.csv";
  link.click();
}});
</script></body></html>
"""
