"""kohya-ss / A1111 / ComfyUI LoRA naming.

A kohya LoRA file holds, per adapted layer ``<key>``: ``<key>.lora_down.weight`` (diffusers'
``lora_A``), ``<key>.lora_up.weight`` (``lora_B``) and ``<key>.alpha``; the layer's output
changes by ``alpha / rank * up @ down``. Keys are the module path with dots turned into
underscores, prefixed ``lora_unet_``, ``lora_te_`` (SD 1.x/2.x text encoder) or
``lora_te1_`` / ``lora_te2_`` (SDXL's two text encoders).

kohya trains SD 1.x/2.x on a UNet that keeps diffusers' module names
(``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``) but SDXL on
Stability's original UNet, whose blocks are numbered ``input_blocks`` / ``middle_block`` /
``output_blocks`` (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``).
:func:`sgm_unet_name` maps diffusers' SDXL names onto those; text-encoder keys use the
``text_model.`` path of transformers' CLIP checkpoints.
"""

from __future__ import annotations

import re
from typing import Any

from fairsynth.methods.base import MethodError

# ResnetBlock2D (diffusers) -> ResBlock (Stability's sgm UNet)
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _config_value(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)


def _block_layout(unet_config: Any) -> tuple[list[int], list[int], list[bool]]:
    """(layers per down block, layers per up block, whether each up block has attentions)."""
    down_types = list(_config_value(unet_config, "down_block_types"))
    up_types = list(_config_value(unet_config, "up_block_types"))
    per_block = _config_value(unet_config, "layers_per_block")
    down = [per_block] * len(down_types) if isinstance(per_block, int) else list(per_block)
    up = [n + 1 for n in reversed(down)]  # each up block has one more resnet than its down twin
    up_has_attention = ["Attn" in t for t in up_types]
    return down, up, up_has_attention


def sgm_unet_name(name: str, unet_config: Any) -> str:
    """Stability's (sgm) name of a diffusers UNet module, e.g.
    ``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in``.

    Input blocks: 0 is ``conv_in``; then each down block's layers (resnet at ``.0``, its
    attention at ``.1``) and its downsampler (``.0.op``). Output blocks: each up block's
    layers, the upsampler in its last layer after the attention (``.2.conv``, or ``.1.conv``
    without attention). Middle block: resnet, attention, resnet.
    """
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    down, up, up_attention = _block_layout(unet_config)

    def resnet_part(rest: str) -> str:
        head, _, tail = rest.partition(".")
        if head not in _RESNET_PARTS:
            raise MethodError(f"no kohya name for UNet module {name!r}")
        return _RESNET_PARTS[head] + (f".{tail}" if tail else "")

    def inner(kind: str, rest: str) -> str:
        return f"0.{resnet_part(rest)}" if kind == "resnets" else f"1.{rest}"

    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + sum(n + 1 for n in down[:block]) + layer
        return f"input_blocks.{index}.{inner(kind, rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", name):
        block = int(m[1])
        index = 1 + sum(n + 1 for n in down[:block]) + down[block]
        return f"input_blocks.{index}.0.op"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name):
        kind, layer, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * layer}.{resnet_part(rest)}"
        return f"middle_block.{2 * layer + 1}.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = sum(up[:block]) + layer
        return f"output_blocks.{index}.{inner(kind, rest)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", name):
        block = int(m[1])
        index = sum(up[: block + 1]) - 1
        return f"output_blocks.{index}.{2 if up_attention[block] else 1}.conv"
    raise MethodError(f"no kohya name for UNet module {name!r}")


def clip_checkpoint_name(name: str) -> str:
    """A CLIP text-encoder module path as CLIP checkpoints spell it (``text_model.encoder...``).

    transformers >= 5 flattens ``CLIPTextModel`` (``encoder.layers.0...``); kohya, A1111 and
    ComfyUI keep the ``text_model.`` prefix.
    """
    if name.startswith(("encoder.", "embeddings.", "final_layer_norm")):
        return "text_model." + name
    return name


def kohya_key(component: str, module_name: str, kind: str, unet_config: Any = None) -> str:
    """kohya key of one adapted layer (without the ``.lora_down.weight`` suffix)."""
    if component == "unet":
        path = sgm_unet_name(module_name, unet_config) if kind == "sdxl" else module_name
        prefix = "lora_unet"
    elif component in ("text_encoder", "text_encoder_2"):
        path = clip_checkpoint_name(module_name)
        prefix = "lora_te" if kind == "sd" else ("lora_te1" if component == "text_encoder" else "lora_te2")
    else:
        raise MethodError(f"kohya LoRA files have no place for the {component}")
    return f"{prefix}_{path.replace('.', '_')}"
