"""`fairsynth generate`: the balanced synthetic set, filtered, delivered to its targets (or its plan, --dry-run).

:func:`_guarded` and :func:`_print_delivery` are shared with `fairsynth filter` and the study's generate stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from fairsynth.cli.common import EXIT_LOCKED, _fail, _hold_study, _load_recipe, app, console, errors
from fairsynth.config import ConfigError
from fairsynth.registry import UnknownNameError


@app.command(context_settings={"allow_extra_args": False})
def generate(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. generate.plan.total=600 generate.steps=20."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (cells, targets, UNet evaluations, time) and stop."),
) -> None:
    """Generate the balanced synthetic set the recipe plans, filter it, and deliver exactly the targets.

    Writes generate.output (default <workdir>/generated): images/ and metadata.jsonl (the
    delivered set, an imagefolder), not_selected/ and candidates.jsonl (every image with its
    check values and verdicts), report.json (shortfall per cell, memorised images). Run the same
    command again after an interruption to continue. Exits 1 when a cell falls short of its target.

    Example: fairsynth generate --config recipes/fairskin_derm.yaml generate.plan.total=600 --dry-run

    Several processes, one output folder (--multi_gpu also on a CPU-only machine, where accelerate's
    --cpu would start a single process):
    accelerate launch --multi_gpu --num_processes 4 -m fairsynth.cli generate --config recipe.yaml
    """
    recipe = _load_recipe(config, list(overrides or []))
    if dry_run:
        _run_dry_run(recipe)
        return
    _hold_study(recipe.workdir, recipe.generate.output, recipe.filter.cache_dir)
    from fairsynth.generation.run import generate as run_generate

    result = _guarded(lambda: run_generate(recipe, log=lambda m: console.print(m, markup=False)))
    if result.report:  # process 0
        _print_delivery(result, "generated")


def _guarded(action):
    """Run a generation step, turning bad input into one clear message (exit 2)."""
    from fairsynth.filters import FilterError
    from fairsynth.generation.plan import PlanError
    from fairsynth.generation.writer import DiskFullError, GenerationError
    from fairsynth.io import UnsafePathError
    from fairsynth.lock import StudyLocked
    from fairsynth.metrics.extractors import WeightsNotFound
    from fairsynth.methods import MethodError

    try:
        return action()
    except DiskFullError as err:
        _fail(str(err), code=3)
    except StudyLocked as err:
        _fail(str(err), code=EXIT_LOCKED)
    except (PlanError, GenerationError, FilterError, WeightsNotFound, MethodError, ConfigError, UnsafePathError,
            UnknownNameError, FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip("'\""))


def _run_dry_run(recipe) -> None:
    from fairsynth.generation.run import dry_run

    plan, rows = _guarded(lambda: dry_run(recipe))
    view = Table(title=f"plan: {plan.total} images in {len(plan.cells)} cells (oversample {plan.oversample}x, "
                 f"at most {plan.max_attempts}x)", title_justify="left")
    for column in ("cell", "real", "target", "1st round", "cap", "UNet evals", "time"):
        view.add_column(column, justify="left" if column == "cell" else "right", overflow="fold")
    for row in rows:
        time_text = "?" if row["seconds"] is None else f"{row['seconds'] / 3600:.2f} h"
        view.add_row(row["cell"], str(row["real"]), str(row["target"]), str(row["first_round"]), str(row["max_attempts"]),
                     f"{row['unet_evaluations']:,}", time_text, style="bold" if row["cell"] == "total" else None)
    console.print(view)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    if rows[-1]["seconds"] is None:
        console.print("time: unknown until measured; a run records seconds per UNet evaluation in report.json "
                      "(or set generate.seconds_per_unet_eval). 1st round: candidates before filtering (oversample); "
                      "cap: most candidates per cell (max_attempts)", markup=False)


def _print_delivery(result, verb: str, fail_on_shortfall: bool = True) -> None:
    view = Table(title=f"{verb}: {sum(c.selected for c in result.cells)} of {result.plan.total} images delivered", title_justify="left")
    for column in ("cell", "target", "delivered", "generated", "accepted", "rejected by"):
        view.add_column(column, justify="left" if column in ("cell", "rejected by") else "right", no_wrap=column == "cell")
    for cell in result.cells:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(cell.rejected_by.items()))
        view.add_row(cell.cell, str(cell.target), str(cell.selected), str(cell.generated), str(cell.accepted), rejected,
                     style="bold red" if cell.shortfall else None)
    console.print(view)
    for warning in result.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    memorised = result.report.get("memorised") or []
    for item in memorised[:10]:
        console.print(f"memorised (rejected): {item['image']} copies training image {item['copies']}", markup=False)
    console.print(f"saved {result.output / 'metadata.jsonl'} and {result.output / 'report.json'}", markup=False)
    if result.shortfall:
        short = ", ".join(f"{cell} {n}" for cell, n in result.shortfall.items())
        if not fail_on_shortfall:
            errors.print(f"warning: short of the target in {len(result.shortfall)} cell(s): {short}", markup=False)
            return
        _fail(f"short of the target in {len(result.shortfall)} cell(s) after the attempt cap: {short}; raise "
              "generate.plan.max_attempts, relax filter.options, or accept fewer (report.json has the details)", code=1)
