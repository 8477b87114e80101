"""Single-file (A1111/ComfyUI layout) checkpoints: written by fairsynth, loaded offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from fairsynth.models.architectures import sd15_configs, sdxl_configs, tiny_sd_configs, tiny_sdxl_configs
from fairsynth.models.loading import load_base, model_hash
from fairsynth.models.single_file import (
    UnsupportedLayoutError,
    checkpoint_family,
    checkpoint_shapes,
    expected_shapes,
    save_single_file,
    write_config_folder,
)


@pytest.fixture(scope="module")
def tiny_sd_file(tiny_sd, tmp_path_factory):
    return save_single_file(tiny_sd, tmp_path_factory.mktemp("sd-file") / "tiny-sd.safetensors")


@pytest.fixture(scope="module")
def tiny_sdxl_file(tiny_sdxl, tmp_path_factory):
    return save_single_file(tiny_sdxl, tmp_path_factory.mktemp("sdxl-file") / "tiny-sdxl.safetensors")


def test_file_uses_the_original_names(tiny_sd_file, tiny_sdxl_file):
    sd_shapes = checkpoint_shapes(tiny_sd_file)
    assert checkpoint_family(sd_shapes) == "sd1"
    assert "model.diffusion_model.input_blocks.0.0.weight" in sd_shapes
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in sd_shapes
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in sd_shapes
    sdxl_shapes = checkpoint_shapes(tiny_sdxl_file)
    assert checkpoint_family(sdxl_shapes) == "sdxl"
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in sdxl_shapes
    assert "model.diffusion_model.label_emb.0.0.weight" in sdxl_shapes


def test_sd_round_trip_with_the_saved_folder_as_config(tiny_sd, tiny_sd_file, tiny_sd_folder, generate):
    loaded = load_base(tiny_sd_file, single_file_config=tiny_sd_folder)
    assert isinstance(loaded, StableDiffusionPipeline) and loaded.safety_checker is None
    assert model_hash(loaded) == model_hash(tiny_sd)
    np.testing.assert_array_equal(generate(loaded), generate(tiny_sd))


def test_sdxl_round_trip_with_the_saved_folder_as_config(tiny_sdxl, tiny_sdxl_file, tiny_sdxl_folder, generate):
    loaded = load_base(tiny_sdxl_file, single_file_config=tiny_sdxl_folder)
    assert isinstance(loaded, StableDiffusionXLPipeline)
    assert model_hash(loaded) == model_hash(tiny_sdxl)
    np.testing.assert_array_equal(generate(loaded), generate(tiny_sdxl))


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_round_trip_with_a_config_only_folder(which, tmp_path, request):
    """The path load_base takes for real SD 1.5 / SDXL files (built-in configs), at tiny size."""
    pipe = request.getfixturevalue(f"tiny_{which}")
    file = request.getfixturevalue(f"tiny_{which}_file")
    configs = tiny_sd_configs() if which == "sd" else tiny_sdxl_configs()
    folder = write_config_folder(configs, tmp_path / "configs")
    assert not list(folder.rglob("*.safetensors"))
    assert model_hash(load_base(file, single_file_config=folder)) == model_hash(pipe)
    half = load_base(file, single_file_config=folder, dtype="float16")
    assert half.unet.dtype == half.vae.dtype == half.text_encoder.dtype == torch.float16


def test_without_config_a_file_must_match_the_real_architecture(tiny_sd_file):
    with pytest.raises(UnsupportedLayoutError, match="does not have the SD 1.5 architecture"):
        load_base(tiny_sd_file)


def test_uncached_hub_config_offline(tiny_sd_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-v1-5 is not in the local"):
        load_base(tiny_sd_file, single_file_config="stable-diffusion-v1-5/stable-diffusion-v1-5", cache_dir=tmp_path)


def test_kind_is_read_from_the_file(tiny_sdxl_file, tiny_sdxl_folder):
    with pytest.raises(ValueError, match="is an SDXL model, but kind='sd'"):
        load_base(tiny_sdxl_file, kind="sd", single_file_config=tiny_sdxl_folder)


def test_non_sd_file_is_refused(tmp_path):
    path = tmp_path / "classifier.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UnsupportedLayoutError, match="not an SD 1.x/2.x or SDXL base checkpoint"):
        load_base(path)


def test_adapter_weights_must_be_merged_first(tiny_sd, tmp_path):
    from peft import LoraConfig

    components = dict(tiny_sd.components)
    components["unet"] = type(tiny_sd.unet).from_config(tiny_sd.unet.config)
    components["unet"].add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    with pytest.raises(UnsupportedLayoutError, match="merge them"):
        save_single_file(components, tmp_path / "lora.safetensors")


def test_only_safetensors_are_written(tiny_sd, tmp_path):
    with pytest.raises(ValueError, match=".safetensors only"):
        save_single_file(tiny_sd, tmp_path / "model.ckpt")


@pytest.mark.parametrize(
    ("configs", "known"),
    [
        (
            sd15_configs,
            {
                # names and shapes as in v1-5-pruned-emaonly.safetensors
                "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
                "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
                "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
                "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
                "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
            },
        ),
        (
            sdxl_configs,
            {
                # names and shapes as in sd_xl_base_1.0.safetensors
                "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
                "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
                "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
                "conditioner.embedders.1.model.text_projection": (1280, 1280),
                "conditioner.embedders.1.model.positional_embedding": (77, 1280),
            },
        ),
    ],
)
def test_real_architectures_expect_the_released_names(configs, known):
    shapes = expected_shapes(configs())
    for key, shape in known.items():
        assert shapes[key] == shape, key
