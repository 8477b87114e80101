"""Procedural worlds: deterministic, offline image datasets with known hidden attributes.

:mod:`fairsynth.world.derm` is the embedded default dataset: dermatology-like images on six
skin tones with a Fitzpatrick17k-style skew, written in the real Fitzpatrick17k format so
that every stage (readers, ITA, hair removal, fine-tuning, balancing, fairness metrics) can
be run and tested end to end without downloading anything.
"""

from fairsynth.world.derm import (
    CONDITIONS,
    GeneratedWorld,
    Rendering,
    WorldConfig,
    generate_world,
    render,
    render_layers,
)

__all__ = [
    "CONDITIONS",
    "GeneratedWorld",
    "Rendering",
    "WorldConfig",
    "generate_world",
    "render",
    "render_layers",
]
