"""`fairsynth prepare`: validate, resize, annotate and split a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app, console, print_problems
from fairsynth.registry import UnknownNameError


def print_counts(table, title: str) -> None:
    """Print a class x skin-type count table."""
    view = Table(title=title, title_justify="left")
    view.add_column(table.index.name or "class", style="bold", no_wrap=True)
    for column in table.columns:
        view.add_column(str(column).removeprefix("FST "), justify="right", no_wrap=True)
    for label, row in table.iterrows():
        style = "bold" if label == "total" else None
        view.add_row(str(label), *(str(int(v)) for v in row), style=style)
    console.print(view)


def _run_prepare(recipe) -> None:
    from fairsynth.data.prepare import DatasetInvalid, prepare

    try:
        result = prepare(recipe)
    except DatasetInvalid as err:
        print_problems(err.report.problems, limit=200)
        _fail(str(err), code=1)
    except (UnknownNameError, FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip("'\""))
    if result.rejected:
        console.print(
            f"dropped {len(result.rejected)} invalid rows, listed with reasons in {result.output / 'rejects.csv'}",
        )
    splits = {}
    for record in result.records:
        splits[record.split] = splits.get(record.split, 0) + 1
    console.print(
        f"prepared {len(result.records)} images into {result.output} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))})"
    )
    pairs = [(r.attributes.get("fst"), r.attributes.get("fst_ita")) for r in result.records]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if pairs:
        exact = sum(a == b for a, b in pairs) / len(pairs)
        within = sum(abs(a - b) <= 1 for a, b in pairs) / len(pairs)
        console.print(
            f"ITA skin-type estimate vs labelled skin type: {exact:.0%} equal, {within:.0%} within one type "
            f"({len(pairs)} labelled images)"
        )
    field = result.counts.attrs.get("skin_type_field", "fst")
    what = {"fst": "Fitzpatrick skin type", "fst_group": "Fitzpatrick group", "fst_ita": "skin type estimated from ITA"}
    console.print(f"saved {result.output / 'counts.csv'}")
    print_counts(result.counts, f"class x {what.get(field, field)}")


@app.command(context_settings={"allow_extra_args": False})
def prepare(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. prepare.resolution=[256]."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help="Drop invalid rows, listed in rejects.csv."),
) -> None:
    """Validate, resize, annotate (ITA, FST estimate) and split a dataset.

    Example: fairsynth prepare --config recipes/fairskin_derm.yaml prepare.resolution=[256]
    """
    recipe = _load_recipe(config, list(overrides or []))
    if drop_invalid:
        recipe.prepare.drop_invalid = True
    _hold_study(recipe.workdir, recipe.prepare.output)
    _run_prepare(recipe)
