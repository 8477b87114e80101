"""Stable Diffusion architectures: the public configs of SD 1.5 and SDXL, and tiny seeded twins.

Each ``*_configs()`` function returns fresh plain dicts, one per pipeline component::

    {"unet": {...}, "vae": {...}, "text_encoder": {...}, "tokenizer": {...}, "scheduler": {...}}
    # SDXL adds "text_encoder_2" and "tokenizer_2"

``unet``/``vae`` are ``UNet2DConditionModel``/``AutoencoderKL`` keyword arguments,
``text_encoder*`` are ``CLIPTextConfig`` keyword arguments, ``tokenizer*`` are
:func:`~fairsynth.models.tokenizer.clip_tokenizer` arguments and ``scheduler`` holds the
``_class_name`` of the pipeline's default sampler plus its config. :func:`build_components`
turns them into modules; :func:`build_pipeline` into a pipeline.

The tiny variants follow diffusers' ``get_dummy_components``: two UNet/VAE blocks of 32 and
64 channels and a 32-wide text encoder, seeded, fast on a CPU. They keep the real 49408-token
vocabulary so the real tokenizer works, and the block order of the model they stand in for.
The VAE of a tiny model downsamples by 2 (two blocks), not 8: a 32x32 image has 16x16 latents.

``sd15_components()``/``sdxl_components()`` build real-size models with random weights
(1 GB / 3.5 GB in float32): for benchmarks only, never in tests.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fairsynth.models.tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer

#: Pipeline families fairsynth trains: Stable Diffusion 1.x/2.x, and SDXL.
PipelineKind = Literal["sd", "sdxl"]

_SCHEDULER_CLASSES: dict[str, type[SchedulerMixin]] = {
    "PNDMScheduler": PNDMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "DDPMScheduler": DDPMScheduler,
}

# SD's noise schedule (LDM paper, "scaled_linear" betas), shared by SD 1.x, 2.x and SDXL.
_SD_NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def _sd15_scheduler() -> dict[str, Any]:
    # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    return {
        "_class_name": "PNDMScheduler",
        **_SD_NOISE_SCHEDULE,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "clip_sample": False,
    }


def _sdxl_scheduler() -> dict[str, Any]:
    # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    return {
        "_class_name": "EulerDiscreteScheduler",
        **_SD_NOISE_SCHEDULE,
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "sample_max_value": 1.0,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "clip_sample": False,
    }


def _clip_text_config(**overrides: Any) -> dict[str, Any]:
    """CLIPTextConfig keywords of OpenAI CLIP ViT-L/14's text tower, updated by ``overrides``."""
    config: dict[str, Any] = {
        "vocab_size": CLIP_VOCAB_SIZE,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
        # The ids CLIP's text configs carry on the hub; pooling picks the <|endoftext|>
        # position by argmax of the ids when eos_token_id is 2 (transformers' legacy rule).
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    config.update(overrides)
    return config


# --------------------------------------------------------------------------------------
# Real sizes
# --------------------------------------------------------------------------------------


def sd15_configs() -> dict[str, dict[str, Any]]:
    """Configs of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5), without weights.

    UNet 859.5M parameters, VAE 83.7M (latents: 4 channels, 1/8 size, scaled by 0.18215),
    text encoder CLIP ViT-L/14 123.1M.
    """
    return {
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,  # diffusers' name; SD 1.x means 8 heads
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "act_fn": "silu",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
            "center_input_sample": False,
        },
        "vae": {
            "sample_size": 512,
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "act_fn": "silu",
            "scaling_factor": 0.18215,
        },
        "text_encoder": _clip_text_config(),
        "tokenizer": {"max_length": 77, "pad_token": "<|endoftext|>"},
        "scheduler": _sd15_scheduler(),
    }


def sdxl_configs() -> dict[str, dict[str, Any]]:
    """Configs of SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0), without weights.

    UNet 2.57B parameters conditioned on both text encoders' penultimate hidden states
    concatenated (768 + 1280 = 2048) and, through ``addition_embed_type="text_time"``, on
    the pooled, projected OpenCLIP embedding (1280) plus six size/crop numbers each embedded
    in 256 dims: 1280 + 6 * 256 = 2816. Text encoders: CLIP ViT-L/14 (no projection used) and
    OpenCLIP ViT-bigG/14 with projection. VAE as SD's, scaled by 0.13025.
    """
    return {
        "unet": {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [320, 640, 1280],
            "layers_per_block": 2,
            "transformer_layers_per_block": [1, 2, 10],
            "cross_attention_dim": 2048,
            "attention_head_dim": [5, 10, 20],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "act_fn": "silu",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
            "center_input_sample": False,
        },
        "vae": {
            "sample_size": 1024,
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "act_fn": "silu",
            "scaling_factor": 0.13025,
            "force_upcast": True,
        },
        "text_encoder": _clip_text_config(),
        "text_encoder_2": _clip_text_config(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            hidden_act="gelu",
            projection_dim=1280,
        ),
        "tokenizer": {"max_length": 77, "pad_token": "<|endoftext|>"},
        "tokenizer_2": {"max_length": 77, "pad_token": "!"},
        "scheduler": _sdxl_scheduler(),
    }


# --------------------------------------------------------------------------------------
# Tiny twins
# --------------------------------------------------------------------------------------


def tiny_sd_configs() -> dict[str, dict[str, Any]]:
    """SD-1.5-shaped tiny configs: same block order, 32/64 channels, a 32-wide text encoder."""
    return {
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [32, 64],
            "layers_per_block": 2,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "sample_size": 32,
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "scaling_factor": 0.18215,
        },
        "text_encoder": _clip_text_config(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
        ),
        "tokenizer": {"max_length": 77, "pad_token": "<|endoftext|>"},
        "scheduler": _sd15_scheduler(),
    }


def tiny_sdxl_configs() -> dict[str, dict[str, Any]]:
    """SDXL-shaped tiny configs: two text encoders (32 wide, and 64 wide with a 32-dim
    projection), UNet with ``addition_embed_type="text_time"``.

    The two text encoders have different widths, as in SDXL (768 and 1280): single-file
    loaders tell them apart by width.
    """
    addition_time_embed_dim = 8
    text_encoder_2 = _clip_text_config(
        hidden_size=64,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act="gelu",
        projection_dim=32,
    )
    text_encoder = _clip_text_config(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
    )
    return {
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [32, 64],
            "layers_per_block": 2,
            "transformer_layers_per_block": [1, 2],
            "cross_attention_dim": text_encoder["hidden_size"] + text_encoder_2["hidden_size"],
            "attention_head_dim": [2, 4],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": addition_time_embed_dim,
            # pooled text embedding + 6 micro-conditioning numbers (size, crop, target size)
            "projection_class_embeddings_input_dim": text_encoder_2["projection_dim"] + 6 * addition_time_embed_dim,
            "norm_num_groups": 32,
        },
        "vae": {
            "sample_size": 32,
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "scaling_factor": 0.13025,
        },
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": {"max_length": 77, "pad_token": "<|endoftext|>"},
        "tokenizer_2": {"max_length": 77, "pad_token": "!"},
        "scheduler": _sdxl_scheduler(),
    }


# --------------------------------------------------------------------------------------
# Building modules and pipelines
# --------------------------------------------------------------------------------------


def scheduler_from_config(config: dict[str, Any]) -> SchedulerMixin:
    """The scheduler named by ``config["_class_name"]``, configured by the rest of ``config``."""
    config = dict(config)
    class_name = config.pop("_class_name")
    try:
        scheduler_class = _SCHEDULER_CLASSES[class_name]
    except KeyError:
        raise ValueError(f"unknown scheduler {class_name!r}; known: {', '.join(_SCHEDULER_CLASSES)}") from None
    return scheduler_class.from_config(config)


def build_components(configs: dict[str, dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Modules with random weights for ``configs`` (one of the ``*_configs()`` dicts).

    Each model is initialised right after ``torch.manual_seed(seed)``, so one component's
    weights don't depend on the others'; the global RNG state is restored afterwards.
    The result can be passed to :func:`build_pipeline`.
    """
    configs = copy.deepcopy(configs)

    def seeded(build: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build()

    components: dict[str, Any] = {
        "unet": seeded(lambda: UNet2DConditionModel(**configs["unet"])),
        "vae": seeded(lambda: AutoencoderKL(**configs["vae"])),
        "scheduler": scheduler_from_config(configs["scheduler"]),
        "tokenizer": clip_tokenizer(**configs["tokenizer"]),
    }
    if "text_encoder_2" in configs:
        components["text_encoder"] = seeded(lambda: CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])))
        components["text_encoder_2"] = seeded(
            lambda: CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
        )
        components["tokenizer_2"] = clip_tokenizer(**configs["tokenizer_2"])
    else:
        components["text_encoder"] = seeded(lambda: CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in components:
            components[name].eval()
    return components


def tiny_sd_components(seed: int = 0) -> dict[str, Any]:
    """Tiny SD-1.5-shaped components (UNet, VAE, CLIP text encoder, tokenizer, PNDM scheduler)."""
    return build_components(tiny_sd_configs(), seed)


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Tiny SDXL-shaped components (two text encoders and tokenizers, Euler scheduler)."""
    return build_components(tiny_sdxl_configs(), seed)


def sd15_components(seed: int = 0) -> dict[str, Any]:
    """Real-size SD 1.5 components with random weights (about 1 GB): for benchmarks only."""
    return build_components(sd15_configs(), seed)


def sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Real-size SDXL components with random weights (about 3.5 GB): for benchmarks only."""
    return build_components(sdxl_configs(), seed)


def components_kind(components: dict[str, Any]) -> PipelineKind:
    """``"sdxl"`` when there is a second text encoder, else ``"sd"``."""
    return "sdxl" if components.get("text_encoder_2") is not None else "sd"


def build_pipeline(components: dict[str, Any]) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A ``StableDiffusionPipeline`` (or ``StableDiffusionXLPipeline`` when the components have
    a second text encoder), without safety checker, feature extractor or watermarker."""
    if components_kind(components) == "sdxl":
        return StableDiffusionXLPipeline(
            vae=components["vae"],
            text_encoder=components["text_encoder"],
            text_encoder_2=components["text_encoder_2"],
            tokenizer=components["tokenizer"],
            tokenizer_2=components["tokenizer_2"],
            unet=components["unet"],
            scheduler=components["scheduler"],
            add_watermarker=False,
        )
    return StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def pipeline_kind(pipeline: DiffusionPipeline) -> PipelineKind:
    """``"sdxl"`` for a pipeline with a second text encoder, else ``"sd"``."""
    return components_kind(pipeline.components)


def training_noise_scheduler(source: DiffusionPipeline | SchedulerMixin | dict[str, Any]) -> DDPMScheduler:
    """The DDPM scheduler that adds training noise with the same schedule as ``source``.

    ``source`` is a pipeline, its sampler, or a scheduler config; the betas, timestep count
    and prediction type (epsilon / v) carry over, as in diffusers' training scripts.
    """
    if isinstance(source, DiffusionPipeline):
        source = source.scheduler
    config = dict(source.config) if isinstance(source, SchedulerMixin) else dict(source)
    config.pop("_class_name", None)
    return DDPMScheduler.from_config(config)
