"""`fairsynth downstream compare|train`: classifiers on real, synthetic and mixed data, and their fairness."""

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
