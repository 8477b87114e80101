"""`fairsynth report`: one self-contained HTML page of a study."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fairsynth.cli.common import _fail, _hold_study, app, console, print_verdict


@app.command("report", context_settings={"allow_extra_args": False})
def report(
    workdir: Path = typer.Argument(..., help="The study's folder (its workdir, e.g. runs/demo)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML file (default <workdir>/report/index.html)."),
) -> None:
    """Write one self-contained HTML page of a study, opening on its verdict. It opens from disk, offline.

    The first screen answers the study's question in a few sentences with 95 % intervals (is the
    classifier better, and fairer on the rare skin types; how much of the oracle's effect; how full
    and faithful the synthetic set is; what to be careful about) above a forest plot of AUROC per
    group. Then the ratio curve and ablation, the synthetic set per cell, metrics per skin type,
    the data, training, filters, memorisation, the sweep and a model card, full tables collapsed.
    Each figure's PNG and data file go to figures/ beside the page; the verdict is printed too.

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
    print_verdict(Path(workdir))
