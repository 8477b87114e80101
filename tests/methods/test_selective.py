"""BitFit, DiffFit and full fine-tuning: what trains, at which learning rate, and the exports."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from fairsynth.config import ConfigError, from_dict
from fairsynth.methods import METHODS
from fairsynth.methods._export import load_weights
from fairsynth.methods.base import Phase
from tests.methods.export_checks import fresh_pipeline, images, one_thread, trained_pipeline  # noqa: F401
from tests.methods.training_steps import derm_records, tiny, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

NETWORKS = ("unet", "text_encoder", "vae")
#: The seven full fine-tuning combinations of the PixelUPressure comparison.
COMBINATIONS = [list(c) for n in (1, 2, 3) for c in itertools.combinations(NETWORKS, n)]


def make(name: str, **options: object):
    method_class = METHODS.get(name)
    return method_class(from_dict(method_class.Config, options))


def test_bitfit_trains_biases_only_and_exports_them(tmp_path: Path) -> None:
    method = make("bitfit", apply_to="both", text_encoder_lr=1e-4)
    components, raw = tiny("sd")
    run = train_steps(method, components, derm_records(2), steps=1, learning_rate=1e-2)
    (groups,) = run.groups
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-2), ("text_encoder", 1e-4)]
    assert all(k.endswith(".bias") for k in method.trainable_state(components))
    files = method.export(components, tmp_path / "out")
    pipe = fresh_pipeline("sd")
    load_weights(pipe, files["weights"])
    assert abs(images(pipe) - images(trained_pipeline(components, raw))).max() < 1e-6


def test_difffit_scales_start_at_identity_and_fold_into_the_export(tmp_path: Path) -> None:
    method = make("difffit")
    components, raw = tiny("sdxl")
    method.check(components, [])
    before = images(trained_pipeline(components, raw))
    method.prepare(components)
    method.prepare(components)  # idempotent
    scales = {k: v for k, v in method.trainable_state(components).items() if k.endswith("difffit_scale")}
    from diffusers.models.attention import BasicTransformerBlock

    blocks = sum(isinstance(m, BasicTransformerBlock) for m in components.unet.modules())
    assert blocks == 12 and len(scales) == 3 * blocks  # attn1, attn2, ff of each transformer block
    assert all(torch.equal(v, torch.ones_like(v)) for v in scales.values())
    assert abs(images(trained_pipeline(components, raw)) - before).max() == 0  # γ = 1 changes nothing
    assert any(k.endswith("norm1.weight") for k in method.trainable_state(components))

    train_steps(method, components, derm_records(2), steps=1, prepared=True, learning_rate=1e-2)
    assert any(not torch.equal(v, torch.ones_like(v)) for k, v in method.trainable_state(components).items() if k in scales)
    files = method.export(components, tmp_path / "out")
    pipe = fresh_pipeline("sdxl")
    load_weights(pipe, files["weights"])  # plain weights: γ folded into to_out.0 / ff.net.2
    assert abs(images(pipe) - images(trained_pipeline(components, raw))).max() < 1e-5


def test_difffit_without_norms_or_scales_is_bitfit() -> None:
    components, _ = tiny("sd")
    difffit = make("difffit", norms=False, scale_factors=False)
    difffit.prepare(components)
    assert set(difffit.trainable_state(components)) == set(make("bitfit").trainable_state(components))


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
@pytest.mark.parametrize("train", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_full_trains_each_combination_at_its_own_rate(kind: str, train: list[str]) -> None:
    rates = {"unet_lr": 1e-5, "text_encoder_lr": 2e-5, "vae_lr": 3e-5}
    options = {f"{n}_lr": rates[f"{n}_lr"] for n in train if n != "unet"}  # the UNet keeps the run's rate
    method = make("full", train=train, **options)
    components, _ = tiny(kind)
    groups = method.parameter_groups(components, Phase("train", 1), 1e-4)
    expected = {"unet": 1e-4, "text_encoder": 2e-5, "text_encoder_2": 2e-5, "vae": 3e-5}
    names = [n for n in ("unet", "text_encoder", "text_encoder_2", "vae")
             if (n.removesuffix("_2") in train) and (n != "text_encoder_2" or kind == "sdxl")]
    assert [g["name"] for g in groups] == names
    assert all(g["lr"] == expected[g["name"]] for g in groups)
    trainable = sum(p.numel() for m in components.modules().values() for p in m.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for g in groups for p in g["params"])
    assert trainable == sum(p.numel() for n in names for p in components.modules()[n].parameters())
    assert method.trains_text_encoder == ("text_encoder" in train)
    assert method.trains_vae == ("vae" in train)


@pytest.mark.parametrize("options, message", [
    ({"train": []}, "at least one"),
    ({"train": ["unet", "unet"]}, "twice"),
    ({"train": ["unet"], "vae_lr": 1e-5}, "vae_lr is set but vae is not in train"),
    ({"train": ["vae"], "vae_lr": 0.0}, "vae_lr must be > 0"),
    ({"apply_to": "both"}, "not apply_to"),
    ({"train": ["unet", "clip"]}, "is not one of"),
])
def test_full_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(METHODS.get("full").Config, options)


def test_full_vae_learns_through_the_latents_it_encodes() -> None:
    method = make("full", train=["vae"])
    components, _ = tiny("sd")
    (group,) = method.parameter_groups(components, Phase("train", 1), 1e-3)
    images_in = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, 3, H, W)
    latents = components.vae.encode(images_in).latent_dist.mean * components.vae.config.scaling_factor  # (B, 4, H/2, W/2)
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([10, 500])
    noisy = components.noise_scheduler.add_noise(latents, noise, timesteps)
    cond = method.encode(components, method_batch(["a photo", "a photo"]))
    pred = components.unet(noisy, timesteps, cond.encoder_hidden_states).sample
    torch.nn.functional.mse_loss(pred, noise).backward()
    assert components.vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert components.vae.decoder.conv_in.weight.grad is None  # only the encoder sees the loss
    assert all(p.grad is None for p in components.unet.parameters())


def method_batch(captions: list[str]):
    from fairsynth.methods.base import Batch

    return Batch(captions, [])


def test_full_export_is_save_pretrained_folders(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    method = make("full", train=["unet", "text_encoder", "vae"])
    components, raw = tiny("sd")
    train_steps(method, components, derm_records(2), steps=1, learning_rate=1e-3)
    files = method.export(components, tmp_path / "out")
    assert {"unet", "text_encoder", "vae"} <= set(files)
    assert not list((tmp_path / "out").rglob("*.bin"))
    pipe = fresh_pipeline("sd")
    pipe.unet = UNet2DConditionModel.from_pretrained(files["unet"])
    pipe.text_encoder = CLIPTextModel.from_pretrained(files["text_encoder"])
    pipe.vae = AutoencoderKL.from_pretrained(files["vae"])
    assert abs(images(pipe) - images(trained_pipeline(components, raw))).max() < 1e-6
