"""`fairsynth downstream compare`: every arm with the same seeds, one table, honest deltas.

Each (arm, seed) run is trained by :func:`fairsynth.downstream.train.train_run` and saved in
``<output>/<arm>/seed-<k>/``; a finished run is reused, so an interrupted comparison resumes.
The table gives, per headline number, the mean ± standard deviation over seeds of each arm,
and for every other arm its paired difference from the ``real`` arm (same seed, same test
images): mean and a 95 % t-interval over seeds (:data:`~fairsynth.downstream.paired.PAIRED_TEST`),
and beside it a 95 % bootstrap interval over test images of the same mean difference
(:data:`~fairsynth.downstream.paired.TEST_IMAGE_BOOTSTRAP`). A difference whose t-interval
contains zero is reported as *within noise* — with three seeds that is the usual verdict for
small effects, and the table says so rather than ranking arms by noise. Under every table one
line gives the number of seeds, the test images per group and the tests used.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.data import Sets, check_sets, load_sets
from fairsynth.downstream.paired import (
    PAIRED_TEST,
    TEST_IMAGE_BOOTSTRAP,
    describe,
    draw_runs,
    format_difference,
    images_by_group,
    paired_difference,
)
from fairsynth.downstream.train import CellGenerator, predict_saved_run, read_predictions, save_run, train_run
from fairsynth.io import atomic_write_text, remove_temporaries

#: Headline numbers of the table: (key, label, higher is better).
HEADLINES: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", True),
    ("balanced_accuracy", "balanced accuracy", True),
    ("macro_auroc", "macro AUROC", True),
    ("auroc.I-II", "AUROC I-II", True),
    ("auroc.III-IV", "AUROC III-IV", True),
    ("auroc.V-VI", "AUROC V-VI", True),
    ("auroc_gap", "AUROC gap (DDI groups)", False),
    ("auroc_gap_types", "AUROC gap (types I-VI)", False),
    ("equalized_odds_difference", "equalized-odds diff.", False),
    ("equal_opportunity_difference", "equal-opportunity diff.", False),
    ("demographic_parity_difference", "demographic-parity diff.", False),
    ("high_risk_sensitivity", "high-risk sensitivity", True),
)


def _value(entry: Any) -> float | None:
    """The point estimate of a report entry (a number or a {'estimate': ...} interval)."""
    if isinstance(entry, dict):
        entry = entry.get("estimate", entry.get("value"))
    return None if entry is None else float(entry)


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of one run's ``metrics`` (see :func:`~fairsynth.downstream.train.evaluate_predictions`)."""
    types = metrics["per_type"]
    grouped = metrics.get("per_ddi_group", types)
    out: dict[str, float | None] = {
        "accuracy": _value(types["accuracy"]),
        "balanced_accuracy": _value(types["balanced_accuracy"]),
        "macro_auroc": _value(types["macro_auroc"]),
        "auroc_gap": _value(grouped["auroc_gap"]),
        "auroc_gap_types": _value(types["auroc_gap"]),
    }
    for group, entry in grouped["group_auroc"].items():
        out[f"auroc.{group}"] = _value(entry)
    for name in ("equalized_odds_difference", "equal_opportunity_difference", "demographic_parity_difference"):
        out[name] = _value(types.get(name))
    sensitivity = types.get("high_risk_sensitivity")
    out["high_risk_sensitivity"] = _value(sensitivity.get("overall")) if isinstance(sensitivity, dict) else _value(sensitivity)
    return out


def _summary(values: list[float | None]) -> dict[str, Any]:
    defined = [v for v in values if v is not None and not math.isnan(v)]
    if not defined:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(defined)), "sd": float(np.std(defined, ddof=1)) if len(defined) > 1 else None, "n": len(defined)}


def paired_delta(arm: list[float | None], baseline: list[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean paired difference over seeds and its t-interval; ``within_noise`` when it holds 0."""
    pairs = [a - b for a, b in zip(arm, baseline) if a is not None and b is not None]
    if not pairs:
        return {"mean": None, "low": None, "high": None, "n": 0, "within_noise": None}
    mean = float(np.mean(pairs))
    if len(pairs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1, "within_noise": None}
    half = float(stats.t.ppf(0.5 + level / 2, len(pairs) - 1) * np.std(pairs, ddof=1) / math.sqrt(len(pairs)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(pairs), "within_noise": mean - half <= 0 <= mean + half}


def summarise(runs: dict[str, dict[int, dict[str, float | None]]], seeds: list[int]) -> dict[str, Any]:
    """Per arm and headline: mean ± sd over seeds; per non-real arm: paired delta from `real`."""
    table: dict[str, Any] = {}
    for key, label, higher in HEADLINES:
        row: dict[str, Any] = {"label": label, "higher_is_better": higher, "arms": {}, "delta_vs_real": {}}
        for arm, by_seed in runs.items():
            row["arms"][arm] = _summary([by_seed[s].get(key) for s in seeds if s in by_seed])
        if "real" in runs:
            base = [runs["real"][s].get(key) if s in runs["real"] else None for s in seeds]
            for arm, by_seed in runs.items():
                if arm != "real":
                    row["delta_vs_real"][arm] = paired_delta([by_seed[s].get(key) if s in by_seed else None for s in seeds], base)
        table[key] = row
    return table


def _cell(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "undefined"
    return f"{summary['mean']:.3f}" + (f" ± {summary['sd']:.3f}" if summary["sd"] is not None else "")


def render_table(table: dict[str, Any], arms: list[str], seeds: list[int], test_sets: dict[str, Any] | None = None,
                 oracle_share: dict[str, Any] | None = None, tests: str | None = None) -> str:
    """A Markdown table: arms' mean ± sd over seeds, then paired deltas from `real` with 95 % intervals;
    then one table per external test set, and the share of the oracle's effect the synthetic arms reach.
    ``tests`` (and each test set's ``tests``) is the line naming the seeds, test images and tests used."""
    sections = []
    if test_sets:
        sections.append("## In-distribution test split\n")
    sections.append(_render_one(table, arms, seeds, tests))
    for name, part in (test_sets or {}).items():
        groups = ", ".join(f"{g} {n}" for g, n in part["images_by_group"].items())
        sections.append(f"\n## External test set `{name}` ({part['images']} images: {groups})\n")
        sections.append(_render_one(part["table"], arms, seeds, (part.get("tests") or {}).get("description")))
    if oracle_share:
        from fairsynth.downstream.ceiling import render_shares

        sections.append("\n" + render_shares(oracle_share))
    return "\n".join(sections)


def _render_one(table: dict[str, Any], arms: list[str], seeds: list[int], tests: str | None = None) -> str:
    others = [arm for arm in arms if arm != "real"] if "real" in arms else []
    header = ["metric", *arms, *[f"{arm} − real" for arm in others]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in table.items():
        cells = [row["label"] + (" ↑" if row["higher_is_better"] else " ↓")]
        cells += [_cell(row["arms"][arm]) for arm in arms]
        cells += [format_difference(row["delta_vs_real"][arm]) for arm in others]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Seeds {', '.join(map(str, seeds))}; mean ± sd over seeds; deltas are paired by seed with a 95 % t-interval, "
        "'within noise' when the interval contains 0; 'test images': a 95 % bootstrap interval of the same mean delta "
        "over the test images. Selection on the validation split; test read once per run."
    )
    if tests:
        lines.append("")
        lines.append(f"Compared on: {tests}.")
    return "\n".join(lines) + "\n"


def add_test_image_intervals(
    table: dict[str, Any], output: Path, config: DownstreamConfig, test_set: str | None, label: str,
) -> dict[str, Any]:
    """Add to every delta of ``table`` its bootstrap interval over test images (``delta["test_images"]``),
    from the runs' saved predictions; returns the description of the comparison (seeds, test images
    per group, tests)."""
    file = "predictions.csv" if test_set is None else f"predictions-{test_set}.csv"
    predictions = {
        (arm, seed): read_predictions(output / arm / f"seed-{seed}" / file) for arm in config.arms for seed in config.seeds
    }
    ddi = config.group_by == "fst"
    draws = draw_runs(predictions, high_risk=config.high_risk, min_positives=config.min_positives,
                      resamples=config.bootstrap_resamples, ddi_groups=ddi)
    if "real" in config.arms:
        base = {seed: draws[("real", seed)] for seed in config.seeds}
        for key, row in table.items():
            for arm in config.arms:
                if arm != "real":
                    arm_draws = {seed: draws[(arm, seed)] for seed in config.seeds}
                    row["delta_vs_real"][arm]["test_images"] = paired_difference(arm_draws, base, key)["test_images"]
    groups = images_by_group(next(iter(predictions.values())), ddi)
    return {
        "seeds": list(config.seeds), "images_by_group": groups, "resamples": config.bootstrap_resamples,
        "paired_test": PAIRED_TEST, "test_image_bootstrap": TEST_IMAGE_BOOTSTRAP,
        "description": describe(config.seeds, groups, config.bootstrap_resamples, label),
    }


def compare(
    config: DownstreamConfig, output: str | Path, log: Callable[[str], None] = print, sets: Sets | None = None,
    write_table: bool = True, generator_for: Callable[[int], CellGenerator] | None = None,
) -> dict[str, Any]:
    """Run every arm × seed (reusing finished runs) and write ``compare.json`` and ``compare.md``.

    ``write_table=False`` trains and saves the runs only (``fairsynth downstream train``).
    ``generator_for(seed)`` gives the hybrid arm its image generator
    (:func:`fairsynth.generation.hybrid.recipe_generator`).
    """
    if "hybrid" in config.arms and generator_for is None:
        raise ValueError("downstream.arms has hybrid, which generates images during training: run it from a recipe "
                         "whose train.output holds a trained model (fairsynth downstream compare --config ...)")
    output = Path(output)
    remove_temporaries(output)  # writes a kill interrupted
    synthetic = config.synthetic if any(arm != "real" for arm in config.arms) else None
    if "oracle" in config.arms and not config.oracle:
        raise ValueError(
            "downstream.arms has oracle, whose training images are true images of the synthetic set's cells: only "
            "a procedural world can draw them (a recipe with a `world:` section), and this data is not one; "
            "drop oracle from downstream.arms"
        )
    if sets is None:
        sets = load_sets(config.real, synthetic, config.group_by, config.test_sets,
                         config.oracle if "oracle" in config.arms else None)
        for warning in check_sets(sets, config.real, synthetic):
            log(f"warning: {warning}")
    if write_table and len(config.seeds) < 3:
        log(f"warning: {len(config.seeds)} seed(s): a comparison needs at least 3 for its intervals over seeds to mean much")
    runs: dict[str, dict[int, dict[str, float | None]]] = {arm: {} for arm in config.arms}
    records: dict[str, dict[int, Any]] = {arm: {} for arm in config.arms}
    for arm in config.arms:
        for seed in config.seeds:
            folder = output / arm / f"seed-{seed}"
            done = folder / "metrics.json"
            record = json.loads(done.read_text()) if done.exists() else None
            if record is not None:
                missing = sorted(set(sets.external) - set(record.get("external") or {}))
                if missing:
                    log(f"{arm} seed {seed}: testing the saved model of {folder} on {', '.join(missing)}")
                    record = predict_saved_run(folder, record, sets, config)
                log(f"{arm} seed {seed}: reusing {folder}")
            else:
                log(f"{arm} seed {seed}: training")
                generate = generator_for(seed) if arm == "hybrid" and generator_for is not None else None
                record = train_run(sets, config, arm, seed, generate_cells=generate)
                save_run(record, folder)
                record = json.loads(done.read_text())
                log(f"{arm} seed {seed}: {record['seconds']:.0f} s, selected epoch {record['selected_epoch']}")
            runs[arm][seed] = headline(record["metrics"])
            records[arm][seed] = record
    table = summarise(runs, config.seeds)
    result = {"arms": config.arms, "seeds": config.seeds, "table": table, "runs": runs,
              "test_images": len(sets.test), "test_sets": {}}
    for name, samples in sets.external.items():
        external = {arm: {seed: headline(records[arm][seed]["external"][name]) for seed in config.seeds} for arm in config.arms}
        by_group = Counter(s.group for s in samples)
        result["test_sets"][name] = {
            "manifest": str(config.test_sets[name]), "images": len(samples),
            "images_by_group": {g: by_group[g] for g in sorted(by_group)},
            "table": summarise(external, config.seeds), "runs": external,
        }
    if write_table:
        result["tests"] = add_test_image_intervals(table, output, config, None, "the test split")
        for name in sets.external:
            part = result["test_sets"][name]
            part["tests"] = add_test_image_intervals(part["table"], output, config, name, name)
    if write_table and "oracle" in config.arms and "real" in config.arms:
        from fairsynth.downstream.ceiling import oracle_shares

        result["oracle_share"] = oracle_shares(output, config, [None, *sets.external])
    if write_table:  # compare.json last: its presence says the comparison is complete
        atomic_write_text(output / "compare.md", render_table(
            table, config.arms, config.seeds, result["test_sets"], result.get("oracle_share"),
            result["tests"]["description"]))
        atomic_write_text(output / "compare.json", json.dumps(result, indent=1) + "\n")
    return result
