"""The embedded base's architecture: builds, saves in diffusers format under budget, loads as SD.

Random seeded weights of the embedded architecture (never the shipped ones) except in the
last test, which checks the shipped folder and skips while it is not built.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from fairsynth.models import embedded
from fairsynth.models.embedded import (
    BUILD_COMMAND,
    EMBEDDED_RESOLUTION,
    REQUIRED_FILES,
    WEIGHTS_BUDGET_BYTES,
    EmbeddedBaseMissing,
    embedded_base_path,
    embedded_components,
    embedded_sd_configs,
    folder_bytes,
    save_embedded_pipeline,
    weights_bytes,
)
from fairsynth.models.tokenizer import clip_tokenizer

PROMPT = "a small smooth brown round blob on a beige background"


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedded") / "tiny-sd"
    return save_embedded_pipeline(embedded_components(seed=0), folder)


def _draw(pipe: StableDiffusionPipeline) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT, num_inference_steps=2, height=EMBEDDED_RESOLUTION, width=EMBEDDED_RESOLUTION,
        generator=torch.Generator("cpu").manual_seed(0), output_type="np",
    ).images


def test_architecture_is_sd15_shaped():
    configs = embedded_sd_configs()
    assert configs["unet"]["down_block_types"][0] == "CrossAttnDownBlock2D"
    assert configs["unet"]["cross_attention_dim"] == configs["text_encoder"]["hidden_size"]
    assert configs["vae"]["latent_channels"] == configs["unet"]["in_channels"] == 4
    # 64 px images, VAE downsampling by 4 (three blocks) -> 16x16 latents
    assert configs["unet"]["sample_size"] * 2 ** (len(configs["vae"]["block_out_channels"]) - 1) == EMBEDDED_RESOLUTION
    assert configs["text_encoder"]["vocab_size"] == 49408
    assert configs["scheduler"]["_class_name"] == "PNDMScheduler"


def test_saved_folder_has_the_diffusers_layout_under_budget(saved_folder):
    assert all((saved_folder / name).is_file() for name in REQUIRED_FILES)
    assert not (saved_folder / "tokenizer" / "tokenizer.json").exists()
    assert weights_bytes(saved_folder) <= WEIGHTS_BUDGET_BYTES
    assert folder_bytes(saved_folder) <= 16_000_000
    index = json.loads((saved_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_folder_loads_as_a_float32_stable_diffusion_pipeline(saved_folder):
    pipe = StableDiffusionPipeline.from_pretrained(saved_folder)
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {torch.float32}
    assert pipe.tokenizer(PROMPT + " melanoma").input_ids == clip_tokenizer()(PROMPT + " melanoma").input_ids
    images = _draw(pipe)
    assert images.shape == (1, EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION, 3) and np.isfinite(images).all()


def test_missing_weights_name_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "embedded_base_folder", lambda: tmp_path / "tiny-sd")
    with pytest.raises(EmbeddedBaseMissing) as caught:
        embedded_base_path()
    assert BUILD_COMMAND in str(caught.value)


def test_base_source_embedded_names_the_shipped_folder(saved_folder, tmp_path, monkeypatch):
    from fairsynth.models.loading import load_base, model_hash

    monkeypatch.setattr(embedded, "embedded_base_folder", lambda: tmp_path / "tiny-sd")
    with pytest.raises(EmbeddedBaseMissing, match="the embedded base model is not built"):
        load_base("embedded")
    monkeypatch.setattr(embedded, "embedded_base_folder", lambda: saved_folder)
    assert model_hash(load_base("embedded")) == model_hash(load_base(saved_folder))


def test_shipped_embedded_base_loads():
    try:
        folder = embedded_base_path()
    except EmbeddedBaseMissing as missing:
        pytest.skip(f"shipped weights not built yet: {missing}")
    assert weights_bytes(folder) <= WEIGHTS_BUDGET_BYTES
    assert (folder / "README.md").is_file()
    images = _draw(StableDiffusionPipeline.from_pretrained(folder))
    assert images.shape == (1, EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION, 3)
