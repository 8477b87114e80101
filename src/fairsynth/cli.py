"""The `fairsynth` command line: one entry point, one sub-command per stage.

Every command that takes a recipe also takes dotted overrides after it::

    fairsynth prepare --config recipes/fairskin_derm.yaml prepare.resolution=[256] prepare.drop_invalid=true
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from fairsynth.config import ConfigError, DataConfig
from fairsynth.registry import ALL_REGISTRIES, UnknownNameError

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


def print_problems(problems, limit: int | None = None) -> None:
    shown = problems if limit is None else problems[:limit]
    for problem in shown:
        target = errors if problem.severity == "error" else console
        target.print(str(problem), markup=False)
    if limit is not None and len(problems) > limit:
        errors.print(f"... and {len(problems) - limit} more")


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
    import fairsynth.methods  # noqa: F401


@app.command()
def validate(
    path: Path = typer.Argument(..., help="Metadata file or dataset folder."),
    reader: str = typer.Option(..., "--reader", "-r", help="Dataset reader (`fairsynth ls readers`)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder, if not the reader's default."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column where a reader offers several."),
    min_size: int = typer.Option(0, "--min-size", help="Smallest acceptable image side in pixels."),
    require_captions: bool = typer.Option(False, "--require-captions", help="An empty caption is a problem."),
) -> None:
    """Check a dataset without changing anything; exit 1 listing every problem.

    Example: fairsynth validate --reader fitzpatrick17k data/fitzpatrick17k.csv --images data/images
    """
    from fairsynth.data.validation import validate as run_validation

    try:
        cfg = DataConfig(
            reader=reader, path=str(path), images=str(images) if images else None,
            label_column=label_column, min_size=min_size, require_captions=require_captions,
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


def _load_recipe(config: Optional[Path], overrides: list[str], default: Path | None = None):
    from fairsynth.recipe import load_recipe

    try:
        return load_recipe(config or default, overrides)
    except ConfigError as err:
        _fail(str(err))


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
    _run_prepare(recipe)


@app.command()
def demo(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides of the demo recipe, e.g. world.n=300."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Output folder (default runs/demo)."),
) -> None:
    """Run the main job on the embedded default, offline: the procedural dermatology world,
    validated, prepared, with its class x skin-type table.

    Example: fairsynth demo --workdir runs/demo world.n=300
    """
    from fairsynth.data.validation import validate as run_validation
    from fairsynth.recipe import DEMO_RECIPE
    from fairsynth.world.derm import generate_world

    extra = list(overrides or [])
    if workdir is not None:
        extra.append(f"workdir={workdir}")
    recipe = _load_recipe(None, extra, default=DEMO_RECIPE)
    if recipe.world is None:
        _fail("the demo recipe has no world section")
    console.rule("1. procedural dermatology world")
    world = generate_world(recipe.world_dir, recipe.world)
    console.print(f"{world.n} images and a Fitzpatrick17k-format CSV in {world.root}")
    console.rule("2. validate")
    report = run_validation(recipe.data, min_size=min(recipe.prepare.size))
    if not report.ok:
        print_problems(report.problems, limit=50)
        _fail("the generated world does not validate", code=1)
    console.print(f"valid: {len(report.records)} rows ({report.source})")
    console.rule("3. prepare")
    _run_prepare(recipe)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv, prog_name="fairsynth")


if __name__ == "__main__":  # pragma: no cover
    main()
