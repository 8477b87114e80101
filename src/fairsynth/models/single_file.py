"""Single-file checkpoints: the original LDM/SGM layout that A1111, ComfyUI and kohya use.

A single-file Stable Diffusion checkpoint holds every weight of a pipeline in one file, under
the names of the original code (``model.diffusion_model.*`` for the UNet,
``first_stage_model.*`` for the VAE, ``cond_stage_model.transformer.*`` for SD 1.x's CLIP,
``conditioner.embedders.{0,1}.*`` for SDXL's two text encoders). It has no configs, so
diffusers' ``from_single_file`` needs a diffusers folder with the configs (``config=``); this
module writes one for SD 1.5 and SDXL from :mod:`fairsynth.models.architectures`, so loading
needs no download.

It also goes the other way (:func:`save_single_file`): a diffusers pipeline to one
``.safetensors`` in the original layout, the reverse of diffusers' own conversion.

Pickles are never trusted: a ``.ckpt``/``.pt``/``.bin`` is read only if
``torch.load(weights_only=True)`` accepts it (plain tensors and containers, no code).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import diffusers
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save
from transformers import CLIPTextConfig

from fairsynth.io import atomic_write_bytes
from fairsynth.models.architectures import (
    PipelineKind,
    components_kind,
    scheduler_from_config,
    sd15_configs,
    sdxl_configs,
)
from fairsynth.models.tokenizer import clip_tokenizer, save_clip_tokenizer

#: File endings read as a single-file checkpoint.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

#: Architecture families recognised in a single file.
Family = Literal["sd1", "sd2", "sdxl", "sdxl_refiner", "unknown"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint that holds more than tensors; fairsynth will not unpickle it."""


class UnsupportedLayoutError(ValueError):
    """A model or checkpoint whose layout the single-file conversion does not cover."""


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def load_pickle_safely(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.ckpt``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``.

    Raises:
        UnsafeCheckpointError: the file holds other Python objects (a pickle can run code).
    """
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path.name} holds pickled Python objects besides tensors ({first_line[:160]}); "
            "fairsynth does not unpickle such files because unpickling can run arbitrary code — "
            "use a .safetensors release of the model, or convert the file to .safetensors "
            "on a machine where you trust where it came from"
        ) from None
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning checkpoints nest the weights
    if not isinstance(loaded, dict):
        raise UnsupportedLayoutError(f"{path.name} holds a {type(loaded).__name__}, not a mapping of tensors")
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a single-file checkpoint, read safely.

    ``.safetensors`` headers are read without loading the weights; pickles go through
    :func:`load_pickle_safely`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    if suffix in PICKLE_SUFFIXES:
        return {key: tuple(value.shape) for key, value in load_pickle_safely(path).items()}
    raise UnsupportedLayoutError(
        f"{path.name}: unknown checkpoint type {suffix!r}; expected one of {', '.join(SINGLE_FILE_SUFFIXES)}"
    )


def checkpoint_family(shapes: Mapping[str, tuple[int, ...]]) -> Family:
    """Which Stable Diffusion family a single-file checkpoint belongs to, from its tensor names."""
    keys = shapes.keys()

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if has(SDXL_TEXT_2_PREFIX) and has(SDXL_TEXT_PREFIX):
        return "sdxl"
    if has("conditioner.embedders.0.model."):
        return "sdxl_refiner"
    if has(SD2_TEXT_PREFIX):
        return "sd2"
    if has(SD1_TEXT_PREFIX):
        return "sd1"
    return "unknown"


def family_kind(family: Family) -> PipelineKind | None:
    """The pipeline kind a family loads as (``None`` for families fairsynth doesn't load)."""
    return {"sd1": "sd", "sd2": "sd", "sdxl": "sdxl"}.get(family)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# diffusers -> original layout
# --------------------------------------------------------------------------------------

_UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET_NAMES = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(suffix: str, names: Mapping[str, str]) -> str:
    for diffusers_name, original_name in names.items():
        if suffix.startswith(diffusers_name + "."):
            return original_name + suffix[len(diffusers_name) :]
    return suffix


def _unet_prefix_map(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(diffusers prefix, original prefix, part) for every block of a UNet2DConditionModel.

    The original UNet numbers its blocks flat: ``input_blocks.0`` is ``conv_in``, then each
    down level has ``layers_per_block`` (resnet, attention) blocks and, except the last,
    a downsampler; each up level has ``layers_per_block + 1`` blocks, the last also holding
    the upsampler after its attention (or after its resnet when the level has none).
    """
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise UnsupportedLayoutError(f"single-file conversion needs one layers_per_block for all blocks, got {layers}")
    levels = len(config["block_out_channels"])
    prefixes = [
        ("time_embedding.linear_1.", "time_embed.0.", "plain"),
        ("time_embedding.linear_2.", "time_embed.2.", "plain"),
        ("add_embedding.linear_1.", "label_emb.0.0.", "plain"),
        ("add_embedding.linear_2.", "label_emb.0.2.", "plain"),
        ("class_embedding.linear_1.", "label_emb.0.0.", "plain"),
        ("class_embedding.linear_2.", "label_emb.0.2.", "plain"),
        ("class_embedding.weight", "label_emb.weight", "plain"),
        ("conv_in.", "input_blocks.0.0.", "plain"),
        ("conv_norm_out.", "out.0.", "plain"),
        ("conv_out.", "out.2.", "plain"),
        ("mid_block.resnets.0.", "middle_block.0.", "resnet"),
        ("mid_block.attentions.0.", "middle_block.1.", "plain"),
        ("mid_block.resnets.1.", "middle_block.2.", "resnet"),
    ]
    for level in range(levels):
        for layer in range(layers):
            block = (layers + 1) * level + layer + 1
            prefixes.append((f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{block}.0.", "resnet"))
            prefixes.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{block}.1.", "plain"))
        if level < levels - 1:
            block = (layers + 1) * (level + 1)
            prefixes.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{block}.0.op.", "plain"))
        for layer in range(layers + 1):
            block = (layers + 1) * level + layer
            prefixes.append((f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{block}.0.", "resnet"))
            prefixes.append((f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{block}.1.", "plain"))
        if level < levels - 1:
            block = (layers + 1) * level + layers
            slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
            prefixes.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{block}.{slot}.", "plain"))
    return prefixes


def _vae_prefix_map(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    levels = len(config["block_out_channels"])
    prefixes = [
        ("encoder.conv_norm_out.", "encoder.norm_out.", "plain"),
        ("decoder.conv_norm_out.", "decoder.norm_out.", "plain"),
    ]
    for part in ("encoder", "decoder"):
        prefixes += [
            (f"{part}.conv_in.", f"{part}.conv_in.", "plain"),
            (f"{part}.conv_out.", f"{part}.conv_out.", "plain"),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", "resnet"),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", "resnet"),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", "attention"),
        ]
    prefixes += [("quant_conv.", "quant_conv.", "plain"), ("post_quant_conv.", "post_quant_conv.", "plain")]
    for level in range(levels):
        prefixes.append((f"encoder.down_blocks.{level}.resnets.", f"encoder.down.{level}.block.", "resnet_list"))
        prefixes.append(
            (f"encoder.down_blocks.{level}.downsamplers.0.conv.", f"encoder.down.{level}.downsample.conv.", "plain")
        )
        # the original decoder numbers its levels from the lowest resolution up
        original = levels - 1 - level
        prefixes.append((f"decoder.up_blocks.{level}.resnets.", f"decoder.up.{original}.block.", "resnet_list"))
        prefixes.append(
            (f"decoder.up_blocks.{level}.upsamplers.0.conv.", f"decoder.up.{original}.upsample.conv.", "plain")
        )
    return prefixes


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    prefixes: list[tuple[str, str, str]],
    resnet_names: Mapping[str, str],
    what: str,
) -> dict[str, torch.Tensor]:
    # longest prefix first so that "down_blocks.1.resnets.1." never matches "down_blocks.1.resnets.10."
    ordered = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if "lora_" in key or ".base_layer." in key:
            raise UnsupportedLayoutError(
                f"the {what} holds adapter weights ({key}); merge them into the base weights before saving"
            )
        for diffusers_prefix, original_prefix, part in ordered:
            if not key.startswith(diffusers_prefix):
                continue
            suffix = key[len(diffusers_prefix) :]
            if part == "resnet":
                suffix = _rename_first(suffix, resnet_names)
            elif part == "resnet_list":  # "<index>.<name>..."
                index, _, rest = suffix.partition(".")
                suffix = f"{index}.{_rename_first(rest, resnet_names)}"
            elif part == "attention":
                suffix = _rename_first(suffix, _VAE_ATTENTION_NAMES)
                if suffix.endswith(".weight") and tensor.ndim == 2:
                    tensor = tensor[:, :, None, None]  # the original VAE attention uses 1x1 convs
            converted[original_prefix + suffix] = tensor
            break
        else:
            raise UnsupportedLayoutError(f"no single-file name for {what} weight {key!r}")
    return converted


def unet_to_original(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict under the original UNet's names (no prefix)."""
    return _convert(state_dict, _unet_prefix_map(config), _UNET_RESNET_NAMES, "UNet")


def vae_to_original(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict under the original autoencoder's names (no prefix)."""
    return _convert(state_dict, _vae_prefix_map(config), _VAE_RESNET_NAMES, "VAE")


def clip_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict as the original code stores it (``text_model.*``).

    transformers >= 5.6 dropped the ``text_model.`` level of ``CLIPTextModel``; the files keep it.
    """
    return {
        key if key.startswith(("text_model.", "text_projection.")) else f"text_model.{key}": value
        for key, value in state_dict.items()
    }


def clip_to_open_clip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection`` state dict under OpenCLIP's names (SDXL's second encoder).

    OpenCLIP fuses the query/key/value projections into ``attn.in_proj_*`` and stores the text
    projection transposed, as a bare matrix.
    """
    state_dict = clip_to_original(state_dict)
    renames = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    layer_parts = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    layer_pattern = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    converted: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key in renames:
            converted[renames[key]] = tensor
        elif key == "text_projection.weight":
            converted["text_projection"] = tensor.T.contiguous()
        elif match := layer_pattern.match(key):
            layer, part, kind = match.groups()
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((layer, kind), {})[part[-6]] = tensor
            elif part in layer_parts:
                converted[f"transformer.resblocks.{layer}.{layer_parts[part]}.{kind}"] = tensor
            else:
                raise UnsupportedLayoutError(f"no OpenCLIP name for text encoder weight {key!r}")
        else:
            raise UnsupportedLayoutError(f"no OpenCLIP name for text encoder weight {key!r}")
    for (layer, kind), parts in qkv.items():
        fused = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3 * width, width) or (3 * width,)
        converted[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = fused
    return converted


def to_original_state_dict(pipeline: Any) -> dict[str, torch.Tensor]:
    """Every weight of an SD 1.x-shaped or SDXL pipeline under its single-file name.

    SD 2.x text encoders (OpenCLIP-H, stored by the original code with one more layer than
    diffusers keeps) are not covered; they raise :class:`UnsupportedLayoutError`.
    """
    components = pipeline.components if hasattr(pipeline, "components") else pipeline
    kind = components_kind(components)
    state: dict[str, torch.Tensor] = {}
    unet, vae = components["unet"], components["vae"]
    for key, value in unet_to_original(unet.state_dict(), unet.config).items():
        state[UNET_PREFIX + key] = value
    for key, value in vae_to_original(vae.state_dict(), vae.config).items():
        state[VAE_PREFIX + key] = value
    text_encoder = components["text_encoder"]
    if kind == "sdxl":
        for key, value in clip_to_original(text_encoder.state_dict()).items():
            state[SDXL_TEXT_PREFIX + key] = value
        for key, value in clip_to_open_clip(components["text_encoder_2"].state_dict()).items():
            state[SDXL_TEXT_2_PREFIX + key] = value
    else:
        if text_encoder.config.hidden_act != "quick_gelu":
            raise UnsupportedLayoutError(
                "single-file export covers SD 1.x (CLIP ViT-L text encoder, quick_gelu) and SDXL; "
                f"this text encoder uses {text_encoder.config.hidden_act} like SD 2.x — save it as a diffusers folder"
            )
        for key, value in clip_to_original(text_encoder.state_dict()).items():
            state[SD1_TEXT_PREFIX + key] = value
    return state


def save_single_file(pipeline: Any, path: str | Path) -> Path:
    """Write ``pipeline``'s weights as one ``.safetensors`` in the original SD/SDXL layout.

    The file loads back with :func:`fairsynth.models.loading.load_base` (or diffusers'
    ``from_single_file``) given a ``config=`` folder; tensors are written contiguous, in the
    pipeline's dtype, atomically.

    Example:
        >>> save_single_file(pipe, "runs/derm/model.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"single files are written as .safetensors only, got {path.name}")
    state = {key: value.detach().to("cpu").contiguous() for key, value in to_original_state_dict(pipeline).items()}
    atomic_write_bytes(path, safetensors_save(state, metadata={"format": "pt"}))
    return path


# --------------------------------------------------------------------------------------
# Config folders for from_single_file
# --------------------------------------------------------------------------------------


def reference_configs(family: Family) -> dict[str, dict[str, Any]]:
    """The public configs a single file of ``family`` is loaded with when none are given."""
    if family == "sd1":
        return sd15_configs()
    if family == "sdxl":
        return sdxl_configs()
    raise UnsupportedLayoutError(
        f"no built-in configs for a {family.replace('sd2', 'SD 2.x')} checkpoint (its prediction type and "
        "size can't be read from the weights); pass single_file_config= a diffusers folder (or cached hub id, "
        "e.g. stabilityai/stable-diffusion-2-1-base) holding this model's configs"
    )


def write_config_folder(configs: Mapping[str, Mapping[str, Any]], folder: str | Path) -> Path:
    """Write a diffusers pipeline folder holding only configs and tokenizers, no weights.

    ``configs`` is one of :mod:`fairsynth.models.architectures`' ``*_configs()`` dicts. The
    folder is what ``from_single_file(..., config=folder)`` reads instead of a hub download.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    version = diffusers.__version__
    kind = "sdxl" if "text_encoder_2" in configs else "sd"

    def write_json(path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    for name, class_name in (("unet", "UNet2DConditionModel"), ("vae", "AutoencoderKL")):
        write_json(folder / name / "config.json", {"_class_name": class_name, "_diffusers_version": version, **configs[name]})
    scheduler = scheduler_from_config(dict(configs["scheduler"]))
    scheduler.save_config(folder / "scheduler")
    text_encoders = {"text_encoder": "CLIPTextModel"}
    tokenizers = ["tokenizer"]
    if kind == "sdxl":
        text_encoders["text_encoder_2"] = "CLIPTextModelWithProjection"
        tokenizers.append("tokenizer_2")
    for name, class_name in text_encoders.items():
        text_config = CLIPTextConfig(**configs[name])
        text_config.architectures = [class_name]
        text_config.save_pretrained(folder / name)
    for name in tokenizers:
        save_clip_tokenizer(clip_tokenizer(**configs[name]), folder / name)

    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline",
        "_diffusers_version": version,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        **{name: ["transformers", class_name] for name, class_name in text_encoders.items()},
        **{name: ["transformers", "CLIPTokenizer"] for name in tokenizers},
    }
    if kind == "sdxl":
        index["force_zeros_for_empty_prompt"] = True
    else:
        index["safety_checker"] = [None, None]
        index["requires_safety_checker"] = False
    write_json(folder / "model_index.json", index)
    return folder


def expected_shapes(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Single-file name -> shape of every weight of the architecture ``configs`` describe.

    The models are built on the meta device: no memory, about a second for SDXL.
    """
    from accelerate import init_empty_weights

    from fairsynth.models.architectures import build_components

    with init_empty_weights():
        components = build_components(configs)
    return {key: tuple(value.shape) for key, value in to_original_state_dict(components).items()}


def check_checkpoint_matches(
    shapes: Mapping[str, tuple[int, ...]], configs: Mapping[str, Mapping[str, Any]], name: str, architecture: str
) -> None:
    """Raise :class:`UnsupportedLayoutError` unless every weight of ``configs`` is in ``shapes``.

    Extra tensors in the checkpoint (EMA copies, noise-schedule buffers) are fine.
    """
    problems = []
    for key, shape in expected_shapes(configs).items():
        if key not in shapes:
            problems.append(f"{key} missing")
        elif tuple(shapes[key]) != shape:
            problems.append(f"{key} is {tuple(shapes[key])}, not {shape}")
    if problems:
        raise UnsupportedLayoutError(
            f"{name} does not have the {architecture} architecture ({len(problems)} differences, first: "
            f"{problems[0]}); pass single_file_config= a diffusers folder holding this model's configs"
        )
