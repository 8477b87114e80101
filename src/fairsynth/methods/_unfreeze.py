"""Progressive unfreezing: train the adapters first, then let parts of the base network move too.

An adapter method's ``unfreeze`` option is a list of stages, each one training phase::

    unfreeze:
      - {steps: 100, train: adapters}                   # adapters only
      - {steps: 100, train: "+up_blocks,mid_block"}     # adapters + these UNet blocks' own weights
      - {train: all, learning_rate: 1.0e-5}             # adapters + every weight of the adapted networks;
                                                        # no steps: the rest of the run

``train`` is ``adapters``, ``all``, or ``+`` followed by comma-separated module paths. A path
is relative to the UNet (``up_blocks``, ``mid_block``, ``down_blocks.1.attentions``) unless it
starts with a component name (``unet.conv_in``, ``text_encoder``,
``text_encoder.encoder.layers.11``). Each stage names its whole trainable set; stages do not
accumulate. Base weights trained this way are exported beside the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fairsynth.config import ConfigError, knob
from fairsynth.methods.base import Components, MethodError, Phase

_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@dataclass
class UnfreezeStage:
    """One stage of progressive unfreezing."""

    steps: int | None = knob(None, "Optimiser steps of this stage; leave out on the last stage to take the rest of the run.")
    train: str = knob(
        "adapters", "What trains: `adapters`, `all` (adapters + every weight of the adapted networks), or "
        "`+path,path` (adapters + those modules' own weights, e.g. `+up_blocks,mid_block` or `+text_encoder`)."
    )
    learning_rate: float | None = knob(None, "Learning rate of this stage; None: the run's.")

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"unfreeze stage steps must be >= 1, got {self.steps}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"unfreeze stage learning_rate must be > 0, got {self.learning_rate}")
        parse_train(self.train)


def parse_train(spec: str) -> tuple[bool, list[tuple[str, str]]]:
    """``(everything, [(component, module path), ...])`` for a stage's ``train`` value.

    ``adapters`` -> (False, []); ``all`` -> (True, []); ``+up_blocks,text_encoder`` ->
    (False, [("unet", "up_blocks"), ("text_encoder", "")]).
    """
    spec = spec.strip()
    if spec == "adapters":
        return False, []
    if spec == "all":
        return True, []
    if not spec.startswith("+") or not spec[1:].strip():
        raise ConfigError(f"unfreeze train must be 'adapters', 'all' or '+path,path', got {spec!r}")
    paths = []
    for raw in spec[1:].split(","):
        path = raw.strip()
        if not path or not all(part for part in path.split(".")):
            raise ConfigError(f"unfreeze train {spec!r}: empty module path")
        head, _, rest = path.partition(".")
        if head == "vae":
            raise ConfigError(f"unfreeze train {spec!r}: the VAE is not trained by adapter methods (use `full`)")
        paths.append((head, rest) if head in _COMPONENTS else ("unet", path))
    return False, paths


def check_stages(stages: list[UnfreezeStage]) -> None:
    """Only the last stage may leave its steps out."""
    for i, stage in enumerate(stages[:-1]):
        if stage.steps is None:
            raise ConfigError(f"unfreeze stage {i + 1} needs steps (only the last stage may take the rest of the run)")


def stage_phases(stages: list[UnfreezeStage], steps: int) -> list[Phase]:
    """One :class:`Phase` per stage; the step counts must add up to the run's ``steps``."""
    fixed = sum(s.steps for s in stages if s.steps is not None)
    open_stage = stages[-1].steps is None
    if open_stage and fixed >= steps:
        raise MethodError(f"unfreeze stages take {fixed} of the run's {steps} steps, leaving none for the last stage")
    if not open_stage and fixed != steps:
        raise MethodError(
            f"unfreeze stages add up to {fixed} steps but the run has {steps}; "
            "leave out the last stage's steps to give it the rest"
        )
    return [
        Phase(
            name=f"stage{i + 1}:{stage.train}",
            steps=stage.steps if stage.steps is not None else steps - fixed,
            learning_rate=stage.learning_rate,
            settings={"train": stage.train},
        )
        for i, stage in enumerate(stages)
    ]


def check_paths(components: Components, stages: list[UnfreezeStage]) -> None:
    """Every ``+path`` names an existing module of a component; errors list what exists."""
    named = components.modules()
    for stage in stages:
        _, paths = parse_train(stage.train)
        for component, path in paths:
            if component not in named:
                raise MethodError(f"unfreeze {stage.train!r}: this base model has no {component}")
            if not path:
                continue
            modules = dict(named[component].named_modules())
            if path not in modules:
                children = ", ".join(n for n, _ in named[component].named_children())
                raise MethodError(
                    f"unfreeze {stage.train!r}: the {component} has no module {path!r}; its top-level modules: {children}"
                )


def selected_base_parameters(
    base: dict[str, dict[str, nn.Parameter]], spec: str, adapted: list[str]
) -> dict[str, dict[str, nn.Parameter]]:
    """The base parameters a stage trains.

    Args:
        base: component -> {name: parameter} of the base weights (adapter weights excluded).
        spec: the stage's ``train`` value.
        adapted: components the method adapts (what ``all`` covers).
    """
    everything, paths = parse_train(spec)
    if everything:
        return {c: dict(base[c]) for c in adapted if c in base}
    selected: dict[str, dict[str, nn.Parameter]] = {}
    for component, path in paths:
        for name, param in base.get(component, {}).items():
            if not path or name.startswith(path + ".") or _unwrapped(name).startswith(path + "."):
                selected.setdefault(component, {})[name] = param
    return selected


def _unwrapped(name: str) -> str:
    return name.replace(".base_layer.", ".")


def stages_train_text_encoder(stages: list[UnfreezeStage], apply_to: str) -> bool:
    """True when some stage trains text-encoder base weights."""
    for stage in stages:
        everything, paths = parse_train(stage.train)
        if everything and apply_to in ("text_encoder", "both"):
            return True
        if any(component.startswith("text_encoder") for component, _ in paths):
            return True
    return False


def all_stage_specs(stages: list[UnfreezeStage]) -> list[str]:
    return [stage.train for stage in stages] or ["adapters"]
