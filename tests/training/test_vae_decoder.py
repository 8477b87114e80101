"""Adapting the VAE's decoder to the training images: what trains, what it improves, how generation uses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairsynth.config import ConfigError
from fairsynth.data.records import Record, write_manifest
from fairsynth.generation.config import AdapterSpec, GenerateConfig
from fairsynth.generation.pipeline import load_sampler
from fairsynth.generation.writer import GenerationError
from fairsynth.models.loading import BaseModelConfig, load_base
from fairsynth.training.loop import train
from fairsynth.training.vae_decoder import psnr, reconstruction_loss
from tests.training.conftest import make_recipe


def smooth_domain(folder: Path, n_train: int = 12, n_val: int = 4, size: int = 16) -> Path:
    """A domain of its own: dark olive images with one brighter disc, as no base VAE has seen them."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    records = []
    for i in range(n_train + n_val):
        rng = np.random.default_rng(i)
        background = np.array([70, 60, 30]) + rng.integers(-10, 10, 3)
        disc = ((yy - rng.uniform(4, 12)) ** 2 + (xx - rng.uniform(4, 12)) ** 2) < rng.uniform(6, 16)
        array = np.where(disc[..., None], background + np.array([60, 20, -10]), background).clip(0, 255).astype(np.uint8)
        name = f"images/d{i:03d}.png"
        Image.fromarray(array, "RGB").save(folder / name)
        label = ("melanoma", "psoriasis")[i % 2]
        fst = 6 if i % 3 else 1
        records.append(Record(f"d{i}", name, label, f"a photo of {label}", {"fst": fst, "split": "train" if i < n_train else "val"}))
    return write_manifest(records, folder / "metadata.jsonl")


def state(module: torch.nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if k.startswith(prefixes)}


ENCODER = ("encoder.", "quant_conv.")
DECODER = ("decoder.", "post_quant_conv.")


def test_the_loss_and_psnr_are_the_formulas():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.5)
    assert float(reconstruction_loss(a, b)) == pytest.approx(0.5 + 0.25)
    # MSE 0.25 for a peak-to-peak range of 2: 10 log10(4 / 0.25) = 12.04 dB
    torch.testing.assert_close(psnr(a, b), torch.full((2,), 10 * np.log10(16.0)))


def test_decoder_adaptation_trains_the_decoder_alone_improves_held_out_reconstructions_and_generation_uses_it(tmp_path, tiny_base):
    manifest = smooth_domain(tmp_path / "prepared")
    settings = {"resolution": "[16]", "steps": 2, "batch_size": 4, "validation.split": "val",
                "vae_decoder.steps": 60, "vae_decoder.learning_rate": 3e-3}
    result = train(make_recipe(tmp_path, tiny_base, manifest, **settings), progress=False)

    model = result.model_dir
    base_vae = load_base(str(tiny_base)).vae
    adapted = type(base_vae).from_pretrained(str(model / "vae"))
    for name, tensor in state(base_vae, ENCODER).items():
        assert torch.equal(tensor, adapted.state_dict()[name]), f"{name} changed: the latent space must stay the base's"
    assert any(not torch.equal(v, adapted.state_dict()[k]) for k, v in state(base_vae, DECODER).items())

    report = json.loads((model / "training_info.json").read_text())["vae_decoder"]
    assert report["steps"] == 60 and report["final_loss"] < report["first_loss"]
    before, after = report["validation_before"], report["validation_after"]
    assert before["images"] == after["images"] == 4  # the held-out split, not the training images
    assert after["psnr_db"] > before["psnr_db"] + 1.0, (before, after)
    assert set(after["psnr_db_by_fst"]) == {"I", "VI"} and set(after["psnr_db_by_class"]) == {"melanoma", "psoriasis"}

    # The same settings give the same decoder (every draw is seeded by the run's seed and step).
    again = train(make_recipe(tmp_path / "again", tiny_base, manifest, **settings), progress=False)
    second = type(base_vae).from_pretrained(str(again.model_dir / "vae"))
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in adapted.state_dict().items())

    # Generation decodes with the adapted VAE of the trained output and says so.
    config = GenerateConfig(base=BaseModelConfig(source=str(tiny_base)), adapters=[AdapterSpec(path=str(model))],
                            resolution=[16])
    sampler = load_sampler(config, torch.device("cpu"), torch.float32)
    assert sampler.vae_source == str(model / "vae")
    assert all(torch.equal(v, sampler.pipe.vae.state_dict()[k]) for k, v in adapted.state_dict().items())

    # A VAE whose encoder is not the base's would change what the latents mean: refused.
    foreign = tmp_path / "foreign"
    shutil.copytree(model, foreign)
    with torch.no_grad():
        adapted.encoder.conv_in.weight.add_(0.01)
    adapted.save_pretrained(foreign / "vae", safe_serialization=True)
    config.adapters = [AdapterSpec(path=str(foreign))]
    with pytest.raises(GenerationError, match="encoder differs"):
        load_sampler(config, torch.device("cpu"), torch.float32)


def test_a_method_that_trains_the_vae_refuses_decoder_adaptation(tmp_path, tiny_base):
    manifest = smooth_domain(tmp_path / "prepared", n_train=4, n_val=0)
    recipe = make_recipe(tmp_path, tiny_base, manifest, resolution="[16]", steps=1, batch_size=2, method="full",
                         options="{train: [vae]}", **{"vae_decoder.steps": 5})
    with pytest.raises(ConfigError, match="trains the VAE itself"):
        train(recipe, progress=False)


def test_bad_settings_are_errors(tmp_path, tiny_base):
    manifest = smooth_domain(tmp_path / "prepared", n_train=4, n_val=0)
    for key, value, needle in (("steps", -1, "steps must be >= 0"), ("learning_rate", 0, "learning_rate must be > 0"),
                               ("batch_size", 0, "batch_size must be >= 1")):
        with pytest.raises(ConfigError, match=needle):
            make_recipe(tmp_path, tiny_base, manifest, **{f"vae_decoder.{key}": value})
