"""`fairsynth downstream compare|train|curve|ablate`: classifiers on real, synthetic and mixed data, and their
fairness; the synthetic:real ratio curve and the ablation of a group's real images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app, console
from fairsynth.config import ConfigError, save_resolved


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
        from fairsynth.generation.hybrid import recipe_generator

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
                               result.get("oracle_share"), (result.get("tests") or {}).get("description")), markup=False)


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


# `downstream curve` and `downstream ablate`: the ratio curve and the minority-real ablation
# (fairsynth.downstream.curve, fairsynth.downstream.ablate), also stages of `fairsynth run`


def _number_list(text: str, option: str) -> str:
    """A comma-separated list of numbers as a YAML list, or exit 2 naming the one that is not a number."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            float(item)
        except ValueError:
            _fail(f"{option}: {item!r} is not a number (expected e.g. {option} 0,0.25,0.5,1)")
        values.append(item)
    if not values:
        _fail(f"{option} is empty")
    return "[" + ", ".join(values) + "]"


def _protocol_recipe(recipe, seeds: Optional[str]):
    """A copy of ``recipe`` with --seeds applied (this run only)."""
    import copy

    recipe = copy.deepcopy(recipe)
    if seeds:
        try:
            recipe.downstream.seeds = [int(s) for s in seeds.split(",") if s.strip()]
            recipe.downstream.__post_init__()
        except ValueError as err:
            _fail(f"--seeds: {err}")
    return recipe


def _protocol_errors() -> tuple[type[BaseException], ...]:
    from fairsynth.downstream.ablate import AblationError
    from fairsynth.downstream.curve import CurveError
    from fairsynth.downstream.data import DownstreamDataError
    from fairsynth.downstream.model import BackboneError

    return (CurveError, AblationError, DownstreamDataError, BackboneError, ConfigError, FileNotFoundError, ValueError)


def _run_curve(recipe, seeds: Optional[str] = None) -> dict:
    """`downstream curve` on ``recipe``: every ratio with every seed; prints and returns the result."""
    from fairsynth.downstream.curve import curve, render_curve

    recipe = _protocol_recipe(recipe, seeds)
    cfg = recipe.downstream
    try:
        result = curve(cfg, cfg.output, log=lambda m: console.print(m, markup=False))
        save_resolved(recipe, Path(cfg.output), "curve-config.yaml")  # beside its results, once they are there
    except _protocol_errors() as err:
        _fail(str(err).strip("'\""))
    console.print(render_curve(result), markup=False)
    console.print(f"saved {Path(cfg.output) / 'curve.md'}, curve.json and curve.png", markup=False)
    return result


def _run_ablate(recipe, seeds: Optional[str] = None) -> dict:
    """`downstream ablate` on ``recipe``: every share, arm and seed; prints and returns the result."""
    from fairsynth.downstream.ablate import ablate, render_ablation

    recipe = _protocol_recipe(recipe, seeds)
    cfg = recipe.downstream
    try:
        if recipe.world is not None and cfg.oracle:
            from fairsynth.world.oracle import build_oracle_images

            build_oracle_images(
                recipe.world_dir / "world.json", cfg.synthetic, recipe.prepare, Path(cfg.oracle).parent,
                caption_template=recipe.data.caption_template, seed=recipe.seed,
            )
        result = ablate(cfg, cfg.output, log=lambda m: console.print(m, markup=False))
        save_resolved(recipe, Path(cfg.output), "ablate-config.yaml")  # beside its results, once they are there
    except _protocol_errors() as err:
        _fail(str(err).strip("'\""))
    console.print(render_ablation(result), markup=False)
    console.print(f"saved {Path(cfg.output) / 'ablate.md'}, ablate.json and ablate.png", markup=False)
    return result


@downstream_app.command("curve", context_settings={"allow_extra_args": False})
def downstream_curve(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. downstream.curve.epochs=10."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    ratios: Optional[str] = typer.Option(
        None, "--ratios", help="Comma-separated synthetic:real ratios, each >= 0; default downstream.curve.ratios."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds; default downstream.seeds."),
) -> None:
    """The mixed arm at each synthetic:real ratio, every ratio with every seed.

    At ratio r the classifier trains on every real training image plus r times as many synthetic
    images, drawn from the generated set per class x skin-type cell in proportion to its cells
    (seeded); ratio 0 is the real-only baseline of every difference. Where the generated set is
    too small, the point says how far it got (nothing is generated on demand). Accuracy,
    balanced accuracy, AUROC per group and the AUROC gap, each with intervals over seeds and
    over test images, go to <downstream.output>/curve.md, curve.json and curve.png. Finished
    points are reused, so an interrupted curve continues.

    Example: fairsynth downstream curve --config recipes/fairskin_derm.yaml --ratios 0,0.25,0.5,1,2,5,10
    """
    extra = list(overrides or [])
    if ratios is not None:
        extra.append(f"downstream.curve.ratios={_number_list(ratios, '--ratios')}")
    recipe = _load_recipe(config, extra)
    _hold_study(recipe.workdir, recipe.downstream.output)
    _run_curve(recipe, seeds)


@downstream_app.command("ablate", context_settings={"allow_extra_args": False})
def downstream_ablate(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides, e.g. downstream.ablate.epochs=10."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML."),
    keep: Optional[str] = typer.Option(
        None, "--keep", help="Comma-separated shares of the group's real training images kept, each in [0, 1]; "
        "default downstream.ablate.keep."),
    group: Optional[str] = typer.Option(None, "--group", help="The group, e.g. V-VI or VI; default downstream.ablate.group."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds; default downstream.seeds."),
) -> None:
    """How many real images of a rare group the synthetic set is worth.

    At each share kept, that share of the group's real training images stays (seeded,
    stratified by class and skin type) with every other real image; real only, real + synthetic (the mixed
    arm's synthetic images, held fixed) and, on a procedural world, the oracle train on it with
    every seed. The group's AUROC against the share kept, and the headline: the share at which
    real only matches real + synthetic with all of the group's real images removed, with its
    interval, or that the set is worth none. Writes <downstream.output>/ablate.md, ablate.json
    and ablate.png; finished runs are reused.

    Example: fairsynth downstream ablate --config recipes/fairskin_derm.yaml --keep 1,0.5,0.25,0.1,0 --group V-VI
    """
    extra = list(overrides or [])
    if keep is not None:
        extra.append(f"downstream.ablate.keep={_number_list(keep, '--keep')}")
    recipe = _load_recipe(config, extra)
    if group is not None:
        recipe.downstream.ablate.group = group  # as given: a YAML override would read "2" as a number
        try:
            recipe.downstream.ablate.__post_init__()
        except ConfigError as err:
            _fail(str(err))
    _hold_study(recipe.workdir, recipe.downstream.output)
    _run_ablate(recipe, seeds)
