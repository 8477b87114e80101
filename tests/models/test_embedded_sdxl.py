"""The shipped SDXL-shaped embedded base (tiny-sdxl): loads as SDXL, trains and generates end to end.

The architecture tests use seeded random weights; the others use the shipped folder, loaded
once per session, and skip while it is not built.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from typer.testing import CliRunner

from fairsynth.models import embedded
from fairsynth.models.architectures import build_components
from fairsynth.models.embedded import (
    BUILD_COMMAND_SDXL,
    EMBEDDED_RESOLUTION,
    REQUIRED_FILES_SDXL,
    EmbeddedBaseMissing,
    embedded_base_path,
    embedded_sdxl_base_path,
    embedded_sdxl_configs,
)

PROMPT = "a small smooth brown round blob on a beige background"


@pytest.fixture(scope="session")
def shipped_sdxl() -> Path:
    try:
        return embedded_sdxl_base_path()
    except EmbeddedBaseMissing as missing:
        pytest.skip(f"shipped SDXL weights not built yet: {missing}")


@pytest.fixture(scope="session")
def shipped_sdxl_pipeline(shipped_sdxl) -> StableDiffusionXLPipeline:
    """The shipped folder loaded once with diffusers' own SDXL pipeline."""
    pipe = StableDiffusionXLPipeline.from_pretrained(shipped_sdxl)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_architecture_is_sdxl_shaped_on_the_sd_base():
    configs = embedded_sdxl_configs()
    unet = configs["unet"]
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert unet["addition_embed_type"] == "text_time" and unet["use_linear_projection"]
    assert unet["cross_attention_dim"] == configs["text_encoder"]["hidden_size"] + configs["text_encoder_2"]["hidden_size"]
    # pooled text embedding + six micro-conditioning numbers (original size, crop, target size)
    assert unet["projection_class_embeddings_input_dim"] == (
        configs["text_encoder_2"]["projection_dim"] + 6 * unet["addition_time_embed_dim"]
    )
    assert unet["sample_size"] * 2 ** (len(configs["vae"]["block_out_channels"]) - 1) == EMBEDDED_RESOLUTION
    assert configs["scheduler"]["_class_name"] == "EulerDiscreteScheduler"
    assert configs["tokenizer_2"]["pad_token"] == "!"
    components = build_components(configs, seed=0)
    assert components["unet"].add_embedding.linear_1.in_features == unet["projection_class_embeddings_input_dim"]


def test_missing_weights_name_the_build_command(tmp_path, monkeypatch):
    from fairsynth.models.loading import load_base

    monkeypatch.setattr(embedded, "embedded_sdxl_base_folder", lambda: tmp_path / "tiny-sdxl")
    with pytest.raises(EmbeddedBaseMissing, match="the embedded SDXL base model is not built") as caught:
        load_base("embedded-sdxl")
    assert BUILD_COMMAND_SDXL in str(caught.value)


def test_shipped_folder_loads_as_sdxl_and_draws_a_finite_64_px_image(shipped_sdxl, shipped_sdxl_pipeline):
    assert all((shipped_sdxl / name).is_file() for name in REQUIRED_FILES_SDXL)
    assert json.loads((shipped_sdxl / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    pipe = shipped_sdxl_pipeline
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)} == {torch.float32}
    images = pipe(
        PROMPT, num_inference_steps=2, height=EMBEDDED_RESOLUTION, width=EMBEDDED_RESOLUTION,
        generator=torch.Generator("cpu").manual_seed(0), output_type="np",
    ).images
    assert images.shape == (1, EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION, 3) and np.isfinite(images).all()


def test_reused_components_are_the_sd_base_s(shipped_sdxl):
    """vae/, text_encoder/ and tokenizer/ are byte copies of tiny-sd's (git stores them once)."""
    sd = embedded_base_path()
    for name in ("vae", "text_encoder", "tokenizer"):
        for file in (sd / name).iterdir():
            assert (shipped_sdxl / name / file.name).read_bytes() == file.read_bytes(), f"{name}/{file.name}"
    for name in ("vocab.json", "merges.txt"):
        assert (shipped_sdxl / "tokenizer_2" / name).read_bytes() == (sd / "tokenizer" / name).read_bytes()


def test_base_source_embedded_sdxl_loads_the_shipped_folder(shipped_sdxl):
    from fairsynth.models.loading import load_base, model_hash

    pipe = load_base("embedded-sdxl")
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert model_hash(pipe) == model_hash(load_base(shipped_sdxl))


def _card_table(card: str) -> dict[str, float]:
    """``{"held_out_background": 0.812, ...}`` from the model card's prompt-following table."""
    rows = re.findall(r"^\| (held_out|seen) \| (\w+) \| ([0-9.]+) \|", card, flags=re.MULTILINE)
    return {f"{split}_{name}": float(value) for split, name, value in rows}


def test_model_card_numbers_match_the_recorded_measurements(shipped_sdxl):
    measured = json.loads((shipped_sdxl / "measurements.json").read_text())
    card = (shipped_sdxl / "README.md").read_text()
    table = _card_table(card)
    assert set(table) == {f"{s}_{n}" for s in ("held_out", "seen") for n in ("background", "colour", "size", "all")}
    for key, value in table.items():
        assert value == pytest.approx(measured["prompt_following"][key], abs=5e-4), key
    assert measured["command"] in card and f"UNet steps: {measured['unet_step']}" in card
    assert json.dumps(measured["last_losses"]) in card
    # the card's folder size is the folder's, minus the two files written after it was measured
    files = [p for p in shipped_sdxl.rglob("*") if p.is_file() and p.name not in ("README.md", "measurements.json")]
    assert measured["sizes"]["folder_bytes"] == sum(p.stat().st_size for p in files)
    # every number of the documented table of embedded bases is the card's
    documented = (Path(__file__).resolve().parents[2] / "docs" / "guides" / "base-models.md").read_text()
    line = next(row for row in documented.splitlines() if row.startswith("| `embedded-sdxl`"))
    assert [float(x) for x in re.findall(r"\d\.\d{3}", line)] == [
        round(measured["prompt_following"][f"{s}_{n}"], 3) for s in ("held_out", "seen") for n in ("background", "colour", "size")
    ]


def test_train_lora_then_generate_with_the_adapter(tmp_path, shipped_sdxl):
    """`fairsynth train` (LoRA, 2 steps) and `fairsynth generate` with its adapter, on embedded-sdxl."""
    from fairsynth.cli import app
    from tests.training.conftest import make_prepared

    manifest = make_prepared(tmp_path / "prepared", n_train=4, n_val=2, size=EMBEDDED_RESOLUTION)
    common = [f"workdir={tmp_path}", f"prepare.resolution=[{EMBEDDED_RESOLUTION}]", "train.base.source=embedded-sdxl"]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", *common, f"train.data={manifest}", "train.method=lora",
                                  "train.options={rank: 4}", f"train.resolution=[{EMBEDDED_RESOLUTION}]",
                                  "train.steps=2", "train.batch_size=2", "train.report_to=none"])
    assert trained.exit_code == 0, trained.output
    model = tmp_path / "train" / "model"
    info = json.loads((model / "training_info.json").read_text())
    assert info["base_model"]["kind"] == "sdxl" and info["steps"] == 2
    assert (model / "pytorch_lora_weights.safetensors").is_file()

    generated = runner.invoke(app, ["generate", *common, f"train.data={manifest}", f"generate.real={manifest}",
                                    "filter.checks=[resolution]", "generate.plan.total=2", "generate.plan.by=[]",
                                    "generate.steps=2", "generate.batch_size=2", "generate.scheduler=ddim",
                                    f"generate.resolution=[{EMBEDDED_RESOLUTION}]"])
    assert generated.exit_code == 0, generated.output
    rows = [json.loads(line) for line in (tmp_path / "generated" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["adapter_methods"] == ["lora"] for row in rows)
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "generated" / rows[0]["file_name"]))
    assert image.shape == (EMBEDDED_RESOLUTION, EMBEDDED_RESOLUTION, 3) and image.std() > 0
