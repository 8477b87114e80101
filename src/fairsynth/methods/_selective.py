"""Methods that train a chosen subset of the networks' own weights (BitFit, DiffFit, full).

A subclass returns the parameters it trains per component (:meth:`SelectiveMethod.selected`)
and the learning rate of each component; parameter groups and checkpoint state follow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fairsynth.methods._adapter import load_parameters
from fairsynth.methods.base import Components, Method, Phase

#: Normalisation layers whose affine weights DiffFit trains.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm)


def text_encoder_names(components: Components) -> list[str]:
    return ["text_encoder", "text_encoder_2"][: len(components.text_encoders)]


def biases(module: nn.Module) -> dict[str, nn.Parameter]:
    """Every bias of ``module`` (BitFit, Ben Zaken et al. 2022)."""
    return {n: p for n, p in module.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}


def norm_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Affine weights and biases of every GroupNorm / LayerNorm."""
    out = {}
    for name, child in module.named_modules():
        if isinstance(child, NORM_TYPES):
            for pname, p in child.named_parameters(recurse=False):
                out[f"{name}.{pname}" if name else pname] = p
    return out


class SelectiveMethod(Method):
    """Base of methods that train some of the base weights themselves."""

    def selected(self, components: Components) -> dict[str, dict[str, nn.Parameter]]:
        """component -> {parameter name: parameter} this method trains."""
        raise NotImplementedError

    def component_lr(self, component: str, learning_rate: float) -> float:
        if component.startswith("text_encoder") and getattr(self.config, "text_encoder_lr", None) is not None:
            return self.config.text_encoder_lr
        return learning_rate

    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        components.freeze_all()
        groups = []
        for component, params in self.selected(components).items():
            if not params:
                continue
            for p in params.values():
                p.requires_grad_(True)
            groups.append({"params": list(params.values()), "lr": self.component_lr(component, learning_rate), "name": component})
        return groups

    def _state_parameters(self, components: Components) -> dict[str, nn.Parameter]:
        return {f"{c}.{n}": p for c, params in self.selected(components).items() for n, p in params.items()}

    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        """CPU copies of every trained tensor, keyed ``<component>.<parameter name>``."""
        return {k: p.detach().to("cpu", copy=True) for k, p in self._state_parameters(components).items()}

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        load_parameters(self._state_parameters(components), state)

    def load_for_inference(self, pipe: Any, export_dir: Any, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """The changed weights (``<component>.<parameter>`` safetensors) into the pipeline's networks."""
        from fairsynth.methods._inference import load_changed_weights, require_unit_scale

        require_unit_scale(scale, type(self).__name__)
        return load_changed_weights(pipe, export_dir, type(self).__name__)
