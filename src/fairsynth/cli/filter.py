"""`fairsynth filter`: re-apply the checks and thresholds to a generated set, without generating again."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import _hold_study, _load_recipe, app, console
from fairsynth.cli.generate import _guarded, _print_delivery


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
