"""Writing what a method trained in formats others load (safetensors only, never pickle).

* :func:`lora_factors` / :func:`write_diffusers_lora` / :func:`write_kohya_lora`: LoRA and
  DoRA as ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(folder)``) and as a
  kohya / A1111 / ComfyUI file (``pipe.load_lora_weights(file)``, or the UIs' LoRA folders).
* :func:`write_peft_folders`: any peft adapter (LoHa, LoKr, OFT, ...) as one
  ``save_pretrained``-style folder per component (``adapter_model.safetensors`` +
  ``adapter_config.json``), loadable with ``peft.PeftModel.from_pretrained(pipe.unet, folder)``.
* :func:`write_weights` / :func:`load_weights`: base weights a method changed (BitFit,
  DiffFit, progressive unfreezing), keyed ``<component>.<parameter name>``.
* :func:`write_note`: a short LOADING.md beside the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from fairsynth.io import atomic_write_bytes, atomic_write_text
from fairsynth.methods._kohya import clip_checkpoint_name, kohya_key
from fairsynth.methods._peft import ADAPTER_NAME, peft_layers
from fairsynth.methods.base import Components, MethodError

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
NOTE_FILE = "LOADING.md"


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (moved to CPU, made contiguous) atomically."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors.torch.save(data, metadata=metadata))
    return path


# --------------------------------------------------------------------------------------
# LoRA / DoRA
# --------------------------------------------------------------------------------------


@dataclass
class LoraFactors:
    """One adapted layer as plain LoRA: ``delta W = alpha / rank * up @ down``."""

    down: torch.Tensor  # (rank, in) or (rank, in, kh, kw)
    up: torch.Tensor  # (out, rank) or (out, rank, 1, 1)
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def lora_factors(
    module: torch.nn.Module,
    initial: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    adapter_name: str = ADAPTER_NAME,
) -> dict[str, LoraFactors]:
    """Module name -> :class:`LoraFactors` of every LoRA layer of ``adapter_name``.

    The alpha written is ``scaling * rank``: the true alpha for plain LoRA, and the
    equivalent one for rsLoRA (scale alpha/sqrt(rank)).

    Args:
        initial: module name -> (lora_A, lora_B) at initialisation, for inits that moved
            the principal part of the base weight into the adapter (PiSSA, OLoRA). The
            export then holds ``B A - B0 A0`` as a rank-2r LoRA over the *original* base
            weights (PiSSA paper, sec. 4 "conversion to LoRA"; peft's
            ``path_initial_model_for_weight_conversion``).
    """
    factors: dict[str, LoraFactors] = {}
    for name, layer in peft_layers(module, adapter_name).items():
        if not hasattr(layer, "lora_A"):
            raise MethodError(f"{name} holds a {type(layer).__name__}, not a LoRA layer")
        down = layer.lora_A[adapter_name].weight.detach()
        up = layer.lora_B[adapter_name].weight.detach()
        scaling = float(layer.scaling[adapter_name])
        if initial is not None and name in initial:
            down0, up0 = initial[name]
            down = torch.cat([down, down0.to(down)], dim=0)
            up = torch.cat([up, -up0.to(up)], dim=1)
        factors[name] = LoraFactors(down, up, scaling * down.shape[0])
    return factors


def lora_metadata(module: torch.nn.Module, factors: dict[str, LoraFactors], adapter_name: str = ADAPTER_NAME) -> dict[str, Any]:
    """The peft ``LoraConfig`` (as a dict) that diffusers rebuilds on load.

    Rank and alpha come from the exported factors (uniform across layers); the init is
    reset to the plain one so that loading never re-runs PiSSA/OLoRA on the user's weights.
    Text-encoder target names drop ``text_model.`` so that peft's suffix match finds them
    in both the flattened (transformers >= 5) and the nested CLIP layout.
    """
    config = module.peft_config[adapter_name].to_dict()
    for key, value in config.items():
        if isinstance(value, set):
            config[key] = sorted(value)
    ranks = {f.rank for f in factors.values()}
    alphas = {f.alpha for f in factors.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise MethodError(f"LoRA export expects one rank and alpha for all layers, got ranks {ranks}, alphas {alphas}")
    config.update(
        r=ranks.pop(),
        lora_alpha=alphas.pop(),
        use_rslora=False,
        init_lora_weights=True,
        rank_pattern={},
        alpha_pattern={},
        base_model_name_or_path=None,
        target_modules=sorted(name.removeprefix("text_model.") for name in factors),
    )
    return config


def _peft_lora_state(module: torch.nn.Module, factors: dict[str, LoraFactors], adapter_name: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state = dict(get_peft_model_state_dict(module, adapter_name=adapter_name))
    for name, f in factors.items():
        state[f"{name}.lora_A.weight"] = f.down
        state[f"{name}.lora_B.weight"] = f.up
    return state


def write_diffusers_lora(
    components: Components,
    out_dir: Path,
    initial: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
    adapter_name: str = ADAPTER_NAME,
) -> Path:
    """``pytorch_lora_weights.safetensors`` in diffusers' format (peft keys prefixed ``unet.`` /
    ``text_encoder.`` / ``text_encoder_2.``, the LoraConfig in the file's metadata), written by
    the pipeline class's own ``save_lora_weights``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    layers: dict[str, Any] = {}
    for name, module in components.modules().items():
        if adapter_name not in getattr(module, "peft_config", {}):
            continue
        factors = lora_factors(module, (initial or {}).get(name), adapter_name)
        state = _peft_lora_state(module, factors, adapter_name)
        if name.startswith("text_encoder"):
            state = {clip_checkpoint_name(k): v for k, v in state.items()}
        layers[f"{name}_lora_layers"] = state
        layers[f"{name}_lora_adapter_metadata"] = lora_metadata(module, factors, adapter_name)
    if not layers:
        raise MethodError("no LoRA adapter to export")
    pipeline_class = StableDiffusionXLPipeline if components.kind == "sdxl" else StableDiffusionPipeline
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(out_dir, weight_name=DIFFUSERS_LORA_FILE, safe_serialization=True, **layers)
    return out_dir / DIFFUSERS_LORA_FILE


def kohya_state_dict(
    components: Components,
    initial: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
    adapter_name: str = ADAPTER_NAME,
) -> dict[str, torch.Tensor]:
    """kohya keys -> tensors for every LoRA layer, with each layer's true alpha."""
    state: dict[str, torch.Tensor] = {}
    for name, module in components.modules().items():
        if adapter_name not in getattr(module, "peft_config", {}):
            continue
        for module_name, f in lora_factors(module, (initial or {}).get(name), adapter_name).items():
            key = kohya_key(name, module_name, components.kind, components.unet.config)
            state[f"{key}.lora_down.weight"] = f.down
            state[f"{key}.lora_up.weight"] = f.up
            state[f"{key}.alpha"] = torch.tensor(f.alpha, dtype=torch.float32)
    return state


def write_kohya_lora(
    components: Components,
    path: Path,
    initial: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
    adapter_name: str = ADAPTER_NAME,
) -> Path:
    """A kohya-ss / A1111 / ComfyUI LoRA file (see :mod:`fairsynth.methods._kohya`)."""
    state = kohya_state_dict(components, initial, adapter_name)
    if not state:
        raise MethodError("no LoRA adapter to export")
    ranks = sorted({int(v.shape[0]) for k, v in state.items() if k.endswith(".lora_down.weight")})
    alphas = sorted({float(v) for k, v in state.items() if k.endswith(".alpha")})
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(ranks[0]) if len(ranks) == 1 else json.dumps(ranks),
        "ss_network_alpha": str(alphas[0]) if len(alphas) == 1 else json.dumps(alphas),
        "ss_base_model_version": "sdxl_base_v1-0" if components.kind == "sdxl" else "sd_v1",
        "modelspec.architecture": ("stable-diffusion-xl-v1-base" if components.kind == "sdxl" else "stable-diffusion-v1") + "/lora",
        "fairsynth_base": components.source,
        "fairsynth_base_hash": components.base_hash,
    }
    return write_safetensors(path, state, metadata)


# --------------------------------------------------------------------------------------
# Any peft adapter
# --------------------------------------------------------------------------------------


def write_peft_folders(components: Components, out_dir: Path, adapter_name: str = ADAPTER_NAME) -> dict[str, Path]:
    """One ``PeftModel.save_pretrained``-style folder per adapted component: ``<out>/<component>/``.

    Keys carry peft's ``base_model.model.`` prefix so ``PeftModel.from_pretrained(module,
    folder)`` loads them; the config is written with the plain init, so loading never
    re-initialises anything.
    """
    from peft import get_peft_model_state_dict

    written: dict[str, Path] = {}
    for name, module in components.modules().items():
        if adapter_name not in getattr(module, "peft_config", {}):
            continue
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(module, adapter_name=adapter_name)
        write_safetensors(folder / PEFT_WEIGHTS_FILE, {f"base_model.model.{k}": v for k, v in state.items()}, {"format": "pt"})
        config = module.peft_config[adapter_name].to_dict()
        for key, value in config.items():
            if isinstance(value, set):
                config[key] = sorted(value)
        for init_key in ("init_weights", "init_lora_weights"):
            if init_key in config:
                config[init_key] = True
        config["base_model_name_or_path"] = None
        config["inference_mode"] = True
        atomic_write_text(folder / PEFT_CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, default=str))
        written[name] = folder
    if not written:
        raise MethodError("no adapter to export")
    return written


# --------------------------------------------------------------------------------------
# Changed base weights
# --------------------------------------------------------------------------------------


def write_weights(path: Path, tensors: dict[str, torch.Tensor], components: Components, what: str) -> Path:
    """Weights keyed ``<component>.<parameter name>`` (the network's own names, no peft wrapping)."""
    metadata = {"format": "pt", "fairsynth_contents": what, "fairsynth_base": components.source,
                "fairsynth_base_hash": components.base_hash}
    return write_safetensors(path, tensors, metadata)


def load_weights(target: Any, path: str | Path) -> None:
    """Load a :func:`write_weights` file into a pipeline (or a :class:`Components`), in place.

    Every key must name an existing parameter; text-encoder keys are accepted with or
    without CLIP's ``text_model.`` prefix.
    """
    state = safetensors.torch.load_file(str(path))
    modules = target.modules() if isinstance(target, Components) else {
        name: getattr(target, name) for name in ("unet", "vae", "text_encoder", "text_encoder_2")
        if getattr(target, name, None) is not None
    }
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        component, _, name = key.partition(".")
        if component not in modules:
            raise MethodError(f"{path}: weights for {component!r}, which the pipeline does not have")
        parts.setdefault(component, {})[name] = value
    for component, part in parts.items():
        module = modules[component]
        own = module.state_dict()
        fixed = {}
        for name, value in part.items():
            if name not in own and name.removeprefix("text_model.") in own:
                name = name.removeprefix("text_model.")
            elif name not in own and "text_model." + name in own:
                name = "text_model." + name
            if name not in own:
                raise MethodError(f"{path}: the {component} has no parameter {name!r}")
            fixed[name] = value
        module.load_state_dict(fixed, strict=False)


CHANGED_WEIGHTS_NOTE = """
# Loading these weights

`{file}` holds the trained tensors keyed `<component>.<parameter name>` (component: unet,
text_encoder, text_encoder_2), in the networks' own parameter names. Load them into a
pipeline of the same base model:

```python
from safetensors.torch import load_file
state = load_file("OUT/{file}")
for name in ("unet", "text_encoder", "text_encoder_2"):
    part = {{k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}}
    if part:
        getattr(pipe, name).load_state_dict(part, strict=False)
```
or `fairsynth.methods._export.load_weights(pipe, "OUT/{file}")`, which also checks every
key names an existing parameter.
"""


def write_note(out_dir: Path, text: str) -> Path:
    path = out_dir / NOTE_FILE
    atomic_write_text(path, text.strip() + "\n")
    return path
