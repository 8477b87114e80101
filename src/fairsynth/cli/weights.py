"""`fairsynth weights list|fetch`: the feature extractors' weights files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import _fail, app, console, errors


weights_app = typer.Typer(
    help="Feature-extractor weights: what is on this machine, and fetching them on one with internet.\n\n"
    "Example: fairsynth weights list",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list() -> None:
    """Show every weights file the extractors use and where it was found (or that it is missing).

    Example: fairsynth weights list
    """
    from fairsynth.metrics.extractors import known_weights
    from fairsynth.metrics.extractors.weights import WEIGHTS_ENV, locate, weights_dir

    console.print(f"weights files (${WEIGHTS_ENV}={weights_dir() or 'not set'}):", markup=False)
    missing = 0
    for name, spec in known_weights().items():
        found = locate(spec)
        missing += found is None
        where = str(found) if found else "MISSING"
        console.print(f"  {name:<17} {spec.filename}  [{spec.what}, {spec.size}]\n  {'':<17} {where}", markup=False)
    if missing:
        console.print(f"{missing} missing; on a machine with internet: fairsynth weights fetch --dir DIR, then set {WEIGHTS_ENV}=DIR here")


@weights_app.command("fetch")
def weights_fetch(
    names: List[str] = typer.Argument(None, help="Weights to fetch (default: all); `fairsynth weights list` names them."),
    directory: Optional[Path] = typer.Option(
        None, "--dir", help="Folder to put them in (then set FAIRSYNTH_WEIGHTS to it); default: the standard caches."
    ),
) -> None:
    """Download every weights file the extractors use (needs internet).

    Example: fairsynth weights fetch --dir /data/fairsynth-weights
    """
    from fairsynth.metrics.extractors import known_weights
    from fairsynth.metrics.extractors.weights import fetch, is_offline

    specs = known_weights()
    unknown = sorted(set(names or []) - set(specs))
    if unknown:
        _fail(f"unknown weights {', '.join(unknown)}; available: {', '.join(specs)}")
    if is_offline():
        _fail("this machine is offline (an *_OFFLINE variable is set); run `fairsynth weights fetch` on one with internet")
    failed = 0
    for name in names or list(specs):
        try:
            path = fetch(specs[name], directory)
            console.print(f"{name}: {path}")
        except Exception as err:  # network errors come in many types; report each and go on
            failed += 1
            errors.print(f"[bold red]{name}:[/] {err}")
    if failed:
        raise typer.Exit(1)
