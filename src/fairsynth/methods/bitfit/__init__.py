"""BitFit (Ben Zaken et al. 2022): train only the bias terms.

    train:
      method: bitfit
      options: {apply_to: unet}     # or text_encoder / both; text_encoder_lr for the latter

Export: ``bitfit.safetensors``, the trained biases keyed ``<component>.<parameter name>``,
loaded with ``getattr(pipe, component).load_state_dict(part, strict=False)`` (see LOADING.md)
or ``fairsynth.methods._export.load_weights(pipe, path)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fairsynth.config import ConfigError, save_resolved
from fairsynth.methods import METHODS
from fairsynth.methods._export import CHANGED_WEIGHTS_NOTE, write_note, write_weights
from fairsynth.methods._peft import adapted_components
from fairsynth.methods._selective import SelectiveMethod, biases
from fairsynth.methods.base import Components, MethodConfig

WEIGHTS_FILE = "bitfit.safetensors"


@dataclass
class BitFitConfig(MethodConfig):
    """BitFit: every bias of the chosen network(s)."""

    def __post_init__(self) -> None:
        if self.text_encoder_lr is not None and self.text_encoder_lr <= 0:
            raise ConfigError(f"text_encoder_lr must be > 0, got {self.text_encoder_lr}")


@METHODS.register("bitfit", help="BitFit: train only the biases of the UNet and/or text encoder(s)")
class BitFit(SelectiveMethod):
    """Bias-only fine-tuning."""

    Config = BitFitConfig

    def selected(self, components: Components) -> dict[str, dict[str, nn.Parameter]]:
        named = components.modules()
        return {c: biases(named[c]) for c in adapted_components(components, self.config.apply_to)}

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"{c}.{n}": p.detach() for c, params in self.selected(components).items() for n, p in params.items()}
        return {
            "weights": write_weights(out_dir / WEIGHTS_FILE, tensors, components, "bitfit: trained biases"),
            "config": save_resolved(self.config, out_dir, "method.yaml"),
            "note": write_note(out_dir, CHANGED_WEIGHTS_NOTE.format(file=WEIGHTS_FILE)),
        }
