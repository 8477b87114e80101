"""The `fairsynth` command line: one entry point, one sub-command per stage.

Every command that takes a recipe also takes dotted overrides after it::

    fairsynth prepare --config recipes/fairskin_derm.yaml prepare.resolution=[256] prepare.drop_invalid=true
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from fairsynth.config import ConfigError, DataConfig, save_resolved
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
    import fairsynth.filters  # noqa: F401
    import fairsynth.methods  # noqa: F401
    import fairsynth.metrics  # noqa: F401
    import fairsynth.metrics.extractors  # noqa: F401


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


@app.command(context_settings={"allow_extra_args": False})
def train(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. train.steps=200 train.options.rank=8."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="`latest` (the newest checkpoint in <train.output>/checkpoints; a fresh start "
        "when there is none) or a checkpoint folder."
    ),
) -> None:
    """Fine-tune the base model with a registered method on the prepared dataset.

    Writes checkpoints, logs and validation grids under train.output (default <workdir>/train),
    and the exported model with config.yaml, training_info.json and README.md in its model/ folder.

    Example: fairsynth train --config recipes/fairskin_derm.yaml train.steps=2000 --resume latest

    Several processes (GPUs, or CPU processes where there are none):
    accelerate launch --multi_gpu --num_processes 2 -m fairsynth.cli train --config recipe.yaml
    """
    recipe = _load_recipe(config, list(overrides or []))
    _hold_study(recipe.workdir, recipe.train.output, recipe.train.cache_dir)
    _run_train(recipe, resume)


def _run_train(recipe, resume: Optional[str]) -> None:
    from fairsynth.lock import StudyLocked
    from fairsynth.methods import MethodError
    from fairsynth.training.loop import TrainingDiverged, train as run_training

    try:
        result = run_training(recipe, resume=resume)
    except StudyLocked as err:
        _fail(str(err), code=EXIT_LOCKED)
    except TrainingDiverged as err:
        _fail(str(err), code=1)
    except (ConfigError, MethodError, UnknownNameError, FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip("'\""))
    if result.info:
        console.print(
            f"trained {result.steps} steps (final loss {result.final_loss:.4f}); model in {result.model_dir}"
        )


@app.command(context_settings={"allow_extra_args": False})
def evaluate(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. evaluate.bootstrap=200 evaluate.min_group_size=20."),
    real: Optional[Path] = typer.Option(None, "--real", help="Manifest of the real images (default <workdir>/prepared/metadata.jsonl)."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Manifest of the synthetic images; captions are the prompts."),
    by: Optional[str] = typer.Option(None, "--by", help="Comma-separated group fields: class (the label), fst, fst_group, any attribute."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metric@extractor, e.g. fd@inception,kid,prdc@dinov2."),
    extractor: Optional[str] = typer.Option(None, "--extractor", help="One extractor for every metric (`random`: tests only, labelled)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default <workdir>/evaluation)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
) -> None:
    """Measure synthetic images against real ones, overall and for every group.

    How close (FID, KID), how faithful and varied (precision, recall, density, coverage, Vendi,
    intra-class diversity), how well they follow their prompts (CLIP score) and how original
    (memorisation), with bootstrap intervals; every number is recorded with its extractor,
    weights hash and resize policy.

    Writes evaluation.json, evaluation.csv, memorisation_<extractor>.csv and config.yaml.

    Example: fairsynth evaluate --real runs/derm/prepared/metadata.jsonl --synthetic runs/derm/generated/metadata.jsonl --by fst,class
    """
    extra = list(overrides or [])
    if extractor is not None:
        extra.append(f"evaluate.extractor={extractor}")
    for key, value in (("by", by), ("metrics", metrics)):
        if value is not None:
            items = [item.strip() for item in value.split(",") if item.strip()]
            extra.append(f"evaluate.{key}=[{', '.join(items)}]")
    recipe = _load_recipe(config, extra)
    # Paths are set as given (not parsed as YAML, where a folder named 2024 would become a number).
    for key, value in (("real", real), ("synthetic", synthetic), ("output", output)):
        if value is not None:
            setattr(recipe.evaluate, key, str(value))
    _hold_study(recipe.workdir, recipe.evaluate.output, recipe.evaluate.cache_dir)
    _run_evaluate(recipe.evaluate)


def _run_evaluate(cfg) -> None:
    from fairsynth.io import UnsafePathError
    from fairsynth.metrics.extractors import WeightsNotFound
    from fairsynth.metrics.features import NonFiniteFeatures
    from fairsynth.metrics.evaluate import EvaluationError, evaluate as run_evaluation

    try:
        result = run_evaluation(cfg, progress=lambda message: console.print(message, markup=False))
    except WeightsNotFound as err:
        _fail(str(err))
    except NonFiniteFeatures as err:
        _fail(str(err), code=1)
    except (EvaluationError, ConfigError, UnsafePathError, UnknownNameError, FileNotFoundError, ValueError) as err:
        _fail(str(err).strip("'\""))
    for warning in result.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    print_results(result.results)
    console.print(f"saved {result.output / 'evaluation.json'} and {result.output / 'evaluation.csv'}")


@app.command(context_settings={"allow_extra_args": False})
def generate(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. generate.plan.total=600 generate.steps=20."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (cells, targets, UNet evaluations, time) and stop."),
) -> None:
    """Generate the balanced synthetic set the recipe plans, filter it, and deliver exactly the targets.

    Writes generate.output (default <workdir>/generated): images/ and metadata.jsonl (the
    delivered set, an imagefolder), not_selected/ and candidates.jsonl (every image with its
    check values and verdicts), report.json (shortfall per cell, memorised images). Run the same
    command again after an interruption to continue. Exits 1 when a cell falls short of its target.

    Example: fairsynth generate --config recipes/fairskin_derm.yaml generate.plan.total=600 --dry-run

    Several processes, one output folder (--multi_gpu also on a CPU-only machine, where accelerate's
    --cpu would start a single process):
    accelerate launch --multi_gpu --num_processes 4 -m fairsynth.cli generate --config recipe.yaml
    """
    recipe = _load_recipe(config, list(overrides or []))
    if dry_run:
        _run_dry_run(recipe)
        return
    _hold_study(recipe.workdir, recipe.generate.output, recipe.filter.cache_dir)
    from fairsynth.generation.run import generate as run_generate

    result = _guarded(lambda: run_generate(recipe, log=lambda m: console.print(m, markup=False)))
    if result.report:  # process 0
        _print_delivery(result, "generated")


def _guarded(action):
    """Run a generation step, turning bad input into one clear message (exit 2)."""
    from fairsynth.filters import FilterError
    from fairsynth.generation.plan import PlanError
    from fairsynth.generation.writer import DiskFullError, GenerationError
    from fairsynth.io import UnsafePathError
    from fairsynth.lock import StudyLocked
    from fairsynth.metrics.extractors import WeightsNotFound
    from fairsynth.methods import MethodError

    try:
        return action()
    except DiskFullError as err:
        _fail(str(err), code=3)
    except StudyLocked as err:
        _fail(str(err), code=EXIT_LOCKED)
    except (PlanError, GenerationError, FilterError, WeightsNotFound, MethodError, ConfigError, UnsafePathError,
            UnknownNameError, FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip("'\""))


def _run_dry_run(recipe) -> None:
    from fairsynth.generation.run import dry_run

    plan, rows = _guarded(lambda: dry_run(recipe))
    view = Table(title=f"plan: {plan.total} images in {len(plan.cells)} cells (oversample {plan.oversample}x, "
                 f"at most {plan.max_attempts}x)", title_justify="left")
    for column in ("cell", "real", "target", "1st round", "cap", "UNet evals", "time"):
        view.add_column(column, justify="left" if column == "cell" else "right", overflow="fold")
    for row in rows:
        time_text = "?" if row["seconds"] is None else f"{row['seconds'] / 3600:.2f} h"
        view.add_row(row["cell"], str(row["real"]), str(row["target"]), str(row["first_round"]), str(row["max_attempts"]),
                     f"{row['unet_evaluations']:,}", time_text, style="bold" if row["cell"] == "total" else None)
    console.print(view)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    if rows[-1]["seconds"] is None:
        console.print("time: unknown until measured; a run records seconds per UNet evaluation in report.json "
                      "(or set generate.seconds_per_unet_eval). 1st round: candidates before filtering (oversample); "
                      "cap: most candidates per cell (max_attempts)", markup=False)


def _print_delivery(result, verb: str, fail_on_shortfall: bool = True) -> None:
    view = Table(title=f"{verb}: {sum(c.selected for c in result.cells)} of {result.plan.total} images delivered", title_justify="left")
    for column in ("cell", "target", "delivered", "generated", "accepted", "rejected by"):
        view.add_column(column, justify="left" if column in ("cell", "rejected by") else "right", no_wrap=column == "cell")
    for cell in result.cells:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(cell.rejected_by.items()))
        view.add_row(cell.cell, str(cell.target), str(cell.selected), str(cell.generated), str(cell.accepted), rejected,
                     style="bold red" if cell.shortfall else None)
    console.print(view)
    for warning in result.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    memorised = result.report.get("memorised") or []
    for item in memorised[:10]:
        console.print(f"memorised (rejected): {item['image']} copies training image {item['copies']}", markup=False)
    console.print(f"saved {result.output / 'metadata.jsonl'} and {result.output / 'report.json'}", markup=False)
    if result.shortfall:
        short = ", ".join(f"{cell} {n}" for cell, n in result.shortfall.items())
        if not fail_on_shortfall:
            errors.print(f"warning: short of the target in {len(result.shortfall)} cell(s): {short}", markup=False)
            return
        _fail(f"short of the target in {len(result.shortfall)} cell(s) after the attempt cap: {short}; raise "
              "generate.plan.max_attempts, relax filter.options, or accept fewer (report.json has the details)", code=1)


@app.command("filter", context_settings={"allow_extra_args": False})
def filter_images(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. filter.options.sharpness.min_variance=80."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
) -> None:
    """Re-apply the checks and thresholds to a generated set, without generating again.

    Stored values are reused (a check a set lacks is measured from the files); verdicts,
    selection, metadata.jsonl, candidates.jsonl and report.json are rewritten. Exits 1 when a
    cell falls short of its target (then `fairsynth generate` with the same recipe makes more).

    Example: fairsynth filter --config recipes/fairskin_derm.yaml filter.options.sharpness.min_variance=80
    """
    recipe = _load_recipe(config, list(overrides or []))
    _hold_study(recipe.workdir, recipe.generate.output, recipe.filter.cache_dir)
    from fairsynth.generation.run import refilter

    result = _guarded(lambda: refilter(recipe, log=lambda m: console.print(m, markup=False)))
    _print_delivery(result, "filtered")


def _label(row: dict) -> str:
    label = row["display"] if row["value_name"] == row["metric"] else f"{row['value_name'].replace('_', ' ')} ({row['extractor']})"
    arrow = {True: " ↑", False: " ↓"}.get(row.get("higher_is_better"), "")
    # escaped: rich would read "[real]" as a style tag and drop it
    return rich_escape(f"{label}{arrow}{' [real]' if row['on'] == 'real' else ''}")


def print_results(results: list[dict]) -> None:
    """The overall values with intervals, then one compact table per grouping field (values only;
    intervals and the combined groups are in evaluation.csv)."""
    shown = [r for r in results if r.get("higher_is_better") is not None]
    overall = Table(title="overall", title_justify="left")
    for column in ("metric", "value", "95% interval", "n real", "n synthetic"):
        overall.add_column(column, justify="left" if column == "metric" else "right", no_wrap=column == "metric")
    for row in shown:
        if row["group_by"] != "overall":
            continue
        value = f"{row['value']:.4g}" if row.get("value") is not None else (row.get("undefined") or "undefined")
        interval = f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}]" if row.get("ci_low") is not None else (row.get("ci_note") or "")
        overall.add_row(_label(row), value, interval, str(row.get("n_real") or ""), str(row.get("n_synthetic") or ""))
    console.print(overall)
    fields = [f for f in dict.fromkeys(r["group_by"] for r in shown) if f != "overall" and " x " not in f]
    for field in fields:
        rows = [r for r in shown if r["group_by"] == field]
        groups = list(dict.fromkeys(r["group"] for r in rows))
        view = Table(title=f"by {field} (– : undefined, group too small)", title_justify="left")
        view.add_column("metric", no_wrap=True)
        for group in groups:
            view.add_column(group, justify="right")
        labels = list(dict.fromkeys(_label(r) for r in rows))
        cells = {(_label(r), r["group"]): r for r in rows}
        for label in labels:
            found = [cells.get((label, g)) for g in groups]
            view.add_row(label, *("" if r is None else f"{r['value']:.3g}" if r.get("value") is not None else "–" for r in found))
        console.print(view)
    if any(" x " in r["group_by"] for r in shown):
        console.print("combined groups (e.g. class x skin type): see evaluation.csv")


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
    from fairsynth.metrics.extractors.weights import WEIGHTS_ENV, known_weights, locate, weights_dir

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
    from fairsynth.metrics.extractors.weights import fetch, is_offline, known_weights

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


downstream_app = typer.Typer(
    help="Train the classifier on real, synthetic and mixed data and compare accuracy and fairness per group.\n\n"
    "Example: fairsynth downstream compare --config recipes/fairskin_derm.yaml --seeds 0,1,2",
    no_args_is_help=True,
)
app.add_typer(downstream_app, name="downstream")


def _run_downstream(recipe, arms: Optional[str], seeds: Optional[str], table: bool = True) -> dict:
    from fairsynth.downstream.compare import compare
    from fairsynth.downstream.data import DownstreamDataError
    from fairsynth.downstream.model import BackboneError

    import copy

    recipe = copy.deepcopy(recipe)  # --arms / --seeds change this run only, not the caller's recipe
    cfg = recipe.downstream
    if arms:
        cfg.arms = [a.strip() for a in arms.split(",") if a.strip()]
    if seeds:
        cfg.seeds = [int(s) for s in seeds.split(",") if s.strip()]
    try:
        cfg.__post_init__()
        save_resolved(recipe, Path(cfg.output))
        if "oracle" in cfg.arms and recipe.world is not None:
            from fairsynth.world.oracle import build_oracle_images

            manifest = build_oracle_images(
                recipe.world_dir / "world.json", cfg.synthetic, recipe.prepare, Path(cfg.oracle).parent,
                caption_template=recipe.data.caption_template, seed=recipe.seed,
            )
            console.print(f"oracle: true world images of the synthetic set's cells in {manifest.parent}", markup=False)
        from fairsynth.downstream.hybrid import recipe_generator

        log = lambda m: console.print(m, markup=False)  # noqa: E731
        return compare(
            cfg, cfg.output, log=log, write_table=table, generator_for=lambda seed: recipe_generator(recipe, seed, log)
        )
    except (DownstreamDataError, BackboneError, ConfigError, FileNotFoundError, ValueError) as err:
        _fail(str(err).strip("'\""))


@downstream_app.command("compare", context_settings={"allow_extra_args": False})
def downstream_compare(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. downstream.epochs=10 downstream.backbone=resnet18."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated arms (real, mixed, synthetic); default downstream.arms."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds; default downstream.seeds."),
) -> None:
    """Train every arm with the same seeds and print accuracy, per-group AUROC, AUROC gap and odds differences.

    Each (arm, seed) run is selected on the validation split and read once on the test split;
    finished runs are reused, so an interrupted comparison continues. Writes
    <downstream.output>/compare.md and compare.json, and per run model.safetensors,
    predictions.csv and metrics.json (every number with a bootstrap 95 % interval).

    Example: fairsynth downstream compare --config recipes/fairskin_derm.yaml --seeds 0,1,2
    """
    recipe = _load_recipe(config, list(overrides or []))
    _hold_study(recipe.workdir, recipe.downstream.output)
    result = _run_downstream(recipe, arms, seeds)
    from fairsynth.downstream.compare import render_table

    console.print(render_table(result["table"], result["arms"], result["seeds"], result.get("test_sets"),
                               result.get("oracle_share")), markup=False)


@downstream_app.command("train", context_settings={"allow_extra_args": False})
def downstream_train(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. downstream.epochs=10."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    arm: str = typer.Option("real", "--arm", help="real, mixed or synthetic."),
    seed: int = typer.Option(0, "--seed", help="Seed of this run."),
) -> None:
    """Train one classifier (one arm, one seed), e.g. the real-data judge of the classifier_confidence filter.

    Example: fairsynth downstream train --config recipes/fairskin_derm.yaml --arm real --seed 0
    """
    recipe = _load_recipe(config, list(overrides or []))
    _hold_study(recipe.workdir, recipe.downstream.output)
    result = _run_downstream(recipe, arm, str(seed), table=False)
    row = result["runs"][arm][seed]
    auroc = "undefined" if row["macro_auroc"] is None else format(row["macro_auroc"], ".3f")
    console.print(
        f"{arm} seed {seed}: accuracy {row['accuracy']:.3f}, macro AUROC {auroc}; "
        f"model in {Path(recipe.downstream.output) / arm / f'seed-{seed}'}",
        markup=False,
    )


@app.command("run", context_settings={"allow_extra_args": False})
def run(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML."),
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. train.steps=600 generate.plan.total=120."),
    until: Optional[str] = typer.Option(None, "--until", help="Last stage to run (world, prepare, train, classifier, generate, evaluate, downstream, report)."),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to run again even when up to date, or `all`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each stage's fingerprint and whether it would run, then stop."),
) -> None:
    """Run the whole study of a recipe: prepare, train, generate and filter, evaluate, downstream, report.

    A stage whose settings and inputs are unchanged since it last finished is skipped; one
    that was interrupted continues (training from its latest checkpoint, generation from its
    manifest); one whose settings changed runs again, and its earlier outputs are moved intact
    to <workdir>/stale/. The stages of a recipe are its `stages:` list, or every stage it
    configures. <workdir>/run-state.json records what ran with which fingerprint.

    Example: fairsynth run recipes/fairskin_derm.yaml train.steps=600 --until generate
    """
    recipe = _load_recipe(recipe_path, list(overrides or []))
    if not dry_run:
        _hold_study(recipe.workdir, recipe.workdir)
    _run_study(recipe, until=until, force=force, dry_run=dry_run)


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


def _stage_world(recipe, action) -> None:
    from fairsynth.data.validation import validate as run_validation
    from fairsynth.world.derm import generate_world

    world = generate_world(recipe.world_dir, recipe.world)
    console.print(f"{world.n} images and a Fitzpatrick17k-format CSV in {world.root}")
    report = run_validation(recipe.data, min_size=min(recipe.prepare.size))
    if not report.ok:
        print_problems(report.problems, limit=50)
        _fail("the generated world does not validate", code=1)
    console.print(f"valid: {len(report.records)} rows ({report.source})")
    if recipe.world.test_per_type > 0:
        from fairsynth.world.derm import balanced_test_world

        test_world = balanced_test_world(recipe.world)
        tested = generate_world(recipe.world_test_dir, test_world)
        console.print(
            f"external test world: {tested.n} images, {recipe.world.test_per_type} per skin type I-VI "
            f"(seed {test_world.seed}), in {tested.root}", markup=False,
        )


def _test_world_recipe(recipe):
    """The recipe that prepares the external test world exactly like the world itself."""
    import copy

    tested = copy.deepcopy(recipe)
    tested.data.path = str(recipe.world_test_dir / "fitzpatrick17k.csv")
    tested.prepare.output = str(recipe.prepared_test_dir)
    return tested


def _stage_prepare(recipe, action) -> None:
    _run_prepare(recipe)
    if recipe.world is not None and recipe.world.test_per_type > 0:
        console.print("the external test world:", markup=False)
        _run_prepare(_test_world_recipe(recipe))


def _stage_train(recipe, action) -> None:
    _run_train(recipe, resume="latest")  # a stale run was moved aside: "latest" then starts fresh
    if recipe.world is not None:
        # the procedural world's hidden truth makes the before/after grid measurable
        _demo_conditioning(recipe)


def _stage_classifier(recipe, action) -> None:
    _run_downstream(recipe, "real", str(recipe.downstream.seeds[0]), table=False)


def _stage_generate(recipe, action) -> None:
    from fairsynth.generation.run import generate as run_generate

    result = _guarded(lambda: run_generate(recipe, log=lambda m: console.print(m, markup=False)))
    _print_delivery(result, "generated", fail_on_shortfall=False)
    if recipe.world is not None:
        _read_truth(recipe)


def _read_truth(recipe) -> None:
    """The world's judge reads every generated image; the reading joins generated/report.json."""
    import json

    from fairsynth.io import atomic_write_text
    from fairsynth.world.judge import shipped_judge
    from fairsynth.world.truth import read_generated, summary_line

    judge, judge_report = shipped_judge(recipe.world.skin_type_effect)
    folder = Path(recipe.generate.output)
    truth = read_generated(folder, judge, judge_report)
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["truth"] = truth
    atomic_write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")

    console.print(f"truth: {summary_line(truth)}", markup=False)


def _stage_downstream(recipe, action) -> None:
    from fairsynth.downstream.compare import render_table

    delivered = Path(recipe.downstream.synthetic)
    lines = delivered.read_text().splitlines() if delivered.is_file() else []
    arms = None
    if not any(line.strip() for line in lines) and recipe.downstream.arms != ["real"]:
        errors.print(f"warning: no synthetic image passed the filters ({delivered}): comparing the real arm only",
                     markup=False)
        arms = "real"
    compared = _run_downstream(recipe, arms, None)
    console.print(render_table(compared["table"], compared["arms"], compared["seeds"], compared.get("test_sets"),
                               compared.get("oracle_share")), markup=False)


def _stage_report(recipe, action) -> None:
    from fairsynth.report import ReportError, build_report

    try:
        page = build_report(Path(recipe.workdir))
    except ReportError as err:
        _fail(str(err))
    console.print(f"report: {page}", markup=False)


#: What each stage of `fairsynth run` does (see fairsynth.study for when it runs).
STAGE_RUNNERS = {
    "world": _stage_world,
    "prepare": _stage_prepare,
    "train": _stage_train,
    "classifier": _stage_classifier,
    "generate": _stage_generate,
    "evaluate": lambda recipe, action: _run_evaluate(recipe.evaluate),
    "downstream": _stage_downstream,
    "report": _stage_report,
}


review_app = typer.Typer(
    help="Blinded expert review of a synthetic set: export a rating folder, import the ratings.\n\n"
    "Example: fairsynth review export runs/demo/review --config recipes/fairskin_derm.yaml",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")


@review_app.command("export", context_settings={"allow_extra_args": False})
def review_export(
    output: Path = typer.Argument(..., help="The rater folder to create (handed to the raters); new or empty."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML: its generated set and prepared data are the defaults."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Manifest of the synthetic set (default <generate.output>/metadata.jsonl)."),
    real: Optional[Path] = typer.Option(None, "--real", help="Manifest of the real images (default <prepare.output>/metadata.jsonl)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Where the key goes, outside the rater folder (default <output>.key.json)."),
    n: int = typer.Option(500, "--n", help="Images in the sample, real ones included."),
    real_share: float = typer.Option(0.2, "--real-share", help="Share of real images mixed in, in [0, 1)."),
    by: str = typer.Option("label,fst", "--by", help="Comma-separated strata fields (label = the class, e.g. the diagnosis)."),
    real_split: str = typer.Option("test", "--real-split", help="Split the real images come from ('' or a manifest without it: every split)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw and the shuffle."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Square side every image is fitted to (default: the synthetic images' size)."),
) -> None:
    """Write a blinded rating folder stratified by class x skin type (images under opaque ids, ratings.csv,
    gallery.html, README.txt) and, outside it, the key. Only synthetic images that passed the filters are drawn;
    a stratum with too few images is reported with its shortfall.

    Example: fairsynth review export runs/derm/review --config recipes/fairskin_derm.yaml --n 500 --real-share 0.2
    """
    from fairsynth.io import UnsafePathError
    from fairsynth.review import ExportConfig, ReviewExportError, export_review

    recipe = _load_recipe(config, []) if config else None
    synthetic = synthetic or (Path(recipe.generate.output) / "metadata.jsonl" if recipe else None)
    real = real or (Path(recipe.prepare.output) / "metadata.jsonl" if recipe else None)
    if synthetic is None or real is None:
        _fail("give --config RECIPE, or both --synthetic and --real manifests")
    try:
        cfg = ExportConfig(
            synthetic=str(synthetic), real=str(real), output=str(output), key=str(key) if key else None, n=n,
            real_share=real_share, by=[b.strip() for b in by.split(",") if b.strip()], real_split=real_split or None,
            seed=seed, resolution=resolution,
        )
        result = export_review(cfg)
    except (ConfigError, ReviewExportError, UnsafePathError, FileNotFoundError, ValueError) as err:
        _fail(str(err).strip("'\""))
    console.print(f"{result.synthetic} synthetic and {result.real} real images in {result.folder}", markup=False)
    console.print(f"key (keep it from the raters): {result.key}", markup=False)
    for which, missing in result.shortfall.items():
        if missing:
            errors.print(f"warning: {which} strata short of their quota: " + "; ".join(f"{k} by {v}" for k, v in missing.items()),
                         markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)


@review_app.command("import", context_settings={"allow_extra_args": False})
def review_import(
    sheets: List[Path] = typer.Argument(..., help="Filled ratings.csv files, one per rater."),
    key: Path = typer.Option(..., "--key", help="The key written by `review export`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="review.json (default beside the key)."),
    acceptance_mean: float = typer.Option(5.0, "--acceptance-mean", help="The synthetic mean rating must exceed this."),
    acceptance_low_share: float = typer.Option(0.10, "--acceptance-low-share", help="The share of ratings below 3 must stay under this."),
) -> None:
    """Read the raters' sheets with the key: mean rating and share below 3 (overall, per stratum, per skin type),
    real images as the reference, real-vs-synthetic discrimination, agreement, and the acceptance verdict.

    Example: fairsynth review import alice/ratings.csv bob/ratings.csv --key runs/derm/review.key.json
    """
    from fairsynth.review import ImportConfig, ReviewError, import_ratings

    try:
        result = import_ratings(sheets, key, ImportConfig(acceptance_mean=acceptance_mean, acceptance_low_share=acceptance_low_share),
                                output=output)
    except (ConfigError, ReviewError) as err:
        _fail(str(err))
    _print_review(result)


def _print_review(result: dict) -> None:
    low = result["config"]["low_below"]

    def number(value, fmt: str = ".2f") -> str:
        return "-" if value is None else format(value, fmt)

    view = Table(title="ratings (1-7)", title_justify="left")
    for column in ("images", "group", "ratings", "mean", "95 % interval", f"below {low}"):
        view.add_column(column, justify="left" if column in ("images", "group") else "right", no_wrap=column != "group")
    rows = [("synthetic", "all", result["synthetic"]), ("real", "all (reference)", result["real"])]
    rows += [("synthetic", f"fst {k}", v) for k, v in result["synthetic_by_fst"].items()]
    rows += [("synthetic", k, v) for k, v in result["synthetic_by_stratum"].items()]
    for which, group, part in rows:
        interval = "-" if part["low"] is None else f"[{part['low']:.2f}, {part['high']:.2f}]"
        view.add_row(which, group, str(part["n"]), number(part["mean"]), interval, number(part["share_below"], ".0%"),
                     style="bold" if group.startswith("all") else None)
    console.print(view)
    raters = Table(title="raters", title_justify="left")
    for column in ("rater", "rated", "synthetic mean", "real mean", "guesses", "guess accuracy", "AUROC"):
        raters.add_column(column, justify="left" if column == "rater" else "right")
    for name, part in result["raters"].items():
        raters.add_row(name, str(part["rated"]), number(part["synthetic_mean"]), number(part["real_mean"]),
                       str(part["guesses"]), number(part["guess_accuracy"], ".0%"), number(part["rating_auroc"], ".3f"))
    console.print(raters)
    told = result["discrimination"]
    if told.get("guesses"):
        console.print(
            f"real/synthetic guesses: {told['accuracy']:.0%} right of {told['guesses']} (always 'synthetic': "
            f"{told['always_synthetic_accuracy']:.0%}), balanced accuracy {number(told['balanced_accuracy'], '.0%')} "
            f"(chance 50 %), Fisher's exact p = {told['fisher_p_value']:.3g}", markup=False,
        )
    if told.get("rating_auroc_real_vs_synthetic") is not None:
        console.print(f"AUROC of the rating for real vs synthetic: {told['rating_auroc_real_vs_synthetic']:.3f} "
                      f"(0.5: the ratings do not tell them apart)", markup=False)
    agreement = result["agreement"]
    console.print(f"agreement between raters ({agreement['measure']}): "
                  f"{number(agreement['alpha'], '.3f') if agreement['alpha'] is not None else agreement['note']}", markup=False)
    verdict = result["acceptance"]
    console.print(f"{'ACCEPTED' if verdict['accepted'] else 'NOT ACCEPTED'}: {verdict['rule']}; saved {result['output']}",
                  markup=False)


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


@app.command()
def demo(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides of the demo recipe, e.g. world.n=300 train.steps=600."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Output folder (default runs/demo)."),
    until: str = typer.Option("report", "--until", help="Last stage to run: prepare, train, generate, downstream or report."),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to run again, or `all`."),
) -> None:
    """Run the whole study on the embedded default, offline, on a CPU: `fairsynth run` on the demo recipe.

    1. a procedural dermatology world (skin types skewed like Fitzpatrick17k) is generated,
    validated and prepared; 2. the embedded tiny base is fine-tuned on it (pivotal tokens +
    LoRA, skin-type-balanced batches) and a class x skin-type grid is drawn and scored: the
    lesion judge reads the class, ITA reads the skin type, before and after fine-tuning;
    3. a real-data classifier is trained (the filter's judge); 4. a FairSkin-shaped synthetic
    set is generated and filtered; 5. real-only, real + synthetic and synthetic-only
    classifiers are compared over three seeds, per skin type, with intervals; 6. one HTML
    report. Run it again and finished stages are skipped.

    Example: fairsynth demo --workdir runs/demo world.n=300
    """
    from fairsynth.recipe import DEMO_RECIPE

    stages = ("prepare", "train", "generate", "downstream", "report")
    if until not in stages:
        _fail(f"--until must be one of {', '.join(stages)}, got {until!r}")
    extra = list(overrides or [])
    if workdir is not None:
        extra.append(f"workdir={workdir}")
    recipe = _load_recipe(None, extra, default=DEMO_RECIPE)
    if recipe.world is None:
        _fail("the demo recipe has no world section")
    _hold_study(recipe.workdir, recipe.workdir)
    _run_study(recipe, until=until, force=force)


def _demo_conditioning(recipe) -> None:
    """Draw the class x skin-type grid before and after fine-tuning and score it from pixels."""
    import dataclasses
    import json

    from fairsynth.generation.config import AdapterSpec
    from fairsynth.generation.pipeline import load_sampler
    from fairsynth.io import atomic_write_text
    from fairsynth.world.judge import JUDGE_CLASSES, shipped_judge
    from fairsynth.world.proof import measure_conditioning, save_grid, token_prompt

    judge, judge_report = shipped_judge(recipe.world.skin_type_effect)
    out = Path(recipe.train.output)
    per_fst = recipe.train.options.get("token_per") == "class_and_fst"
    tokens = recipe.train.method in ("pivotal", "textual_inversion")
    scores = {}
    for name, adapters in (("base", []), ("fine-tuned", [AdapterSpec(path=str(out / "model"))])):
        cfg = dataclasses.replace(recipe.generate, adapters=adapters)
        sampler = load_sampler(cfg)
        prompt_for = (lambda cell: token_prompt(cell, per_fst)) if tokens and adapters else None
        score, images, _ = measure_conditioning(
            sampler, judge, per_cell=2, seed=1000, prompt_for=prompt_for, size=max(recipe.train.resolution)
        )
        grid = save_grid(images, len(JUDGE_CLASSES), 6, out / f"grid-{name}.png", per_cell=2)
        scores[name] = score.to_dict()
        console.print(f"{name}: {score.line()}; grid {grid}", markup=False)
    scores["judge"] = {
        "skin_type_effect": recipe.world.skin_type_effect, "held_out_accuracy": judge_report.get("held_out_accuracy"),
        "held_out_accuracy_by_cell": judge_report.get("held_out_accuracy_by_cell"),
    }
    atomic_write_text(out / "conditioning.json", json.dumps(scores, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv, prog_name="fairsynth")


if __name__ == "__main__":  # pragma: no cover
    main()
