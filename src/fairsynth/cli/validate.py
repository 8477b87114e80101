"""`fairsynth validate`: check a dataset without changing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fairsynth.cli.common import _fail, app, console, errors, print_problems
from fairsynth.config import DataConfig
from fairsynth.registry import UnknownNameError


@app.command()
def validate(
    path: Path = typer.Argument(..., help="Metadata file or dataset folder."),
    reader: str = typer.Option(..., "--reader", "-r", help="Dataset reader (`fairsynth ls readers`)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder, if not the reader's default."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column where a reader offers several."),
    min_size: int = typer.Option(0, "--min-size", help="Smallest acceptable image side in pixels."),
    require_captions: bool = typer.Option(False, "--require-captions", help="An empty caption is a problem."),
    max_image_pixels: int = typer.Option(
        DataConfig.__dataclass_fields__["max_image_pixels"].default, "--max-image-pixels",
        help="Largest image (width x height) accepted; a larger file is a problem, never decoded.",
    ),
) -> None:
    """Check a dataset without changing anything; exit 1 listing every problem.

    Example: fairsynth validate --reader fitzpatrick17k data/fitzpatrick17k.csv --images data/images
    """
    from fairsynth.data.validation import validate as run_validation

    try:
        cfg = DataConfig(
            reader=reader, path=str(path), images=str(images) if images else None,
            label_column=label_column, min_size=min_size, require_captions=require_captions,
            max_image_pixels=max_image_pixels,
        )
        report = run_validation(cfg)
    except (UnknownNameError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    print_problems(report.problems)
    n_errors = sum(p.severity == "error" for p in report.problems)
    n_notes = len(report.problems) - n_errors
    rows = len(report.records)
    if n_errors:
        errors.print(
            f"[bold red]invalid:[/] {n_errors} problems in {len(report.invalid_ids())} of {rows} rows"
            f"{' and in the table itself' if report.table_errors() else ''} ({report.source or path})",
        )
        raise typer.Exit(1)
    console.print(f"[bold green]valid:[/] {rows} rows, {n_notes} notes ({report.source or path})")
