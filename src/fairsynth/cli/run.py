"""`fairsynth run`: the whole study of a recipe, each stage skipped when up to date."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app, console, print_verdict
from fairsynth.cli.stages import STAGE_RUNNERS


@app.command("run", context_settings={"allow_extra_args": False})
def run(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML."),
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. train.steps=600 generate.plan.total=120."),
    until: Optional[str] = typer.Option(None, "--until", help="Last stage to run (world, prepare, train, classifier, generate, evaluate, downstream, curve, ablate, report)."),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to run again even when up to date, or `all`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each stage's fingerprint and whether it would run, then stop."),
) -> None:
    """Run the whole study of a recipe: prepare, train, generate and filter, evaluate, downstream, report.

    A stage whose settings and inputs are unchanged since it last finished is skipped; one
    that was interrupted continues (training from its latest checkpoint, generation from its
    manifest); one whose settings changed runs again, and its earlier outputs are moved intact
    to <workdir>/stale/. The stages of a recipe are its `stages:` list, or every stage it
    configures. <workdir>/run-state.json records what ran with which fingerprint. The output
    ends with the study's verdict, the sentences that open its report.

    Example: fairsynth run recipes/fairskin_derm.yaml train.steps=600 --until generate
    """
    recipe = _load_recipe(recipe_path, list(overrides or []))
    if not dry_run:
        _hold_study(recipe.workdir, recipe.workdir)
    _run_study(recipe, until=until, force=force, dry_run=dry_run)


def _run_study(recipe, *, until: Optional[str] = None, force: Optional[str] = None, dry_run: bool = False) -> None:
    import time

    from fairsynth.study import StudyError, plan, run_study

    forced = [name.strip() for name in (force or "").split(",") if name.strip()]
    started = time.perf_counter()
    try:
        if dry_run:
            for stage, fingerprint, action in plan(recipe, forced):
                console.print(f"{stage.name:<11} {fingerprint}  {action}", markup=False)
            return
        done = run_study(recipe, STAGE_RUNNERS, force=forced, until=until,
                         log=lambda message: console.print(f"── {message}", markup=False, style="bold"))
    except StudyError as err:
        _fail(str(err))
    console.rule("done")
    console.print(
        "; ".join(f"{name}: {seconds:.0f} s" if action != "skip" else f"{name}: skipped" for name, action, seconds in done)
        + f"; total {time.perf_counter() - started:.0f} s. Outputs in {recipe.workdir}",
        markup=False,
    )
    print_verdict(Path(recipe.workdir))

