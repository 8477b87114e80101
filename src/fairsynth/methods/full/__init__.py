"""Full fine-tuning of any combination of the UNet, the text encoder(s) and the VAE.

    train:
      method: full
      options:
        train: [unet, text_encoder]   # any of unet, text_encoder, vae (seven combinations)
        text_encoder_lr: 5.0e-6       # per-network learning rates; None: the run's

The VAE, when trained, learns through the diffusion loss on the latents it encodes (the
loop then encodes images with gradients instead of caching latents: ``trains_vae``).

Export: one diffusers / transformers ``save_pretrained`` folder (safetensors) per trained
network: ``unet/``, ``text_encoder/`` (+ ``text_encoder_2/`` on SDXL), ``vae/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.methods import METHODS
from fairsynth.methods._export import write_note
from fairsynth.methods._selective import SelectiveMethod, text_encoder_names
from fairsynth.methods.base import Components, MethodConfig

Network = Literal["unet", "text_encoder", "vae"]

_NOTE = """
# Loading these weights

Each trained network is a `save_pretrained` folder (safetensors): {folders}. Put them into a
pipeline of the same base model:

```python
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel
parts = {{}}
parts["unet"] = UNet2DConditionModel.from_pretrained("OUT/unet")        # if trained
parts["text_encoder"] = CLIPTextModel.from_pretrained("OUT/text_encoder")  # if trained
parts["vae"] = AutoencoderKL.from_pretrained("OUT/vae")                 # if trained
pipe = StableDiffusionPipeline.from_pretrained(BASE, **parts)
```
(SDXL: StableDiffusionXLPipeline, and CLIPTextModelWithProjection for `text_encoder_2/`.)
"""


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: which networks train, each at its own learning rate."""

    train: list[Network] = knob(["unet"], "Networks to train: any of unet, text_encoder (both on SDXL), vae.")
    unet_lr: float | None = knob(None, "UNet learning rate; None: the run's.")
    vae_lr: float | None = knob(None, "VAE learning rate; None: the run's.")

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("full: train must name at least one of unet, text_encoder, vae")
        if len(set(self.train)) != len(self.train):
            raise ConfigError(f"full: train lists a network twice: {self.train}")
        if self.apply_to != "unet":
            raise ConfigError("full: choose the networks with `train: [unet, text_encoder, vae]`, not apply_to")
        for network, lr in (("unet", self.unet_lr), ("text_encoder", self.text_encoder_lr), ("vae", self.vae_lr)):
            if lr is None:
                continue
            if lr <= 0:
                raise ConfigError(f"full: {network}_lr must be > 0, got {lr}")
            if network not in self.train:
                raise ConfigError(f"full: {network}_lr is set but {network} is not in train {self.train}")


@METHODS.register("full", help="Full fine-tuning of any of UNet / text encoder(s) / VAE, each with its own LR")
class Full(SelectiveMethod):
    """Every weight of the chosen networks trains."""

    Config = FullConfig

    @property
    def trains_text_encoder(self) -> bool:
        return "text_encoder" in self.config.train

    @property
    def trains_vae(self) -> bool:
        return "vae" in self.config.train

    def _networks(self, components: Components) -> dict[str, nn.Module]:
        named = components.modules()
        out = {}
        for network in self.config.train:
            for name in text_encoder_names(components) if network == "text_encoder" else [network]:
                out[name] = named[name]
        return out

    def selected(self, components: Components) -> dict[str, dict[str, nn.Parameter]]:
        return {name: dict(module.named_parameters()) for name, module in self._networks(components).items()}

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """Each trained network's ``save_pretrained`` folder replaces the pipeline's."""
        from fairsynth.methods._inference import load_networks, require_unit_scale

        require_unit_scale(scale, "full")
        return load_networks(pipe, export_dir, "full")

    def component_lr(self, component: str, learning_rate: float) -> float:
        lr = {"unet": self.config.unet_lr, "vae": self.config.vae_lr}.get(component, self.config.text_encoder_lr)
        return lr if lr is not None else learning_rate

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        for name, module in self._networks(components).items():
            module.save_pretrained(out_dir / name, safe_serialization=True)
            files[name] = out_dir / name
        files["config"] = save_resolved(self.config, out_dir, "method.yaml")
        folders = ", ".join(f"`{n}/`" for n in self._networks(components))
        files["note"] = write_note(out_dir, _NOTE.format(folders=folders))
        return files
