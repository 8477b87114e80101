"""Fine-tuning methods: each lives in ``methods/<name>/`` and registers itself in :data:`METHODS`.

``fairsynth ls methods`` lists them; a recipe names one in ``train.method`` and gives its
options in ``train.options`` (validated against the method's ``Config`` when the recipe is
parsed). The contract between methods and the training loop is in :mod:`.base`.
"""

from __future__ import annotations

from fairsynth.methods.base import Batch, Components, Conditioning, Method, MethodConfig, MethodError, Phase
from fairsynth.registry import Registry

METHODS: Registry[type[Method]] = Registry("methods", package="fairsynth.methods")

__all__ = ["METHODS", "Batch", "Components", "Conditioning", "Method", "MethodConfig", "MethodError", "Phase"]
