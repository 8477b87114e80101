"""DiffFit (Xie et al. 2023): biases, normalisation layers and learned scale factors.

    train:
      method: difffit
      options: {apply_to: unet, scale_factors: true, norms: true}

DiffFit was proposed for DiT: it trains every bias and norm and inserts a learnable scale
γ (initialised to 1) on each transformer block's attention and MLP branches,
``x + γ ⊙ f(x)``. On an SD UNet the same γ (one per output channel) scales the output of
every ``BasicTransformerBlock``'s ``attn1``, ``attn2`` and ``ff``. Text encoders, if
chosen, train biases and norms only.

Because γ multiplies the branch's last Linear layer, the export folds it into that layer:
``difffit.safetensors`` holds plain network weights (biases, norms, and the scaled
``to_out.0`` / ``ff.net.2`` weights and biases), loaded like BitFit's with
``load_state_dict(strict=False)``; no fairsynth code is needed to use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.methods import METHODS
from fairsynth.methods._export import CHANGED_WEIGHTS_NOTE, write_note, write_weights
from fairsynth.methods._peft import adapted_components
from fairsynth.methods._selective import SelectiveMethod, biases, norm_parameters
from fairsynth.methods.base import Components, MethodConfig, MethodError

WEIGHTS_FILE = "difffit.safetensors"
SCALE = "difffit_scale"


@dataclass
class DiffFitConfig(MethodConfig):
    """DiffFit: biases + norms (+ scale factors in the UNet's transformer blocks)."""

    norms: bool = knob(True, "Train GroupNorm / LayerNorm weights and biases.")
    scale_factors: bool = knob(True, "Add and train a per-channel scale on every UNet attention and feed-forward output.")

    def __post_init__(self) -> None:
        if self.text_encoder_lr is not None and self.text_encoder_lr <= 0:
            raise ConfigError(f"text_encoder_lr must be > 0, got {self.text_encoder_lr}")


def _scale_output(module: nn.Module, args: Any, output: Any) -> Any:
    scale = getattr(module, SCALE)
    if isinstance(output, tuple):
        return (output[0] * scale, *output[1:])
    return output * scale  # (B, N, C) * (C,)


def _branch_output_layer(branch: nn.Module) -> tuple[str, nn.Linear]:
    """The Linear layer a branch ends with (attention: to_out.0; feed-forward: net.2)."""
    last = None
    for name, child in branch.named_modules():
        if isinstance(child, nn.Linear):
            last = (name, child)
    if last is None:
        raise MethodError(f"DiffFit: {type(branch).__name__} has no Linear output layer")
    return last


def scaled_branches(unet: nn.Module) -> dict[str, nn.Module]:
    """Name -> attention / feed-forward module of every transformer block that carries γ."""
    from diffusers.models.attention import BasicTransformerBlock

    found = {}
    for name, block in unet.named_modules():
        if isinstance(block, BasicTransformerBlock):
            for part in ("attn1", "attn2", "ff"):
                branch = getattr(block, part, None)
                if branch is not None:
                    found[f"{name}.{part}"] = branch
    return found


@METHODS.register("difffit", help="DiffFit: biases + norms + per-channel scale factors on attention/FF outputs")
class DiffFit(SelectiveMethod):
    """Biases, norms and learnable scale factors (Xie et al. 2023)."""

    Config = DiffFitConfig

    def prepare(self, components: Components) -> None:
        if not self.config.scale_factors or "unet" not in adapted_components(components, self.config.apply_to):
            return
        for branch in scaled_branches(components.unet).values():
            if hasattr(branch, SCALE):
                continue  # prepared already
            _, out = _branch_output_layer(branch)
            branch.register_parameter(SCALE, nn.Parameter(torch.ones(out.out_features, device=out.weight.device, dtype=out.weight.dtype)))
            branch.register_forward_hook(_scale_output)

    def selected(self, components: Components) -> dict[str, dict[str, nn.Parameter]]:
        named = components.modules()
        out: dict[str, dict[str, nn.Parameter]] = {}
        for c in adapted_components(components, self.config.apply_to):
            params = biases(named[c])
            if self.config.norms:
                params.update(norm_parameters(named[c]))
            params.update({n: p for n, p in named[c].named_parameters() if n.endswith("." + SCALE)})
            out[c] = params
        return out

    def merged_weights(self, components: Components) -> dict[str, torch.Tensor]:
        """Trained tensors as plain network weights, γ folded into each branch's last Linear."""
        tensors = {
            f"{c}.{n}": p.detach() for c, params in self.selected(components).items() for n, p in params.items()
            if not n.endswith("." + SCALE)
        }
        for name, branch in scaled_branches(components.unet).items():
            if not hasattr(branch, SCALE):
                continue
            gamma = getattr(branch, SCALE).detach()
            layer_name, layer = _branch_output_layer(branch)
            prefix = f"unet.{name}.{layer_name}"
            tensors[f"{prefix}.weight"] = layer.weight.detach() * gamma[:, None]  # (out, in) rows scaled
            if layer.bias is not None:
                tensors[f"{prefix}.bias"] = layer.bias.detach() * gamma
        return tensors

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return {
            "weights": write_weights(out_dir / WEIGHTS_FILE, self.merged_weights(components), components,
                                     "difffit: biases, norms, scale factors folded into attention/FF outputs"),
            "config": save_resolved(self.config, out_dir, "method.yaml"),
            "note": write_note(out_dir, CHANGED_WEIGHTS_NOTE.format(file=WEIGHTS_FILE)),
        }
