"""`fairsynth report`: one self-contained HTML page of a study."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fairsynth.cli.common import _fail, _hold_study, app, console


@app.command("report", context_settings={"allow_extra_args": False})
def report(
    workdir: Path = typer.Argument(..., help="The study's folder (its workdir, e.g. runs/demo)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML file (default <workdir>/report/index.html)."),
) -> None:
    """Write one self-contained HTML page of a study: data imbalance, training, generated vs real
    grids, metrics per group with their extractors, filter rejections, memorisation cases,
    downstream AUROC per group, the sweep table, and a model card. It opens from disk, offline.

    Example: fairsynth report runs/demo
    """
    from fairsynth.report import ReportError, build_report

    if Path(workdir).is_dir():  # (a folder that is no study is refused by build_report)
        _hold_study(workdir, output or Path(workdir) / "report")
    try:
        page = build_report(workdir, output)
    except ReportError as err:
        _fail(str(err))
    console.print(f"report: {page}", markup=False)
