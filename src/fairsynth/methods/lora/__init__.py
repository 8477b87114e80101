"""LoRA through peft, exported for diffusers and for kohya / A1111 / ComfyUI.

    train:
      method: lora
      options:
        rank: 16          # higher adapts more, costs more memory
        alpha: 8          # update scale alpha / rank; written as-is into the kohya file
        targets: attention_ff
        apply_to: both    # UNet + text encoder(s); text_encoder_lr sets the latter's LR

Exports: ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(out_dir)``) and
``<name>_kohya.safetensors`` (kohya keys with the true alpha; ``pipe.load_lora_weights(file)``,
A1111 / ComfyUI LoRA folders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fairsynth.methods import METHODS
from fairsynth.methods._adapter import AdapterMethod
from fairsynth.methods._export import DIFFUSERS_LORA_FILE, write_diffusers_lora, write_kohya_lora
from fairsynth.methods._kohya import kohya_key
from fairsynth.methods._peft import ADAPTER_NAME, adaptable_modules, injected_components, peft_layers
from fairsynth.methods.base import Components, MethodError
from fairsynth.methods.lora.config import RESIDUAL_INITS, LoRAConfig

_NOTE = """
# Loading this LoRA

* `{diffusers}` (diffusers / peft keys, LoraConfig in the file's metadata):
  `pipe.load_lora_weights("OUT")` on a pipeline of the same base model.
* `{kohya}` (kohya-ss keys `lora_unet_*` / `lora_te*_*` with `.lora_down` / `.lora_up` /
  `.alpha`): copy into A1111's `models/Lora` or ComfyUI's `models/loras`, or
  `pipe.load_lora_weights("OUT/{kohya}")`. `.alpha` holds the trained alpha (the update is
  alpha / rank * up @ down).

Text-encoder layers load through transformers' peft integration: transformers >= 5 needs
peft >= 0.22 for that.
"""


@METHODS.register("lora", help="LoRA (peft): rank, alpha, target presets; diffusers + kohya exports")
class LoRA(AdapterMethod):
    """Low-rank adaptation (Hu et al. 2021) of the UNet and/or text encoder(s)."""

    Config = LoRAConfig
    use_dora = False

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        #: component -> module -> (lora_A, lora_B) right after a PiSSA/OLoRA init.
        self.initial: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None

    def peft_config(self, target_names: list[str], component: str) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.dropout,
            init_lora_weights=self.config.init,
            use_rslora=self.config.rslora,
            use_dora=self.use_dora,
            target_modules=target_names,
        )

    def check_layers(self, components: Components, targets: dict[str, list[str]]) -> None:
        self.check_kohya_names(components, targets)
        if self.config.init not in RESIDUAL_INITS:
            return
        named = components.modules()
        for component, names in targets.items():
            layers = adaptable_modules(named[component])
            convs = [n for n in names if not isinstance(layers[n], torch.nn.Linear)]
            if convs:
                raise MethodError(
                    f"init {self.config.init} works on Linear layers only; these {component} targets are convolutions: "
                    f"{', '.join(convs[:5])}{' ...' if len(convs) > 5 else ''} (use targets attention or attention_ff)"
                )

    def check_kohya_names(self, components: Components, targets: dict[str, list[str]]) -> None:
        """Every target has a kohya name (found out now rather than at export, after training)."""
        for component, names in targets.items():
            for name in names:
                try:
                    kohya_key(component, name, components.kind, components.unet.config)
                except MethodError as err:
                    raise MethodError(f"{err}: the kohya export could not hold it; remove it from targets") from None

    def after_inject(self, components: Components) -> None:
        if self.config.init in RESIDUAL_INITS:
            self.initial = {
                component: {
                    name: (layer.lora_A[ADAPTER_NAME].weight.detach().clone(), layer.lora_B[ADAPTER_NAME].weight.detach().clone())
                    for name, layer in peft_layers(module).items()
                }
                for component, module in injected_components(components).items()
            }

    def export_adapter(self, components: Components, out_dir: Path, name: str) -> dict[str, Path]:
        files = {"diffusers": write_diffusers_lora(components, out_dir, self.initial)}
        files["kohya"] = write_kohya_lora(components, out_dir / f"{name}_kohya.safetensors", self.initial)
        return files

    def loading_note(self, files: dict[str, Path], out_dir: Path) -> str:
        return _NOTE.format(diffusers=DIFFUSERS_LORA_FILE, kohya=files["kohya"].name)

    def load_adapter_for_inference(self, pipe: Any, export_dir: Path, name: str, scale: float) -> Any:
        """``pytorch_lora_weights.safetensors`` as the diffusers adapter ``name`` at ``scale``."""
        from fairsynth.methods._inference import load_lora

        return load_lora(pipe, export_dir, name, scale, type(self).__name__)

