"""`fairsynth evaluate`: measure synthetic images against real ones, overall and per group."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app, console, errors
from fairsynth.config import ConfigError
from fairsynth.registry import UnknownNameError


@app.command(context_settings={"allow_extra_args": False})
def evaluate(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. evaluate.bootstrap=200 evaluate.min_group_size=20."),
    real: Optional[Path] = typer.Option(None, "--real", help="Manifest of the real images (default <workdir>/prepared/metadata.jsonl)."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Manifest of the synthetic images; captions are the prompts."),
    by: Optional[str] = typer.Option(None, "--by", help="Comma-separated group fields: class (the label), fst, fst_group, any attribute."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metric@extractor, e.g. fd@inception,kid,prdc@dinov2."),
    extractor: Optional[str] = typer.Option(None, "--extractor", help="One extractor for every metric (`random`: tests only, labelled)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default <workdir>/evaluation)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
) -> None:
    """Measure synthetic images against real ones, overall and for every group.

    How close (FID, KID), how faithful and varied (precision, recall, density, coverage, Vendi,
    intra-class diversity), how well they follow their prompts (CLIP score) and how original
    (memorisation), with bootstrap intervals; every number is recorded with its extractor,
    weights hash and resize policy.

    Writes evaluation.json, evaluation.csv, memorisation_<extractor>.csv and config.yaml.

    Example: fairsynth evaluate --real runs/derm/prepared/metadata.jsonl --synthetic runs/derm/generated/metadata.jsonl --by fst,class
    """
    extra = list(overrides or [])
    if extractor is not None:
        extra.append(f"evaluate.extractor={extractor}")
    for key, value in (("by", by), ("metrics", metrics)):
        if value is not None:
            items = [item.strip() for item in value.split(",") if item.strip()]
            extra.append(f"evaluate.{key}=[{', '.join(items)}]")
    recipe = _load_recipe(config, extra)
    # Paths are set as given (not parsed as YAML, where a folder named 2024 would become a number).
    for key, value in (("real", real), ("synthetic", synthetic), ("output", output)):
        if value is not None:
            setattr(recipe.evaluate, key, str(value))
    _hold_study(recipe.workdir, recipe.evaluate.output, recipe.evaluate.cache_dir)
    _run_evaluate(recipe.evaluate)


def _run_evaluate(cfg) -> None:
    from fairsynth.io import UnsafePathError
    from fairsynth.metrics.extractors import WeightsNotFound
    from fairsynth.metrics.features import NonFiniteFeatures
    from fairsynth.metrics.evaluate import EvaluationError, evaluate as run_evaluation

    try:
        result = run_evaluation(cfg, progress=lambda message: console.print(message, markup=False))
    except WeightsNotFound as err:
        _fail(str(err))
    except NonFiniteFeatures as err:
        _fail(str(err), code=1)
    except (EvaluationError, ConfigError, UnsafePathError, UnknownNameError, FileNotFoundError, ValueError) as err:
        _fail(str(err).strip("'\""))
    for warning in result.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    print_results(result.results)
    console.print(f"saved {result.output / 'evaluation.json'} and {result.output / 'evaluation.csv'}")


def _label(row: dict) -> str:
    label = row["display"] if row["value_name"] == row["metric"] else f"{row['value_name'].replace('_', ' ')} ({row['extractor']})"
    arrow = {True: " ↑", False: " ↓"}.get(row.get("higher_is_better"), "")
    # escaped: rich would read "[real]" as a style tag and drop it
    return rich_escape(f"{label}{arrow}{' [real]' if row['on'] == 'real' else ''}")


def print_results(results: list[dict]) -> None:
    """The overall values with intervals, then one compact table per grouping field (values only;
    intervals and the combined groups are in evaluation.csv)."""
    shown = [r for r in results if r.get("higher_is_better") is not None]
    overall = Table(title="overall", title_justify="left")
    for column in ("metric", "value", "95% interval", "n real", "n synthetic"):
        overall.add_column(column, justify="left" if column == "metric" else "right", no_wrap=column == "metric")
    for row in shown:
        if row["group_by"] != "overall":
            continue
        value = f"{row['value']:.4g}" if row.get("value") is not None else (row.get("undefined") or "undefined")
        interval = f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}]" if row.get("ci_low") is not None else (row.get("ci_note") or "")
        overall.add_row(_label(row), value, interval, str(row.get("n_real") or ""), str(row.get("n_synthetic") or ""))
    console.print(overall)
    fields = [f for f in dict.fromkeys(r["group_by"] for r in shown) if f != "overall" and " x " not in f]
    for field in fields:
        rows = [r for r in shown if r["group_by"] == field]
        groups = list(dict.fromkeys(r["group"] for r in rows))
        view = Table(title=f"by {field} (– : undefined, group too small)", title_justify="left")
        view.add_column("metric", no_wrap=True)
        for group in groups:
            view.add_column(group, justify="right")
        labels = list(dict.fromkeys(_label(r) for r in rows))
        cells = {(_label(r), r["group"]): r for r in rows}
        for label in labels:
            found = [cells.get((label, g)) for g in groups]
            view.add_row(label, *("" if r is None else f"{r['value']:.3g}" if r.get("value") is not None else "–" for r in found))
        console.print(view)
    if any(" x " in r["group_by"] for r in shown):
        console.print("combined groups (e.g. class x skin type): see evaluation.csv")
