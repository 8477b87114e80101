"""load_base from a folder, the hub cache (offline) and pickles; model_hash; BaseModelConfig."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from fairsynth.config import ConfigError, from_dict
from fairsynth.models.loading import BaseModelConfig, BaseModelNotFound, load_base, model_hash
from fairsynth.models.single_file import UnsafeCheckpointError, UnsupportedLayoutError, to_original_state_dict

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as the Hugging Face cache holds a downloaded snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / FAKE_COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    return cache


# ---------------------------------------------------------------------------------------
# Diffusers folders
# ---------------------------------------------------------------------------------------


def test_sd_folder_round_trip(tiny_sd, tiny_sd_folder, generate):
    loaded = load_base(tiny_sd_folder)
    assert isinstance(loaded, StableDiffusionPipeline)
    assert loaded.safety_checker is None and loaded.feature_extractor is None
    images = generate(loaded)
    assert images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(images, generate(loaded))
    np.testing.assert_array_equal(images, generate(tiny_sd))
    assert model_hash(loaded) == model_hash(tiny_sd)


def test_sdxl_folder_round_trip(tiny_sdxl, tiny_sdxl_folder, generate):
    loaded = load_base(tiny_sdxl_folder, kind="sdxl")
    assert isinstance(loaded, StableDiffusionXLPipeline)
    assert loaded.tokenizer_2.pad_token == "!"
    images = generate(loaded)
    assert images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(images, generate(tiny_sdxl))
    assert model_hash(loaded) == model_hash(tiny_sdxl)


def test_dtype_is_applied_and_changes_the_hash(tiny_sd, tiny_sd_folder):
    loaded = load_base(tiny_sd_folder, dtype="bfloat16")
    assert loaded.unet.dtype == loaded.vae.dtype == loaded.text_encoder.dtype == torch.bfloat16
    assert model_hash(loaded) != model_hash(tiny_sd)


def test_kind_mismatch_is_refused(tiny_sdxl_folder):
    with pytest.raises(ValueError, match="is an SDXL model, but kind='sd'"):
        load_base(tiny_sdxl_folder, kind="sd")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(BaseModelNotFound, match="no model_index.json"):
        load_base(tmp_path)


def test_other_pipelines_are_refused(tmp_path):
    index = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedLayoutError, match="fairsynth loads Stable Diffusion 1.x/2.x and SDXL"):
        load_base(tmp_path)


def test_missing_path():
    with pytest.raises(BaseModelNotFound, match="does not exist"):
        load_base("./no/such/model.safetensors")


# ---------------------------------------------------------------------------------------
# Hub ids, offline
# ---------------------------------------------------------------------------------------


def test_hub_id_missing_offline_names_what_to_do(offline, tmp_path):
    with pytest.raises(BaseModelNotFound) as caught:
        load_base("runwayml/stable-diffusion-v1-5", cache_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("runwayml/stable-diffusion-v1-5 is not in the local Hugging Face cache")
    assert str(tmp_path) in message and "offline" in message
    assert "hf download runwayml/stable-diffusion-v1-5" in message
    assert "local diffusers folder / single-file checkpoint" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_hub_id_loads_from_the_cache_offline_under_either_name(offline, tmp_path, tiny_sd, tiny_sd_folder):
    cache = fake_hub_cache(tmp_path / "hub", "runwayml/stable-diffusion-v1-5", tiny_sd_folder)
    for repo_id in ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"):
        loaded = load_base(repo_id, cache_dir=cache)
        assert isinstance(loaded, StableDiffusionPipeline) and loaded.safety_checker is None
        assert model_hash(loaded) == model_hash(tiny_sd)


def test_hub_id_partly_cached_offline(offline, tmp_path, tiny_sd_folder):
    cache = fake_hub_cache(tmp_path / "hub", "stabilityai/stable-diffusion-2-1-base", tiny_sd_folder)
    snapshot = cache / "models--stabilityai--stable-diffusion-2-1-base" / "snapshots" / FAKE_COMMIT
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BaseModelNotFound, match="only partly in the local Hugging Face cache"):
        load_base("stabilityai/stable-diffusion-2-1-base", cache_dir=cache)


# ---------------------------------------------------------------------------------------
# Pickles
# ---------------------------------------------------------------------------------------

CODE_RAN: list[str] = []


def _record_code_execution() -> str:
    CODE_RAN.append("unpickled")
    return "payload"


class _Payload:
    """Stands in for the arbitrary objects (and code) a downloaded pickle may carry."""

    def __reduce__(self):
        return (_record_code_execution, ())


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickle_with_objects_is_refused_without_running_it(tmp_path, tiny_sd, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": to_original_state_dict(tiny_sd), "callbacks": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=f"model{suffix} holds pickled Python objects"):
        load_base(path)
    assert CODE_RAN == []


def test_tensor_only_ckpt_loads(tmp_path, tiny_sd, tiny_sd_folder):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": to_original_state_dict(tiny_sd), "global_step": 1}, path)
    loaded = load_base(path, single_file_config=tiny_sd_folder)
    assert model_hash(loaded) == model_hash(tiny_sd)


# ---------------------------------------------------------------------------------------
# model_hash
# ---------------------------------------------------------------------------------------


def test_model_hash_tracks_every_weight(tiny_sd, tiny_sd_folder):
    pipe = load_base(tiny_sd_folder)
    before = model_hash(pipe)
    assert before == model_hash(pipe) == model_hash(tiny_sd) and len(before) == 64
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias[0] += 1e-3
    assert model_hash(pipe) != before
    assert model_hash(pipe.vae) != model_hash(tiny_sd.vae)
    assert model_hash(pipe.unet) == model_hash(tiny_sd.unet)
    assert model_hash(pipe.unet) != model_hash(pipe.text_encoder)


def test_model_hash_of_folders_and_files(tmp_path, tiny_sd, tiny_sd_folder):
    again = tmp_path / "again"
    tiny_sd.save_pretrained(again)
    assert model_hash(tiny_sd_folder) == model_hash(again)
    weights = again / "unet" / "diffusion_pytorch_model.safetensors"
    assert model_hash(weights) == model_hash(tiny_sd_folder / "unet" / "diffusion_pytorch_model.safetensors")
    changed = load_base(again)
    with torch.no_grad():
        changed.unet.conv_out.weight[0, 0, 0, 0] += 1.0
    changed.save_pretrained(again)
    assert model_hash(again) != model_hash(tiny_sd_folder)
    with pytest.raises(FileNotFoundError, match="no weight files"):
        model_hash(tmp_path / "again" / "scheduler")


# ---------------------------------------------------------------------------------------
# BaseModelConfig
# ---------------------------------------------------------------------------------------


def test_base_model_config_fields_have_help_and_validate():
    fields = {field.name: field for field in dataclasses.fields(BaseModelConfig)}
    assert {"source", "revision", "variant", "dtype", "kind"} <= set(fields)
    assert all(field.metadata.get("help") for field in fields.values())
    assert from_dict(BaseModelConfig, {"dtype": "float16", "kind": "sdxl"}).dtype == "float16"
    with pytest.raises(ConfigError, match="dtype"):
        BaseModelConfig(dtype="float8")
    with pytest.raises(ConfigError, match="kind"):
        from_dict(BaseModelConfig, {"kind": "flux"})


def test_base_model_config_keywords_match_load_base(tiny_sd_folder):
    cfg = BaseModelConfig(source=str(tiny_sd_folder))
    assert isinstance(load_base(**dataclasses.asdict(cfg)), StableDiffusionPipeline)
