"""`fairsynth review export|import`: the blinded expert review of a synthetic set."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from fairsynth.cli.common import _fail, _load_recipe, app, console, errors
from fairsynth.config import ConfigError


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
