"""The truth, read per cell: what the world's judge sees in every generated image.

On the procedural world the truth is known, so a generated set is judged by a judge trained
on *true* renders of the same world (:func:`fairsynth.world.judge.shipped_judge`), never only
by the study's own real-data classifier (which is trained on the skewed data and is weakest
exactly on the rare cells). For every class × skin-type cell of a generated set this reads:

- ``delivered``: images in ``metadata.jsonl`` and the share whose class the judge reads as asked;
- ``candidates``: every candidate image (accepted or not) and the same share, so the filters'
  effect on fidelity shows (``accepted`` and ``rejected`` split it);
- ``fst_within_one``: the share of delivered images whose ITA skin type is within one type
  of the asked one;
- with a second judge (another architecture, trained on other renders with colour jitter and
  noise: :func:`fairsynth.world.judge.second_judge`): the share it reads as asked and the share
  both read as asked, so a reading that is an artefact of one network shows;
- with true renders of every cell (:func:`true_render_features`): ``in_support``, the share of
  delivered images whose nearest true render of *their own cell*, in the two judges' feature
  space, is as close as it is for 95 % of true renders (calibrated per cell, checked on held-out
  renders: ``in_support_true``). A judge reads *some* class in any
  image, a texture it never saw included; an image outside the support of its cell is not a
  faithful image of it, whatever class a judge reads.

The judges are ours, and fidelity must not be tuned to one judge: ``fairsynth`` reports each
judge's own held-out accuracy per cell beside its readings, and their weights are plain
safetensors files that anyone can replace with their own.
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
import torch
from torch import nn

from fairsynth.world.judge import derm_images, judge_classes, judge_features, read_skin_type, to_tensor

#: The rare skin types whose delivered images the headline reads.
RARE_TYPES = (5, 6)

#: The share of true renders that the in-support distance lets in (calibrated per cell).
SUPPORT_QUANTILE = 0.95


def _joint_features(judges: list[nn.Module], images: torch.Tensor) -> torch.Tensor:
    """Each judge's pooled features, L2-normalised, side by side.  # (N, sum of D)"""
    return torch.cat([nn.functional.normalize(judge_features(j, images), dim=1) for j in judges], dim=1)


def true_render_features(judges: list[nn.Module], skin_type_effect: float, per_cell: int = 30, seed: int = 90_001,
                         size: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """Features of true renders of every class × skin-type cell of the derm world, keyed
    ``"label|fst"``: a ``reference`` set, a ``calibration`` set (sets the distance that counts as
    inside) and a ``held_out`` set (checks it), ``per_cell`` images each, from three seeds that
    are not those of any judge's training or held-out renders, nor of a study's world."""
    out: dict[str, dict[str, list[torch.Tensor]]] = {}
    for offset, part in enumerate(("reference", "calibration", "held_out")):
        images, labels, fsts = derm_images(24 * per_cell, seed + offset, size=size, skin_type_effect=skin_type_effect)
        features = _joint_features(judges, to_tensor(images, size))
        for index, (label, fst) in enumerate(zip(labels, fsts)):
            out.setdefault(f"{label}|{fst}", {}).setdefault(part, []).append(features[index])
    return {cell: {part: torch.stack(rows) for part, rows in parts.items()} for cell, parts in out.items()}


def in_support(cell: dict[str, torch.Tensor], features: torch.Tensor, quantile: float = SUPPORT_QUANTILE) -> list[bool]:
    """Whether each row of ``features`` lies as close to the cell's reference renders as the
    ``quantile`` of its calibration renders do: nearest-neighbour distance to the reference set
    at most that quantile of the calibration set's. (Not the k-NN balls of improved precision:
    one outlying reference render has a ball wide enough to take in pixel noise of the right
    colours.)"""
    if len(features) == 0:
        return []
    reference = cell["reference"]
    limit = torch.quantile(torch.cdist(cell["calibration"], reference).min(dim=1).values, quantile)
    return (torch.cdist(features, reference).min(dim=1).values <= limit).tolist()


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
    line = (
        f"the world's judge (held-out accuracy {_percent(judge.get('held_out_accuracy'), '.1%')}, lowest cell "
        f"{_percent(judge.get('held_out_min_cell'), '.1%')}) reads the asked class in {_percent(truth.get('class_as_asked'))} "
        f"of the {truth.get('delivered')} delivered images, {_percent(truth.get('class_as_asked_V_VI'))} of the "
        f"{truth.get('delivered_V_VI')} on types V-VI (all candidates: {_percent(truth.get('candidates_class_as_asked'))}); "
        f"skin type within one: {_percent(truth.get('fst_within_one'))}"
    )
    second = truth.get("second_judge")
    if second:
        line += (
            f"; a second judge (another network, held-out accuracy {_percent(second.get('held_out_accuracy'), '.1%')}) "
            f"reads it in {_percent(truth.get('second_class_as_asked'))} ({_percent(truth.get('second_class_as_asked_V_VI'))} "
            f"on V-VI), both in {_percent(truth.get('both_as_asked'))} ({_percent(truth.get('both_as_asked_V_VI'))} on V-VI)"
        )
    if truth.get("in_support") is not None:
        line += (
            f"; inside the support of true renders of their cell: {_percent(truth.get('in_support'))} "
            f"({_percent(truth.get('in_support_V_VI'))} on V-VI; held-out true renders: "
            f"{_percent(truth.get('in_support_true'))})"
        )
    return line


def _judge_summary(report: dict[str, Any] | None, what: str) -> dict[str, Any]:
    held_out = (report or {}).get("held_out_accuracy_by_cell")
    config = (report or {}).get("config", {})
    return {
        "what": f"{what}, trained on balanced true renders of this world (skin_type_effect "
                f"{config.get('skin_type_effect', 'unknown')}, architecture {config.get('architecture', 'small_cnn')})",
        "held_out_accuracy": (report or {}).get("held_out_accuracy"),
        "held_out_min_cell": min(held_out.values()) if held_out else None,
    }


def read_generated(folder: str | Path, judge: nn.Module, judge_report: dict[str, Any] | None = None,
                   size: int = 64, *, second: tuple[nn.Module, dict[str, Any]] | None = None,
                   support: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """The judges' reading of a generated set's folder (``candidates.jsonl`` and ``metadata.jsonl``).

    ``second``: a second judge and its report (read beside the first); ``support``: the
    :func:`true_render_features` of both judges (``[judge, second judge]``, in that order) for the
    in-support share of every delivered image."""
    folder = Path(folder)
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    pixels = _load(folder, rows, size)
    tensor = to_tensor(pixels, size)
    read = judge_classes(judge, tensor) if rows else []
    read_second = judge_classes(second[0], tensor) if rows and second else [None] * len(rows)
    features = _joint_features([judge, second[0]], tensor) if rows and second and support else None
    keys = [f"{row['label']}|{parse_fst(row.get('fst'))}" for row in rows]
    supported: dict[int, bool] = {}
    if features is not None:
        for key in set(keys):
            index = [i for i, (k, row) in enumerate(zip(keys, rows)) if k == key and row.get("selected")]
            if key in support and index:
                supported.update(zip(index, in_support(support[key], features[index])))

    names = ("asked", "delivered", "accepted", "rejected", "fst", "second", "both", "support")
    cells: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {name: [] for name in names})
    rare: dict[str, list[bool]] = {name: [] for name in ("first", "second", "both", "support", "fst")}
    for index, (row, key, seen, seen_second) in enumerate(zip(rows, keys, read, read_second)):
        fst = parse_fst(row.get("fst"))
        cell = cells[key]
        hit = seen == row["label"]
        cell["asked"].append(hit)
        cell["accepted" if row.get("accepted") else "rejected"].append(hit)
        if not row.get("selected"):
            continue
        cell["delivered"].append(hit)
        is_rare = fst in RARE_TYPES
        if is_rare:
            rare["first"].append(hit)
        if second:
            hit_second = seen_second == row["label"]
            cell["second"].append(hit_second)
            cell["both"].append(hit and hit_second)
            if is_rare:
                rare["second"].append(hit_second)
                rare["both"].append(hit and hit_second)
        if index in supported:
            cell["support"].append(supported[index])
            if is_rare:
                rare["support"].append(supported[index])
        if fst is not None:
            close = abs(read_skin_type(pixels[index]) - fst) <= 1
            cell["fst"].append(close)
            if is_rare:
                rare["fst"].append(close)

    by_cell = {}
    for key in sorted(cells):
        cell = cells[key]
        label, fst = key.rsplit("|", 1)
        entry = {
            "label": label, "fst": None if fst == "None" else int(fst),
            "delivered": len(cell["delivered"]), "class_as_asked": _share(cell["delivered"]),
            "candidates": len(cell["asked"]), "candidates_class_as_asked": _share(cell["asked"]),
            "accepted_class_as_asked": _share(cell["accepted"]), "rejected_class_as_asked": _share(cell["rejected"]),
            "fst_within_one": _share(cell["fst"]),
        }
        if second:
            entry.update(second_class_as_asked=_share(cell["second"]), both_as_asked=_share(cell["both"]))
        if support is not None:
            entry["in_support"] = _share(cell["support"])
            if key in support:
                entry["in_support_true"] = _share(in_support(support[key], support[key]["held_out"]))
        by_cell[key] = entry

    every = [h for c in cells.values() for h in c["delivered"]]
    truth: dict[str, Any] = {
        "judge": _judge_summary(judge_report, "the world's lesion judge") | {"skin_type": "read by ITA"},
        "delivered": len(every),
        "class_as_asked": _share(every),
        "candidates_class_as_asked": _share([h for c in cells.values() for h in c["asked"]]),
        "class_as_asked_V_VI": _share(rare["first"]),
        "delivered_V_VI": len(rare["first"]),
        "fst_within_one": _share([h for c in cells.values() for h in c["fst"]]),
        "fst_within_one_V_VI": _share(rare["fst"]),
        "cells": by_cell,
    }
    if second:
        truth["second_judge"] = _judge_summary(second[1], "a second lesion judge (another network)")
        truth.update(
            second_class_as_asked=_share([h for c in cells.values() for h in c["second"]]),
            second_class_as_asked_V_VI=_share(rare["second"]),
            both_as_asked=_share([h for c in cells.values() for h in c["both"]]),
            both_as_asked_V_VI=_share(rare["both"]),
        )
    if support is not None:
        true_shares = [by_cell[k]["in_support_true"] for k in by_cell if by_cell[k].get("in_support_true") is not None]
        truth.update(
            in_support=_share([h for c in cells.values() for h in c["support"]]),
            in_support_V_VI=_share(rare["support"]),
            in_support_true=float(np.mean(true_shares)) if true_shares else None,
            in_support_quantile=SUPPORT_QUANTILE,
            in_support_what="share of delivered images whose nearest true render of their own cell (both judges' "
                            "L2-normalised pooled features) is as close as for 95 % of calibration renders of the "
                            "cell; in_support_true: the same share for held-out true renders",
        )
    return truth


def read_truth(folder: str | Path, skin_type_effect: float, size: int = 64) -> dict[str, Any]:
    """:func:`read_generated` with the shipped judges of the world with ``skin_type_effect``: the
    first judge, the second where the look has one, and the in-support share against true
    renders of every cell."""
    from fairsynth.world.judge import second_judge, shipped_judge

    judge, report = shipped_judge(skin_type_effect)
    second = second_judge(skin_type_effect)
    support = true_render_features([judge, second[0]], skin_type_effect, size=size) if second else None
    return read_generated(folder, judge, report, size, second=second, support=support)
