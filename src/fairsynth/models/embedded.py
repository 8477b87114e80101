"""The embedded base: a tiny Stable-Diffusion-shaped model that fairsynth ships and builds itself.

Why: the project must run end to end offline, on a laptop CPU, with a base that has learned
something. Random tiny weights can't show that fine-tuning teaches a new concept; downloading
SD 1.5 isn't possible offline. So fairsynth ships a small base in the exact layout of a
Stable Diffusion 1.5 pipeline (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, safetensors), pretrained by ``scripts/build_embedded_base.py``
on the generic captioned world (:mod:`fairsynth.world.generic`) — shapes, colours, textures
and backgrounds, never lesions or skin words. Every fine-tuning method sees it as it would see
SD 1.5: ``StableDiffusionPipeline.from_pretrained(embedded_base_path())``.

Sizing (measured on this project's 2-core CPU, see the build script's model card):

=================  ===========================================  ==========  ===========
component          shape                                        parameters  fp32 on disk
=================  ===========================================  ==========  ===========
UNet               SD 1.5 block order, 3 levels (48, 48, 64),      1.46 M      5.9 MB
                   1 layer per block, cross-attention on 32-dim
                   text, 16x16x4 latents
VAE (AutoencoderKL) 3 levels (32, 32, 32): 64 px -> 16x16x4        0.29 M      1.2 MB
text encoder       CLIPTextModel, 4 layers, width 32, CLIP's       1.63 M      6.5 MB
                   full 49408-token vocabulary (1.58 M of it)
tokenizer          SD's CLIP BPE (vocab.json + merges.txt)            -         1.5 MB
=================  ===========================================  ==========  ===========

Weights are stored in **float32** (about 13.7 MB of safetensors): transformers loads a
text encoder in the dtype of its file, so float16 files would give a float16 text encoder
next to a float32 UNet on a CPU, which trains badly and slowly. The text encoder keeps the
whole CLIP vocabulary so that SD's token ids (and new words such as "melanoma") work
unchanged; most of its size is that embedding table, trained only on the generic words.

An SDXL-shaped twin ships beside it (``assets/base/tiny-sdxl``, ``train.base.source:
embedded-sdxl``, :func:`embedded_sdxl_base_path`) so that the SDXL paths — two text encoders,
pooled text embedding, size/crop time ids — run end to end offline too. It is a smaller
effort: ``scripts/build_embedded_sdxl.py`` reuses this base's VAE, tokenizer and text encoder
(frozen; the second encoder is the same text model with a projection) and trains only an
SDXL-shaped UNet (:func:`embedded_sdxl_configs`) on the same generic world.
"""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

from fairsynth.models.architectures import build_components, build_pipeline, sd15_configs, sdxl_configs
from fairsynth.models.tokenizer import save_clip_tokenizer

#: Side of the images the embedded base draws, in pixels.
EMBEDDED_RESOLUTION = 64
#: Budget for the safetensors weights of the shipped folder, in bytes.
WEIGHTS_BUDGET_BYTES = 15_000_000
#: Where the shipped weights live, relative to the ``fairsynth`` package.
EMBEDDED_BASE_PACKAGE_PATH = ("assets", "base", "tiny-sd")
#: The command that builds the shipped weights (from the repository root).
BUILD_COMMAND = "python scripts/build_embedded_base.py --out src/fairsynth/assets/base/tiny-sd --resume"
#: Files every component folder of a diffusers SD pipeline must hold.
REQUIRED_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "scheduler/scheduler_config.json",
)

#: Where the shipped SDXL-shaped base lives, relative to the ``fairsynth`` package.
EMBEDDED_SDXL_PACKAGE_PATH = ("assets", "base", "tiny-sdxl")
#: The command that builds it (from the repository root; needs the tiny-sd base first).
BUILD_COMMAND_SDXL = "python scripts/build_embedded_sdxl.py --out src/fairsynth/assets/base/tiny-sdxl --resume"
#: Files of an SDXL pipeline folder: SD's plus the second text encoder and tokenizer.
REQUIRED_FILES_SDXL = REQUIRED_FILES + (
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/vocab.json",
    "tokenizer_2/merges.txt",
)
#: SDXL micro-conditioning of every generic-world image (Podell et al. 2023, sec. 2.2):
#: original size (h, w), crop top-left (y, x), target size (h, w). The world is drawn at the
#: embedded resolution and never cropped.
EMBEDDED_SDXL_TIME_IDS = (EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION, 0, 0, EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION)


class EmbeddedBaseMissing(FileNotFoundError):
    """The shipped embedded base's weights are not built; the message names the build command."""


def embedded_sd_configs() -> dict[str, dict[str, Any]]:
    """Configs of the embedded base, in the format of :func:`~fairsynth.models.architectures.sd15_configs`.

    The scheduler is SD 1.5's (PNDM over the scaled-linear schedule, epsilon prediction),
    so training code that derives its DDPM noise scheduler from the pipeline's works as
    for SD 1.5. ``vae.scaling_factor`` is a placeholder here: the build script measures it
    (1 / std of the latents, as the LDM paper does) and stores it in the shipped config.
    """
    sd15 = sd15_configs()
    text_encoder = copy.deepcopy(sd15["text_encoder"])
    text_encoder.update(
        hidden_size=32, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, projection_dim=32
    )
    # Only what differs from SD 1.5 is written here; every other key is SD 1.5's own.
    unet = copy.deepcopy(sd15["unet"])
    unet.update(
        sample_size=EMBEDDED_RESOLUTION // 4,
        # SD 1.5's order: attention in every level but the lowest, whose resolution is
        # covered by the cross-attention mid block.
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[48, 48, 64],
        layers_per_block=1,
        cross_attention_dim=text_encoder["hidden_size"],
        attention_head_dim=4,  # diffusers' name for SD 1.x's head count
        norm_num_groups=16,
    )
    vae = copy.deepcopy(sd15["vae"])
    vae.update(
        sample_size=EMBEDDED_RESOLUTION,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[32, 32, 32],
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=1.0,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": {"max_length": 77, "pad_token": "<|endoftext|>"},
        "scheduler": copy.deepcopy(sd15["scheduler"]),
    }


def embedded_sdxl_configs() -> dict[str, dict[str, Any]]:
    """Configs of the SDXL-shaped embedded base, derived from SDXL's as the SD one is from SD 1.5's.

    Both text encoders are the SD base's trained 32-wide CLIP text model (``text_encoder_2``
    adds a 32x32 ``text_projection``, as SDXL's OpenCLIP bigG does at 1280), so the UNet's
    cross-attention reads 32 + 32 = 64 dims. The UNet keeps SDXL's block order (no attention
    in the highest-resolution level), ``use_linear_projection`` and ``"text_time"`` added
    embedding: pooled text (32) + six micro-conditioning numbers of 16 dims each. The VAE,
    tokenizer and noise schedule are the SD base's; the sampler is SDXL's (Euler).
    """
    sdxl, sd = sdxl_configs(), embedded_sd_configs()
    text_encoder = copy.deepcopy(sd["text_encoder"])
    text_encoder_2 = copy.deepcopy(text_encoder)
    addition_time_embed_dim = 16
    # Only what differs from SDXL is written here; every other key is SDXL's own.
    unet = copy.deepcopy(sdxl["unet"])
    unet.update(
        sample_size=EMBEDDED_RESOLUTION // 4,
        block_out_channels=[48, 48, 64],
        layers_per_block=1,
        transformer_layers_per_block=[1, 1, 1],
        cross_attention_dim=text_encoder["hidden_size"] + text_encoder_2["hidden_size"],
        attention_head_dim=[4, 4, 4],  # diffusers' name for the head count, as in SDXL's config
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=text_encoder_2["projection_dim"] + 6 * addition_time_embed_dim,
        norm_num_groups=16,
    )
    return {
        "unet": unet,
        "vae": copy.deepcopy(sd["vae"]),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": copy.deepcopy(sdxl["tokenizer"]),
        "tokenizer_2": copy.deepcopy(sdxl["tokenizer_2"]),
        "scheduler": copy.deepcopy(sdxl["scheduler"]),
    }


def embedded_components(seed: int = 0) -> dict[str, Any]:
    """The embedded architecture with random (seeded) weights: for the build script and tests."""
    return build_components(embedded_sd_configs(), seed)


def save_embedded_pipeline(components: dict[str, Any], folder: str | Path) -> Path:
    """Write ``components`` as a diffusers SD (or SDXL) folder with the hub's file layout.

    The tokenizer folder holds ``vocab.json`` and ``merges.txt`` (as SD 1.5 on the hub) but
    not transformers' ``tokenizer.json``: it repeats the same vocabulary in 3.6 MB, a quarter
    of the budget, and ``CLIPTokenizer.from_pretrained`` rebuilds the same ids without it.
    """
    folder = Path(folder)
    pipeline = build_pipeline(components)
    pipeline.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if components.get(name) is not None:
            save_clip_tokenizer(components[name], folder / name)
            (folder / name / "tokenizer.json").unlink(missing_ok=True)
    return folder


def weights_bytes(folder: str | Path) -> int:
    """Total size of the ``*.safetensors`` files under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*.safetensors"))


def folder_bytes(folder: str | Path) -> int:
    """Total size of all files under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def embedded_base_folder() -> Path:
    """The shipped folder ``fairsynth/assets/base/tiny-sd`` (whether or not it is built)."""
    return Path(str(importlib.resources.files("fairsynth").joinpath(*EMBEDDED_BASE_PACKAGE_PATH)))


def embedded_sdxl_base_folder() -> Path:
    """The shipped folder ``fairsynth/assets/base/tiny-sdxl`` (whether or not it is built)."""
    return Path(str(importlib.resources.files("fairsynth").joinpath(*EMBEDDED_SDXL_PACKAGE_PATH)))


def _built(folder: Path, required: tuple[str, ...], what: str, effort: str, command: str) -> Path:
    """``folder`` if every required file is there, else EmbeddedBaseMissing naming ``command``."""
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise EmbeddedBaseMissing(
            f"the {what} is not built: {folder} lacks {', '.join(missing[:3])}"
            f"{' and more' if len(missing) > 3 else ''}. Build it ({effort}, resumable) with: {command}"
        )
    return folder


def embedded_base_path() -> Path:
    """The shipped embedded base, ready for ``StableDiffusionPipeline.from_pretrained``.

    Raises:
        EmbeddedBaseMissing: a required file is absent (the weights have not been built);
            the message names the build command.

    Example:
        >>> from diffusers import StableDiffusionPipeline
        >>> pipe = StableDiffusionPipeline.from_pretrained(embedded_base_path())  # doctest: +SKIP
    """
    return _built(embedded_base_folder(), REQUIRED_FILES, "embedded base model", "hours on a CPU", BUILD_COMMAND)


def embedded_sdxl_base_path() -> Path:
    """The shipped SDXL-shaped embedded base, ready for ``StableDiffusionXLPipeline.from_pretrained``.

    Built by ``scripts/build_embedded_sdxl.py`` from the SD base (its VAE, tokenizer and text
    encoder, frozen) and an SDXL-shaped UNet trained on the same generic world; its model
    card (``README.md`` in the folder) gives the measured prompt following.

    Raises:
        EmbeddedBaseMissing: a required file is absent; the message names the build command.

    Example:
        >>> from diffusers import StableDiffusionXLPipeline
        >>> pipe = StableDiffusionXLPipeline.from_pretrained(embedded_sdxl_base_path())  # doctest: +SKIP
    """
    return _built(
        embedded_sdxl_base_folder(),
        REQUIRED_FILES_SDXL,
        "embedded SDXL base model",
        "half an hour on a CPU after the SD base",
        BUILD_COMMAND_SDXL,
    )
