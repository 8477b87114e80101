"""The truth, read per cell: what the world's judge sees in every generated image.

On the procedural world the truth is known, so a generated set is judged by a judge trained
on *true* renders of the same world (:func:`fairsynth.world.judge.shipped_judge`), never only
by the study's own real-data classifier (which is trained on the skewed data and is weakest
exactly on the rare cells). For every class × skin-type cell of a generated set this reads:

- ``delivered``: images in ``metadata.jsonl`` and the share whose class the judge reads as asked;
- ``candidates``: every candidate image (accepted or not) and the same share, so the filters'
  effect on fidelity shows (``accepted`` and ``rejected`` split it);
- ``fst_within_one``: the share of delivered images whose ITA skin type is within one type
  of the asked one.

The judge is ours, and fidelity must not be tuned to one judge: ``fairsynth`` reports the
judge's own held-out accuracy per cell beside its readings, and its weights are a plain
safetensors file that anyone can replace with their own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fairsynth.data.fst import parse_fst
from fairsynth.data.images import read_image
from fairsynth.io import resolve_inside
from fairsynth.world.judge import LesionJudge, judge_classes, read_skin_type, to_tensor

#: The rare skin types whose delivered images the headline reads.
RARE_TYPES = (5, 6)


def _load(root: Path, rows: list[dict[str, Any]], size: int) -> np.ndarray:
    images = []
    for row in rows:
        image = read_image(resolve_inside(root, row["file_name"])).convert("RGB")
        images.append(np.asarray(image.resize((size, size), Image.Resampling.BICUBIC)))
    return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)


def _share(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def _percent(value: float | None, spec: str = ".0%") -> str:
    return "-" if value is None else format(value, spec)


def summary_line(truth: dict[str, Any]) -> str:
    """One sentence of a :func:`read_generated` reading, for the terminal and the report."""
    judge = truth.get("judge") or {}
    return (
        f"the world's judge (held-out accuracy {_percent(judge.get('held_out_accuracy'), '.1%')}, lowest cell "
        f"{_percent(judge.get('held_out_min_cell'), '.1%')}) reads the asked class in {_percent(truth.get('class_as_asked'))} "
        f"of the {truth.get('delivered')} delivered images, {_percent(truth.get('class_as_asked_V_VI'))} of the "
        f"{truth.get('delivered_V_VI')} on types V-VI (all candidates: {_percent(truth.get('candidates_class_as_asked'))}); "
        f"skin type within one: {_percent(truth.get('fst_within_one'))}"
    )


def read_generated(folder: str | Path, judge: LesionJudge, judge_report: dict[str, Any] | None = None,
                   size: int = 64) -> dict[str, Any]:
    """The judge's reading of a generated set's folder (``candidates.jsonl`` and ``metadata.jsonl``)."""
    folder = Path(folder)
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    pixels = _load(folder, rows, size)
    read = judge_classes(judge, to_tensor(pixels, size)) if rows else []
    cells: dict[str, dict[str, Any]] = defaultdict(lambda: {"asked": [], "delivered": [], "accepted": [], "rejected": [], "fst": []})
    rare: list[bool] = []
    rare_fst: list[bool] = []
    for row, seen in zip(rows, read):
        fst = parse_fst(row.get("fst"))
        cell = cells[f"{row['label']}|{fst}"]
        hit = seen == row["label"]
        cell["asked"].append(hit)
        cell["accepted" if row.get("accepted") else "rejected"].append(hit)
        if row.get("selected"):
            cell["delivered"].append(hit)
            if fst in RARE_TYPES:
                rare.append(hit)
    delivered = [row for row in rows if row.get("selected")]
    within = {}
    for row, image in zip(rows, pixels):
        fst = parse_fst(row.get("fst"))
        if not row.get("selected") or fst is None:
            continue
        close = abs(read_skin_type(image) - fst) <= 1
        cells[f"{row['label']}|{fst}"]["fst"].append(close)
        within.setdefault(fst, []).append(close)
        if fst in RARE_TYPES:
            rare_fst.append(close)
    by_cell = {}
    for key in sorted(cells):
        cell = cells[key]
        label, fst = key.rsplit("|", 1)
        by_cell[key] = {
            "label": label, "fst": None if fst == "None" else int(fst),
            "delivered": len(cell["delivered"]), "class_as_asked": _share(cell["delivered"]),
            "candidates": len(cell["asked"]), "candidates_class_as_asked": _share(cell["asked"]),
            "accepted_class_as_asked": _share(cell["accepted"]), "rejected_class_as_asked": _share(cell["rejected"]),
            "fst_within_one": _share(cell["fst"]),
        }
    held_out = (judge_report or {}).get("held_out_accuracy_by_cell")
    return {
        "judge": {
            "what": "the world's lesion judge, trained on balanced true renders of this world "
                    f"(skin_type_effect {(judge_report or {}).get('config', {}).get('skin_type_effect', 'unknown')}); "
                    "the skin type is read by ITA",
            "held_out_accuracy": (judge_report or {}).get("held_out_accuracy"),
            "held_out_min_cell": min(held_out.values()) if held_out else None,
        },
        "delivered": len(delivered),
        "class_as_asked": _share([h for c in cells.values() for h in c["delivered"]]),
        "candidates_class_as_asked": _share([h for c in cells.values() for h in c["asked"]]),
        "class_as_asked_V_VI": _share(rare),
        "delivered_V_VI": len(rare),
        "fst_within_one": _share([h for v in within.values() for h in v]),
        "fst_within_one_V_VI": _share(rare_fst),
        "cells": by_cell,
    }
