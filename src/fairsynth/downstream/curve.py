"""`fairsynth downstream curve`: how the mixed arm's effect grows with the synthetic:real ratio.

Sagers et al. (2023) report gains that saturate near 10 synthetic images per real one; Ktena et
al. (Nature Medicine 2024) report per-group results over amounts of synthetic data. Here, at each
ratio r of ``downstream.curve.ratios``:

1. the real training split is kept whole (N images) and round(r · N) synthetic images are drawn
   from the generated set (M images), per class × group cell in proportion to the set's own
   cells — its planned balance — each cell within one image of its proportional share
   (:func:`draw_synthetic`: a stratified order, seeded by the run's seed, of which each ratio
   takes a prefix, so a smaller ratio's images are among a larger one's);
2. the mixed arm trains on them with every seed (:mod:`fairsynth.downstream.points`: the
   comparison's own training code, one more arm run per ratio and seed, resumable); ratio 0 is
   the real-only arm, the baseline of every difference;
3. where the generated set is too small (r · N > M) the point takes all M images and says how far
   it got (its achieved ratio); larger ratios would train on the same images and are not run.
   Nothing is generated on demand: the output says how many images the largest ratio needs.

Outputs in ``downstream.output``: ``curve.json`` (every point, seed, test set and interval),
``curve.md`` (tables) and ``curve.png`` (the plot), and the runs in ``curve/ratio-<r>/seed-<k>/``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.data import Sample, Sets, check_sets, load_sets
from fairsynth.downstream.paired import (
    PAIRED_TEST,
    TEST_IMAGE_BOOTSTRAP,
    describe,
    draw_runs,
    format_difference,
    images_by_group,
    paired_difference,
    point,
)
from fairsynth.downstream.points import (
    Point,
    chosen_test_set,
    point_predictions,
    run_config,
    run_point,
    test_set_label,
    with_training,
)
from fairsynth.io import atomic_write_bytes, atomic_write_text, remove_temporaries


class CurveError(ValueError):
    """A curve that cannot be run as asked (the message says why)."""


#: Numbers of the curve beside each group's AUROC: (key, label, higher is better).
CURVE_NUMBERS: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", True),
    ("balanced_accuracy", "balanced accuracy", True),
    ("auroc_gap", "AUROC gap", False),
)


def _cell_seed(seed: int, cell: tuple[str, str]) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32("|".join(cell).encode()),)))


def synthetic_order(synthetic: list[Sample], seed: int) -> list[Sample]:
    """Every synthetic image in a seeded order whose every prefix holds each class × group cell in
    proportion to its size (within one image).

    Each cell's images are shuffled; the k-th of a cell of n images gets the position (k + u)/n,
    u uniform per cell (systematic sampling); sorting by position interleaves the cells.
    """
    cells: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in synthetic:
        cells[(sample.label, sample.group)].append(sample)
    keyed = []
    for cell in sorted(cells):
        members = cells[cell]
        rng = _cell_seed(seed, cell)
        offset = float(rng.uniform())
        for k, index in enumerate(rng.permutation(len(members))):
            keyed.append(((k + offset) / len(members), cell, members[index]))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [sample for _, _, sample in keyed]


def draw_synthetic(real_train: list[Sample], synthetic: list[Sample], ratio: float, seed: int) -> tuple[list[Sample], dict[str, Any]]:
    """The synthetic images of ratio ``ratio`` for the run of ``seed``, and their account."""
    asked = math.floor(ratio * len(real_train) + 0.5)
    chosen = synthetic_order(synthetic, seed)[: min(asked, len(synthetic))]
    cells: dict[str, dict[str, int]] = {}
    for sample in synthetic:
        cells.setdefault(f"{sample.label} | {sample.group}", {"available": 0, "drawn": 0})["available"] += 1
    for sample in chosen:
        cells[f"{sample.label} | {sample.group}"]["drawn"] += 1
    account = {
        "asked": asked, "drawn": len(chosen), "short": asked - len(chosen),
        "achieved_ratio": len(chosen) / len(real_train) if real_train else None,
        "cells": dict(sorted(cells.items())),
    }
    return chosen, account


def _ratio_name(ratio: float) -> str:
    return f"ratio-{ratio:g}"


def plan_points(config: DownstreamConfig, sets: Sets, output: Path) -> tuple[dict[float, Point], list[dict[str, Any]]]:
    """The points to run, by ratio, and every asked ratio's entry (run, short or not run)."""
    ratios = sorted({0.0, *map(float, config.curve.ratios)})
    settings = run_config(config, config.curve.epochs)
    n_real, available = len(sets.train), len(sets.synthetic)
    points: dict[float, Point] = {}
    entries: list[dict[str, Any]] = []
    exhausted_at: float | None = None
    for ratio in ratios:
        entry: dict[str, Any] = {"ratio": ratio, "asked_by_user": ratio in map(float, config.curve.ratios),
                                 "folder": str(output / "curve" / _ratio_name(ratio))}
        if exhausted_at is not None:
            entry.update(status="not run", synthetic_images=available, achieved_ratio=available / n_real,
                         note=f"the generated set ({available} images) ran out at ratio {exhausted_at:g}: this ratio "
                              f"would train on the same images (it needs {math.floor(ratio * n_real + 0.5)})")
            entries.append(entry)
            continue
        per_seed = {}
        account: dict[str, Any] = {}
        for seed in config.seeds:
            chosen, account = draw_synthetic(sets.train, sets.synthetic, ratio, seed)
            per_seed[seed] = with_training(sets, synthetic=chosen)
        arm = "real" if account["drawn"] == 0 else "mixed"
        status = "run" if account["short"] == 0 else "short"
        if status == "short":
            exhausted_at = ratio
            entry["note"] = (f"asked for {account['asked']} synthetic images, the generated set holds {available}: "
                             f"ratio {account['achieved_ratio']:.3g} reached")
        entry.update(status=status, arm=arm, synthetic_images=account["drawn"], asked_images=account["asked"],
                     achieved_ratio=account["achieved_ratio"], cells=account["cells"])
        info = {"ratio": ratio, "achieved_ratio": account["achieved_ratio"], "synthetic_images": account["drawn"],
                "real_images": n_real}
        points[ratio] = Point(f"ratio {ratio:g}", output / "curve" / _ratio_name(ratio), arm, per_seed, settings, info)
        entries.append(entry)
    return points, entries


def _numbers(estimates: dict[str, Any]) -> list[tuple[str, str, bool]]:
    groups = [key for key in estimates if key.startswith("auroc.")]
    return [CURVE_NUMBERS[0], CURVE_NUMBERS[1], *[(key, f"AUROC {key[6:]}", True) for key in groups], CURVE_NUMBERS[2]]


def summarise_test_set(points: dict[float, Point], config: DownstreamConfig, test_set: str | None) -> dict[str, Any]:
    """Per number and ratio: the point over seeds and its paired difference from ratio 0, on one test set."""
    predictions = point_predictions(points, config.seeds, test_set)
    draws = draw_runs(predictions, high_risk=config.high_risk, min_positives=config.min_positives,
                      resamples=config.bootstrap_resamples, ddi_groups=config.group_by == "fst")
    by_ratio = {ratio: {seed: draws[(ratio, seed)] for seed in config.seeds} for ratio in points}
    groups = images_by_group(next(iter(predictions.values())), config.group_by == "fst")
    numbers = _numbers(next(iter(draws.values())).estimates)
    out: dict[str, Any] = {
        "images_by_group": groups,
        "tests": {"seeds": list(config.seeds), "paired_test": PAIRED_TEST, "test_image_bootstrap": TEST_IMAGE_BOOTSTRAP,
                  "resamples": config.bootstrap_resamples,
                  "description": describe(config.seeds, groups, config.bootstrap_resamples, test_set_label(test_set))},
        "numbers": {},
    }
    for key, label, higher in numbers:
        values = []
        for ratio, runs in by_ratio.items():
            entry = {"ratio": ratio, "achieved_ratio": points[ratio].info["achieved_ratio"], **point(runs, key)}
            entry["delta_vs_real_only"] = None if ratio == 0 else paired_difference(runs, by_ratio[0.0], key)
            values.append(entry)
        out["numbers"][key] = {"label": label, "higher_is_better": higher, "values": values}
    return out


def curve(config: DownstreamConfig, output: str | Path, log: Callable[[str], None] = print, sets: Sets | None = None) -> dict[str, Any]:
    """Run (or reuse) every ratio × seed and write ``curve.json``, ``curve.md`` and ``curve.png``."""
    output = Path(output)
    headline_set = chosen_test_set(config, config.curve.test_set, "downstream.curve")
    if sets is None:
        if not config.synthetic or not Path(config.synthetic).is_file():
            raise CurveError(f"downstream.synthetic: {config.synthetic or '(not set)'} does not exist; the curve draws its "
                             "synthetic images from the generated set (run `fairsynth generate` first)")
        sets = load_sets(config.real, config.synthetic, config.group_by, config.test_sets)
        for warning in check_sets(sets, config.real, config.synthetic):
            log(f"warning: {warning}")
    if not sets.synthetic:
        raise CurveError(f"the generated set {config.synthetic} has no images: there is no curve to draw")
    if len(config.seeds) < 3:
        log(f"warning: {len(config.seeds)} seed(s): intervals over seeds need at least 3 to mean much")
    points, entries = plan_points(config, sets, output)
    # writes a kill interrupted: in the curve's runs, and its own files beside the comparison's
    remove_temporaries(output / "curve")
    remove_temporaries(output, recursive=False)
    for entry in entries:
        if entry.get("note"):
            log(f"ratio {entry['ratio']:g}: {entry['note']}")
    for ratio, pt in points.items():
        for seed in config.seeds:
            run_point(pt, seed, log)
    test_sets = [None, *sets.external]
    summaries = {test_set_label(name): summarise_test_set(points, config, name) for name in test_sets}
    largest = max(map(float, config.curve.ratios))
    needed = math.floor(largest * len(sets.train) + 0.5)
    short = any(entry["status"] != "run" for entry in entries)
    result = {
        "what": "the mixed arm at each synthetic:real ratio: every real training image plus ratio x N synthetic images "
                "from the generated set, every ratio with every seed; ratio 0 is the real-only arm",
        "ratios": [float(r) for r in config.curve.ratios],
        "seeds": list(config.seeds),
        "arm": "mixed (ratio 0: real)",
        "real_training_images": len(sets.train),
        "synthetic_available": len(sets.synthetic),
        "synthetic_draw": "per class x group cell in proportion to the generated set's cells (each within one image), "
                          "a seeded stratified order per run seed of which each ratio takes a prefix (nested across ratios)",
        "generated_on_demand": False,
        "shortfall": (
            f"the generated set holds {len(sets.synthetic)} images; ratio {largest:g} needs {needed}. fairsynth does not "
            "generate more on demand: raise generate.plan.total and run `fairsynth generate` again" if short else None
        ),
        "settings": {"epochs": config.curve.epochs or config.epochs, "mix": "every drawn image (min_real_share "
                     f"{config.mix.min_real_share:g}, curriculum {config.mix.curriculum_epochs} epochs)",
                     "backbone": config.backbone, "image_size": config.image_size},
        "points": entries,
        "headline_test_set": test_set_label(headline_set),
        "intervals": {
            "level": 0.95,
            "point_over_seeds": "mean over seeds, sd, and a Student t-interval of the mean (n - 1 df)",
            "point_over_test_images": f"{TEST_IMAGE_BOOTSTRAP}, of the mean over seeds",
            "difference": f"{PAIRED_TEST}; and {TEST_IMAGE_BOOTSTRAP}, per seed and for the mean",
        },
        "test_sets": summaries,
    }
    output.mkdir(parents=True, exist_ok=True)
    from fairsynth.downstream.plots import curve_figure

    atomic_write_bytes(output / "curve.png", curve_figure(result))
    atomic_write_text(output / "curve.md", render_curve(result))
    # curve.json last: its presence says the curve is complete
    atomic_write_text(output / "curve.json", json.dumps(result, indent=1, default=float, allow_nan=False) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def fmt_point(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "undefined"
    text = f"{entry['mean']:.3f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd']:.3f}"
    low, high = entry.get("seed_interval") or [None, None]
    if low is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _ratio_label(entry: dict[str, Any]) -> str:
    if entry["ratio"] == 0:
        return "0 (real only)"
    label = f"{entry['ratio']:g}"
    if entry.get("status") == "short":
        label += f" (reached {entry['achieved_ratio']:.3g})"
    return label


def render_curve(result: dict[str, Any]) -> str:
    """curve.md: what was run, the shortfall if any, and per test set (the headline one first) the
    values per ratio and the differences from real only, each with the line naming the tests."""
    lines = ["# Synthetic:real ratio curve", ""]
    lines.append(
        f"The mixed arm at each synthetic:real ratio: all {result['real_training_images']} real training images plus "
        f"ratio × {result['real_training_images']} synthetic images from the generated set "
        f"({result['synthetic_available']} images), drawn {result['synthetic_draw']}. Ratio 0 is the real-only arm; "
        f"{result['settings']['epochs']} epochs per run; seeds {', '.join(map(str, result['seeds']))}."
    )
    lines.append("")
    for entry in result["points"]:
        if entry.get("note"):
            lines.append(f"- ratio {entry['ratio']:g}: {entry['note']}")
    if result.get("shortfall"):
        lines += ["", f"**How far it got:** {result['shortfall']}."]
    order = [result["headline_test_set"], *[n for n in result["test_sets"] if n != result["headline_test_set"]]]
    run_entries = {e["ratio"]: e for e in result["points"]}
    for name in order:
        part = result["test_sets"][name]
        numbers = part["numbers"]
        lines += ["", f"## {name}{' (the plot)' if name == result['headline_test_set'] else ''}", ""]
        header = ["ratio", "synthetic images", *[n["label"] + (" ↑" if n["higher_is_better"] else " ↓") for n in numbers.values()]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        first = next(iter(numbers.values()))["values"]
        for index, value in enumerate(first):
            entry = run_entries[value["ratio"]]
            cells = [_ratio_label(entry), str(entry.get("synthetic_images", 0))]
            cells += [fmt_point(n["values"][index]) for n in numbers.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Mean ± sd over seeds [95 % t-interval over seeds].", ""]
        header = ["ratio", *[f"{n['label']} − real only" for n in numbers.values()]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for index, value in enumerate(first):
            if value["ratio"] == 0:
                continue
            cells = [_ratio_label(run_entries[value["ratio"]])]
            cells += [format_difference(n["values"][index]["delta_vs_real_only"]) for n in numbers.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Compared on: {part['tests']['description']}.", ""]
    return "\n".join(lines).rstrip() + "\n"
