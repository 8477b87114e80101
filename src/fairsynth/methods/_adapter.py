"""What LoRA, DoRA, LoHa, LoKr and OFT share: a peft adapter on the UNet and/or text encoder(s).

A subclass says which peft config to build (:meth:`AdapterMethod.peft_config`) and may check
the chosen layers (:meth:`AdapterMethod.check_layers`) or write its own export
(:meth:`AdapterMethod.export_adapter`); everything else — targets, injection, progressive
unfreezing, parameter groups, checkpoint state — is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.methods import _unfreeze
from fairsynth.methods._export import write_note, write_peft_folders, write_weights
from fairsynth.methods._peft import (
    PRESETS,
    adapted_components,
    adapter_parameters,
    base_parameters,
    diffusers_name,
    inject_adapter,
    injected_components,
    is_adapter_parameter,
    resolve_targets,
)
from fairsynth.methods._unfreeze import UnfreezeStage
from fairsynth.methods.base import Components, Method, MethodConfig, MethodError, Phase

BASE_WEIGHTS_FILE = "base_weights.safetensors"


@dataclass
class AdapterConfig(MethodConfig):
    """Options of every peft adapter method."""

    targets: str | list[str] = knob(
        "attention", "Layers to adapt: a preset (attention: q/k/v/out of every attention; cross_attention: "
        "the UNet's attn2 only; attention_ff: + feed-forward / text-encoder MLP; locon: + resnet, "
        "transformer-projection and up/downsampler convolutions) or a list of module names, "
        "e.g. [to_q, to_v, attn2.to_out.0, q_proj]."
    )
    unfreeze: list[UnfreezeStage] = knob(
        [], "Progressive unfreezing: stages of {steps, train, learning_rate}; train is `adapters`, `all` or "
        "`+up_blocks,mid_block` (adapters + those modules' weights). Empty: adapters only, one phase."
    )
    export_name: str | None = knob(None, "Stem of exported single files (<name>_kohya.safetensors); None: the output folder's name.")

    def __post_init__(self) -> None:
        if self.text_encoder_lr is not None and self.text_encoder_lr <= 0:
            raise ConfigError(f"text_encoder_lr must be > 0, got {self.text_encoder_lr}")
        if isinstance(self.targets, str):
            if self.targets not in PRESETS:
                raise ConfigError(f"unknown targets preset {self.targets!r}; presets: {', '.join(PRESETS)}, or a list of module names")
            if self.apply_to != "unet" and "text_encoder" not in PRESETS[self.targets]:
                raise ConfigError(f"targets preset {self.targets!r} is UNet-only; use apply_to: unet or another preset")
        else:
            if not self.targets or not all(isinstance(t, str) and t.strip() for t in self.targets):
                raise ConfigError(f"targets must be a preset name or a non-empty list of module names, got {self.targets!r}")
        if self.unfreeze:
            _unfreeze.check_stages(self.unfreeze)


def check_rank_alpha(rank: int, alpha: float | None) -> None:
    if rank <= 0:
        raise ConfigError(f"rank must be > 0, got {rank}")
    if alpha is not None and alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}")


def check_dropouts(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")


class AdapterMethod(Method):
    """Base of the peft adapter methods; subclasses implement :meth:`peft_config`."""

    Config: ClassVar[type] = AdapterConfig

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        self.injected: dict[str, list[str]] = {}

    # -- what subclasses provide ----------------------------------------------------------
    def peft_config(self, target_names: list[str], component: str) -> Any:
        """The peft config (``LoraConfig``, ``LoHaConfig``, ...) for one component."""
        raise NotImplementedError

    def check_layers(self, components: Components, targets: dict[str, list[str]]) -> None:
        """Method-specific checks of the target layers (raise :class:`MethodError`)."""

    def after_inject(self, components: Components) -> None:
        """Called once right after the adapter is injected."""

    def export_adapter(self, components: Components, out_dir: Path, name: str) -> dict[str, Path]:
        return {f"peft_{c}": p for c, p in write_peft_folders(components, out_dir).items()}

    def loading_note(self, files: dict[str, Path], out_dir: Path) -> str:
        return _PEFT_NOTE

    # -- contract --------------------------------------------------------------------------
    @property
    def trains_text_encoder(self) -> bool:
        return self.config.apply_to in ("text_encoder", "both") or _unfreeze.stages_train_text_encoder(
            self.config.unfreeze, self.config.apply_to
        )

    def check(self, components: Components, records: list[Any]) -> None:
        super().check(components, records)
        if not injected_components(components):
            targets = resolve_targets(components, self.config.targets, self.config.apply_to)
            self.check_layers(components, targets)
        _unfreeze.check_paths(components, self.config.unfreeze)

    def prepare(self, components: Components) -> None:
        if injected_components(components):  # prepared already (e.g. resumed in the same process)
            return
        self.injected = inject_adapter(components, self.peft_config, self.config.targets, self.config.apply_to)
        self.after_inject(components)

    def phases(self, steps: int) -> list[Phase]:
        if not self.config.unfreeze:
            return [Phase("train", steps, settings={"train": "adapters"})]
        return _unfreeze.stage_phases(self.config.unfreeze, steps)

    def _trainable(self, components: Components, spec: str) -> dict[str, dict[str, nn.Parameter]]:
        """component -> {parameter name: parameter} trained under a stage's ``train`` spec."""
        named = components.modules()
        trained: dict[str, dict[str, nn.Parameter]] = {}
        for name, module in injected_components(components).items():
            trained[name] = adapter_parameters(module)
        if spec != "adapters":
            base = {c: base_parameters(named[c]) for c in named if c != "vae"}
            adapted = adapted_components(components, self.config.apply_to)
            for c, params in _unfreeze.selected_base_parameters(base, spec, adapted).items():
                trained.setdefault(c, {}).update(params)
        return trained

    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        if not injected_components(components):
            raise MethodError(f"{type(self).__name__}.prepare must run before parameter_groups")
        components.freeze_all()
        groups = []
        for component, params in self._trainable(components, phase.settings.get("train", "adapters")).items():
            if not params:
                continue
            for p in params.values():
                p.requires_grad_(True)
            lr = learning_rate
            if component.startswith("text_encoder") and self.config.text_encoder_lr is not None:
                lr = self.config.text_encoder_lr
            groups.append({"params": list(params.values()), "lr": lr, "name": component})
        return groups

    def _state_parameters(self, components: Components) -> dict[str, nn.Parameter]:
        """``<component>.<name>`` -> parameter, for everything any stage trains."""
        out: dict[str, nn.Parameter] = {}
        for spec in _unfreeze.all_stage_specs(self.config.unfreeze):
            for component, params in self._trainable(components, spec).items():
                out.update({f"{component}.{n}": p for n, p in params.items()})
        return out

    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        """CPU copies of every trained tensor, keyed ``<component>.<parameter name>``."""
        return {k: p.detach().to("cpu", copy=True) for k, p in self._state_parameters(components).items()}

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        load_parameters(self._state_parameters(components), state)

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = self.config.export_name or out_dir.name
        files = self.export_adapter(components, out_dir, name)
        base = self._trained_base_weights(components)
        if base:
            files["base_weights"] = write_weights(out_dir / BASE_WEIGHTS_FILE, base, components, "base weights trained by progressive unfreezing")
        files["config"] = save_resolved(self.config, out_dir, "method.yaml")
        note = self.loading_note(files, out_dir)
        if base:
            note += _BASE_WEIGHTS_NOTE
        files["note"] = write_note(out_dir, note)
        return files

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """Base weights trained by unfreezing (if any), then the adapter (:meth:`load_adapter_for_inference`)."""
        from fairsynth.methods._export import load_weights

        if (Path(export_dir) / BASE_WEIGHTS_FILE).is_file():
            load_weights(pipe, Path(export_dir) / BASE_WEIGHTS_FILE)
        return self.load_adapter_for_inference(pipe, Path(export_dir), name, scale)

    def load_adapter_for_inference(self, pipe: Any, export_dir: Path, name: str, scale: float) -> Any:
        """The peft folders (LoHa, LoKr, OFT); no strength to scale."""
        from fairsynth.methods._inference import load_peft_folders, require_unit_scale

        require_unit_scale(scale, type(self).__name__)
        return load_peft_folders(pipe, export_dir, name, type(self).__name__)

    def _trained_base_weights(self, components: Components) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for spec in _unfreeze.all_stage_specs(self.config.unfreeze):
            if spec == "adapters":
                continue
            for component, params in self._trainable(components, spec).items():
                for n, p in params.items():
                    if not is_adapter_parameter(n):
                        out[f"{component}.{diffusers_name(n)}"] = p.detach()
        return out


def load_parameters(params: dict[str, nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``params`` exactly; missing, unexpected or misshapen keys are errors."""
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise MethodError(
            "trainable state does not fit this method: "
            + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} " if missing else "")
            + (f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
        )
    with torch.no_grad():
        for key, p in params.items():
            if p.shape != state[key].shape:
                raise MethodError(f"trainable state {key}: shape {tuple(state[key].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[key])


_PEFT_NOTE = """
# Loading this adapter

One folder per adapted network (`unet/`, `text_encoder/`, `text_encoder_2/`), each as
`peft.PeftModel.save_pretrained` writes it (`adapter_model.safetensors` + `adapter_config.json`).
The adapter wraps the pipeline's modules in place:

```python
from peft import PeftModel
pipe = StableDiffusionPipeline.from_pretrained(BASE)          # the same base model
PeftModel.from_pretrained(pipe.unet, "OUT/unet")               # modifies pipe.unet in place
PeftModel.from_pretrained(pipe.text_encoder, "OUT/text_encoder")  # if present
image = pipe(prompt).images[0]
```
"""

_BASE_WEIGHTS_NOTE = """
## Base weights trained by progressive unfreezing

`base_weights.safetensors` holds the base weights the later stages trained, keyed
`<component>.<parameter>`. Load them into the base *before* the adapter:

```python
from safetensors.torch import load_file
state = load_file("OUT/base_weights.safetensors")
for name in ("unet", "text_encoder", "text_encoder_2"):
    part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
    if part:
        getattr(pipe, name).load_state_dict(part, strict=False)
```
(or `fairsynth.methods._export.load_weights(pipe, path)`).
"""
