"""Loading what methods exported into a diffusers pipeline for generation.

The pieces the methods' :meth:`~fairsynth.methods.base.Method.load_for_inference` hooks are
made of: LoRA / DoRA through ``pipe.load_lora_weights`` (a named diffusers adapter, so several
combine with ``pipe.set_adapters``), peft folders (LoHa, LoKr, OFT) through
``peft.PeftModel.from_pretrained``, changed base weights (BitFit, DiffFit, unfreezing) through
:func:`fairsynth.methods._export.load_weights`, and whole networks (full fine-tuning,
DreamBooth full) through ``from_pretrained`` of the network's class. Only safetensors are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairsynth.methods._export import DIFFUSERS_LORA_FILE, load_weights
from fairsynth.methods.base import InferenceAdapter, MethodError

NETWORKS = ("unet", "text_encoder", "text_encoder_2", "vae")


def require_unit_scale(scale: float, method: str) -> None:
    if scale != 1.0:
        raise MethodError(f"{method} has no strength to scale (scale {scale}); scale applies to LoRA and DoRA")


def load_lora(pipe: Any, folder: Path, name: str, scale: float, method: str) -> InferenceAdapter:
    """``pytorch_lora_weights.safetensors`` of ``folder`` as the diffusers adapter ``name``."""
    path = Path(folder) / DIFFUSERS_LORA_FILE
    if not path.is_file():
        raise MethodError(f"{folder} has no {DIFFUSERS_LORA_FILE}: not a {method} export")
    pipe.load_lora_weights(str(folder), weight_name=DIFFUSERS_LORA_FILE, adapter_name=name)
    return InferenceAdapter(method, lora_adapters={name: float(scale)})


def load_peft_folders(pipe: Any, folder: Path, name: str, method: str) -> InferenceAdapter:
    """One peft ``save_pretrained`` folder per network (``unet/``, ``text_encoder/`` ...), injected in place."""
    from peft import PeftModel

    found = [n for n in NETWORKS if (Path(folder) / n / "adapter_config.json").is_file()]
    if not found:
        raise MethodError(f"{folder} has no peft adapter folder (unet/adapter_config.json, ...): not a {method} export")
    for network in found:
        PeftModel.from_pretrained(getattr(pipe, network), str(Path(folder) / network), adapter_name=name)
    return InferenceAdapter(method)


def load_changed_weights(pipe: Any, folder: Path, method: str) -> InferenceAdapter:
    """Every top-level ``.safetensors`` of ``folder`` written by :func:`~fairsynth.methods._export.write_weights`."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise MethodError(f"{folder} holds no .safetensors weights: not a {method} export")
    for path in files:
        load_weights(pipe, path)
    return InferenceAdapter(method)


def load_networks(pipe: Any, folder: Path, method: str) -> InferenceAdapter:
    """Replace the pipeline's networks by the ``save_pretrained`` folders in ``folder`` (same classes)."""
    found = [n for n in NETWORKS if (Path(folder) / n).is_dir() and getattr(pipe, n, None) is not None]
    if not found:
        raise MethodError(f"{folder} has no network folder ({', '.join(NETWORKS)}): not a {method} export")
    for network in found:
        current = getattr(pipe, network)
        loaded = type(current).from_pretrained(str(Path(folder) / network), use_safetensors=True)
        pipe.register_modules(**{network: loaded.to(device=current.device, dtype=current.dtype).eval()})
    return InferenceAdapter(method)


def merge(method: str, *parts: InferenceAdapter) -> InferenceAdapter:
    """One adapter from the parts a method loads (pivotal: tokens + LoRA)."""
    merged = InferenceAdapter(method)
    for part in parts:
        merged.lora_adapters.update(part.lora_adapters)
        merged.prompt = part.prompt or merged.prompt
        merged.conditioning = part.conditioning or merged.conditioning
        merged.vocabulary = part.vocabulary or merged.vocabulary
        merged.tokens += part.tokens
    return merged
