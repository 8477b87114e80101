"""Real-size configs carry SD's public numbers; tiny components are seeded and runnable."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fairsynth.models.architectures import (
    build_components,
    build_pipeline,
    pipeline_kind,
    sd15_configs,
    sdxl_configs,
    tiny_sd_components,
    tiny_sd_configs,
    tiny_sdxl_configs,
    training_noise_scheduler,
)
from fairsynth.models.loading import model_hash


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_sd15_config_has_the_public_numbers():
    configs = sd15_configs()
    unet, vae, text = configs["unet"], configs["vae"], configs["text_encoder"]
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["layers_per_block"] == 2 and unet["cross_attention_dim"] == 768
    assert unet["attention_head_dim"] == 8 and unet["sample_size"] == 64
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert vae["block_out_channels"] == [128, 256, 512, 512]
    assert vae["latent_channels"] == 4 and vae["scaling_factor"] == 0.18215
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (768, 12, 12)
    assert (text["intermediate_size"], text["max_position_embeddings"], text["vocab_size"]) == (3072, 77, 49408)
    assert text["hidden_act"] == "quick_gelu"
    assert configs["scheduler"]["_class_name"] == "PNDMScheduler"


def test_sdxl_config_has_the_public_numbers():
    configs = sdxl_configs()
    unet = configs["unet"]
    assert unet["addition_embed_type"] == "text_time"
    text_widths = configs["text_encoder"]["hidden_size"] + configs["text_encoder_2"]["hidden_size"]
    assert unet["cross_attention_dim"] == text_widths == 2048
    assert unet["projection_class_embeddings_input_dim"] == 1280 + 6 * 256 == 2816
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert configs["text_encoder"]["hidden_size"] == 768
    assert (configs["text_encoder_2"]["hidden_size"], configs["text_encoder_2"]["num_hidden_layers"]) == (1280, 32)
    assert configs["vae"]["scaling_factor"] == 0.13025
    assert configs["tokenizer_2"]["pad_token"] == "!"


def test_real_size_parameter_counts_on_the_meta_device():
    """Built without memory; the counts are those of the released SD 1.5 and SDXL base weights."""
    sd15, sdxl = sd15_configs(), sdxl_configs()
    with init_empty_weights():
        assert parameter_count(UNet2DConditionModel(**sd15["unet"])) == 859_520_964
        assert parameter_count(AutoencoderKL(**sd15["vae"])) == 83_653_863
        assert parameter_count(CLIPTextModel(CLIPTextConfig(**sd15["text_encoder"]))) == 123_060_480
        assert parameter_count(UNet2DConditionModel(**sdxl["unet"])) == 2_567_463_684
        assert parameter_count(CLIPTextModelWithProjection(CLIPTextConfig(**sdxl["text_encoder_2"]))) == 694_659_840


def test_configs_are_fresh_copies():
    first = tiny_sd_configs()
    first["unet"]["block_out_channels"].append(128)
    assert tiny_sd_configs()["unet"]["block_out_channels"] == [32, 64]


def test_tiny_components_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = tiny_sd_components(seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    assert model_hash(first) == model_hash(tiny_sd_components(seed=0))
    assert model_hash(first) != model_hash(tiny_sd_components(seed=1))


def test_tiny_sd_pipeline_runs_deterministically(tiny_sd, generate):
    assert isinstance(tiny_sd, StableDiffusionPipeline)
    assert pipeline_kind(tiny_sd) == "sd"
    assert tiny_sd.safety_checker is None and tiny_sd.feature_extractor is None
    assert isinstance(tiny_sd.scheduler, PNDMScheduler)
    images = generate(tiny_sd)
    assert images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(images, generate(tiny_sd))
    assert not np.array_equal(images, generate(tiny_sd, seed=1))


def test_tiny_sdxl_pipeline_runs_deterministically(tiny_sdxl, generate):
    assert isinstance(tiny_sdxl, StableDiffusionXLPipeline)
    assert pipeline_kind(tiny_sdxl) == "sdxl"
    assert isinstance(tiny_sdxl.scheduler, EulerDiscreteScheduler)
    unet = tiny_sdxl.unet.config
    assert unet.addition_embed_type == "text_time"
    assert unet.projection_class_embeddings_input_dim == (
        6 * unet.addition_time_embed_dim + tiny_sdxl.text_encoder_2.config.projection_dim
    )
    images = generate(tiny_sdxl)
    assert images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(images, generate(tiny_sdxl))


def test_tiny_text_encoder_reads_the_real_tokenizer(tiny_sdxl):
    ids = tiny_sdxl.tokenizer("a photo of a cat", padding="max_length", return_tensors="pt").input_ids
    assert tiny_sdxl.text_encoder(ids).last_hidden_state.shape == (1, 77, 32)
    assert tiny_sdxl.text_encoder_2(ids).text_embeds.shape == (1, 32)


def test_training_noise_scheduler_keeps_the_schedule(tiny_sd):
    noise_scheduler = training_noise_scheduler(tiny_sd)
    assert isinstance(noise_scheduler, DDPMScheduler)
    assert noise_scheduler.config.num_train_timesteps == 1000
    assert noise_scheduler.config.beta_schedule == "scaled_linear"
    assert noise_scheduler.config.prediction_type == "epsilon"
    v_config = dict(tiny_sdxl_configs()["scheduler"], prediction_type="v_prediction")
    assert training_noise_scheduler(v_config).config.prediction_type == "v_prediction"


def test_build_components_accepts_any_configs():
    configs = tiny_sd_configs()
    configs["unet"]["layers_per_block"] = 1
    components = build_components(configs, seed=3)
    assert len(components["unet"].down_blocks[0].resnets) == 1
    assert isinstance(build_pipeline(components), StableDiffusionPipeline)
