"""`fairsynth ls`: every registry (readers, methods, filters, metrics, extractors)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from fairsynth.cli.common import _fail, app, console
from fairsynth.registry import ALL_REGISTRIES


@app.command("ls")
def list_registries(kind: Optional[str] = typer.Argument(None, help="Only this registry (e.g. readers).")) -> None:
    """List every registry: dataset readers, fine-tuning methods, filters, metrics.

    Example: fairsynth ls readers
    """
    _import_registries()
    kinds = [kind] if kind else sorted(ALL_REGISTRIES)
    for name in kinds:
        if name not in ALL_REGISTRIES:
            _fail(f"unknown registry {name!r}; available: {', '.join(sorted(ALL_REGISTRIES))}")
        table = Table(title=name, title_justify="left", show_header=False)
        table.add_column("name", style="bold cyan")
        table.add_column("what it is")
        for entry in ALL_REGISTRIES[name].entries():
            table.add_row(entry.name, entry.help)
        console.print(table)


def _import_registries() -> None:
    """Import the modules that own registries, so that `ls` sees every one."""
    import fairsynth.data.readers  # noqa: F401
    import fairsynth.filters  # noqa: F401
    import fairsynth.methods  # noqa: F401
    import fairsynth.metrics  # noqa: F401
    import fairsynth.metrics.extractors  # noqa: F401
