"""`fairsynth sweep`: a recipe for every combination of a grid of settings, one comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app, console
from fairsynth.cli.stages import STAGE_RUNNERS


@app.command("sweep", context_settings={"allow_extra_args": False})
def sweep(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML."),
    overrides: List[str] = typer.Argument(None, help="Dotted overrides for every configuration, e.g. train.steps=300."),
    grid: List[str] = typer.Option(..., "--grid", "-g", help="NAME=V1,V2,...; NAME is method, rank, alpha, target, steps, lr or a dotted setting. Repeat for more axes."),
    arms: str = typer.Option("mixed", "--arms", help="Downstream arms trained per configuration (the real-only baseline is trained once)."),
    stages: str = typer.Option("train,generate,evaluate,downstream", "--stages", help="Stages run per configuration."),
    forgetting: bool = typer.Option(True, "--forgetting/--no-forgetting", help="Measure prompt-following on general prompts before and after fine-tuning."),
) -> None:
    """Run a recipe for every combination of a grid of settings and write one comparison table.

    The data, the real-data classifier and the real-only baseline are made once; each
    configuration is `fairsynth run` in its own process under <workdir>/sweep/<configuration>/
    (its peak memory is its own; run the sweep again to continue). The table (sweep/table.md,
    .csv, .json) has trainable parameters, adapter size, training time, peak memory, FD overall and
    per group, Vendi, memorisation rate, downstream accuracy and AUROC gap, and the forgetting check.

    Example: fairsynth sweep recipes/peft_comparison_medical.yaml --grid method=lora,dora,loha,full --grid rank=1,4,16 --grid target=unet,text_encoder,both
    """
    from fairsynth.study import StudyError, run_study
    from fairsynth.sweep import SweepError, parse_grid, run_sweep, shared_recipe

    recipe = _load_recipe(recipe_path, list(overrides or []))
    _hold_study(recipe.workdir, recipe.workdir)
    log = lambda message: console.print(message, markup=False)  # noqa: E731
    try:
        axes = parse_grid(grid)
        run_study(shared_recipe(recipe), STAGE_RUNNERS, log=lambda message: console.print(f"── {message}", markup=False, style="bold"))
        rows, notes = run_sweep(
            recipe, axes, arms=[a.strip() for a in arms.split(",") if a.strip()],
            stages=[s.strip() for s in stages.split(",") if s.strip()], forgetting=forgetting, log=log,
        )
    except (SweepError, StudyError) as err:
        _fail(str(err), code=1)
    from fairsynth.sweep import render_markdown

    console.print(render_markdown(rows), markup=False)
    for note in notes:
        console.print(f"- {note}", markup=False)
