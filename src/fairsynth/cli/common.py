"""What every command shares: the app, the two consoles, failing with one message, loading a recipe,
printing a dataset's problems, holding the study's lock, printing a study's verdict.

Commands register on :data:`app` from their own modules (``fairsynth.cli.<command>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fairsynth.config import ConfigError


app = typer.Typer(
    name="fairsynth",
    help="Balanced, audited synthetic images for small and skewed datasets.\n\n"
    "Start with `fairsynth demo`, which runs the whole job offline on the embedded default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_problems(problems, limit: int | None = None) -> None:
    shown = problems if limit is None else problems[:limit]
    for problem in shown:
        target = errors if problem.severity == "error" else console
        target.print(str(problem), markup=False)
    if limit is not None and len(problems) > limit:
        errors.print(f"... and {len(problems) - limit} more")


def _load_recipe(config: Optional[Path], overrides: list[str], default: Path | None = None):
    from fairsynth.data.images import set_max_image_pixels
    from fairsynth.recipe import load_recipe

    try:
        recipe = load_recipe(config or default, overrides)
    except ConfigError as err:
        _fail(str(err))
    set_max_image_pixels(recipe.data.max_image_pixels)  # every image this command opens is bounded by it
    return recipe


#: Exit status of a command that finds its study being written by another process.
EXIT_LOCKED = 4


#: Study locks this command holds, released when it ends (however it ends).
_held_locks: list[Path] = []


@app.callback()
def _command(ctx: typer.Context) -> None:
    # runs before every command; the study lock it may take is given back when the command ends
    ctx.call_on_close(_release_study)


def _release_study() -> None:
    from fairsynth.lock import release

    while _held_locks:
        release(_held_locks.pop())


def _hold_study(workdir, *writes) -> None:
    """One writer per study: hold <workdir>/.fairsynth.lock until this command ends (see fairsynth.lock).

    Taken where the command writes inside the workdir, by process 0 of an `accelerate launch` only.
    """
    from fairsynth.lock import StudyLocked, lock_study

    try:
        held = lock_study(workdir, [str(w) for w in writes if w],
                          log=lambda message: errors.print(f"warning: {message}", markup=False))
    except StudyLocked as err:
        _fail(str(err), code=EXIT_LOCKED)
    if held is not None:
        _held_locks.append(held)


def print_verdict(workdir: Path) -> None:
    """The study's verdict, the sentences that open its report, as the last lines of the output."""
    from fairsynth.report.collect import ReportInputError, collect
    from fairsynth.report.verdict import verdict

    try:
        sentences = verdict(collect(workdir))
    except ReportInputError as err:
        console.print(f"verdict: not available, {err}", markup=False)
        return
    console.rule("verdict")
    for sentence in sentences:
        console.print(sentence.text, markup=False)
