"""`fairsynth train`: fine-tune the base model with a registered method."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fairsynth.cli.common import EXIT_LOCKED, _fail, _hold_study, _load_recipe, app, console
from fairsynth.config import ConfigError
from fairsynth.registry import UnknownNameError


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
