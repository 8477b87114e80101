"""`fairsynth demo`: the whole study on the embedded default, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import _fail, _hold_study, _load_recipe, app
from fairsynth.cli.run import _run_study


@app.command()
def demo(
    overrides: List[str] = typer.Argument(None, help="Dotted overrides of the demo recipe, e.g. world.n=300 train.steps=600."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Output folder (default runs/demo)."),
    until: str = typer.Option(
        "report", "--until", help="Last stage to run: prepare, train, generate, downstream or report (with --full also "
        "curve or ablate)."),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to run again, or `all`."),
    full: bool = typer.Option(
        False, "--full", help="Also the ratio curve and the minority-real ablation, in small forms (downstream.curve and "
        "downstream.ablate of the demo recipe); longer than the 10-minute demo."),
) -> None:
    """Run the whole study on the embedded default, offline, on a CPU: `fairsynth run` on the demo recipe.

    1. a procedural dermatology world (skin types skewed like Fitzpatrick17k) is generated,
    validated and prepared; 2. the embedded tiny base is fine-tuned on it (pivotal tokens +
    LoRA, skin-type-balanced batches) and a class x skin-type grid is drawn and scored: the
    lesion judge reads the class, ITA reads the skin type, before and after fine-tuning;
    3. a real-data classifier is trained (the filter's judge); 4. a FairSkin-shaped synthetic
    set is generated and filtered; 5. real-only and real + synthetic classifiers and the
    oracle (true world images in the synthetic set's cells) are compared over three seeds, per
    skin type, with intervals; 6. one HTML
    report that opens on the verdict, whose sentences also end the output. Run it again and
    finished stages are skipped. With --full it also runs the synthetic:real ratio curve and the
    ablation of real V-VI training images (small forms: three ratios, three shares, fewer
    epochs), reusing every stage the plain demo finished.

    Example: fairsynth demo --workdir runs/demo world.n=300
    """
    from fairsynth.recipe import DEMO_RECIPE

    stages = ("prepare", "train", "generate", "downstream", "report") + (("curve", "ablate") if full else ())
    if until not in stages:
        _fail(f"--until must be one of {', '.join(stages)}, got {until!r}")
    extra = list(overrides or [])
    if workdir is not None:
        extra.append(f"workdir={workdir}")
    recipe = _load_recipe(None, extra, default=DEMO_RECIPE)
    if recipe.world is None:
        _fail("the demo recipe has no world section")
    if full:
        _with_protocol_stages(recipe)
    _hold_study(recipe.workdir, recipe.workdir)
    _run_study(recipe, until=until, force=force)


def _with_protocol_stages(recipe) -> None:
    """Add the curve and ablate stages to ``recipe``'s stage list, before the report (`demo --full`)."""
    from fairsynth.study import STAGES, default_stages

    names = list(recipe.stages) or default_stages(recipe)
    names = [*names, "curve", "ablate"]
    recipe.stages = sorted(set(names), key=STAGES.index)
