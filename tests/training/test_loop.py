"""The loop on a tiny seeded SD-1.5-shaped base and 16 px images: outputs, caching, NaN, resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fairsynth.config import ConfigError
from fairsynth.methods import MethodError
from fairsynth.recipe import load_recipe
from fairsynth.training.checkpoint import list_checkpoints, load_checkpoint
from fairsynth.training.data import EmptyDatasetError
from fairsynth.training.loop import TrainingDiverged, train
from tests.training.conftest import make_prepared, make_recipe

SMALL = {"resolution": "[16]"}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_a_short_run_writes_model_config_info_card_grid_and_logs(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16, synthetic=3)
    recipe = make_recipe(
        tmp_path, tiny_base, manifest, **SMALL, steps=4, keep_checkpoints=1, report_to="tensorboard",
        min_snr_gamma=5.0, noise_offset=0.05, caption_dropout=0.2, gradient_checkpointing="true", **{
            "ema.enabled": "true", "class_diversity.weight": 0.1,
            "validation.every": 4, "validation.num_inference_steps": 2, "validation.fst": "[1, 6]",
            "balance.strategy": "inverse_frequency", "balance.by": "fst",
        },
    )
    result = train(recipe, progress=False)

    model = tmp_path / "train" / "model"
    assert result.model_dir == model and result.steps == 4 and len(result.losses) == 4
    assert all(torch.isfinite(torch.tensor(result.losses)))
    biases = load_file(model / "unet_biases.safetensors")
    info = json.loads((model / "training_info.json").read_text())
    assert info["steps"] == 4 and info["method"] == "test_unet_bias"
    assert info["dataset"]["images"] == 8 and info["dataset"]["synthetic_images"] == 3
    assert info["trainable_parameters"] == sum(t.numel() for t in biases.values())
    assert info["adapter_bytes"] == (model / "unet_biases.safetensors").stat().st_size
    assert len(info["dataset"]["manifest_sha256"]) == 64 and len(info["base_model"]["sha256"]) == 64
    assert info["final_loss"] == result.losses[-1]
    assert list(result.val_losses) == [4] and info["val_loss"] == result.val_losses[4]
    assert "3 synthetic" in (model / "README.md").read_text()
    assert load_recipe(model / "config.yaml") == recipe  # the resolved config reproduces the run

    # EMA: the export holds the averages, the checkpoint the raw trained values
    raw = load_file(tmp_path / "train" / "checkpoints" / "step-000004" / "trainable.safetensors")
    assert _max_difference(raw, biases) > 0
    assert [p.name for p in list_checkpoints(tmp_path / "train" / "checkpoints")] == ["step-000004"]

    grid = Image.open(tmp_path / "train" / "validation" / "step-000004.png")
    assert grid.size == (2 * 16, 2 * 16)  # skin types I and VI x two classes
    cells = json.loads((tmp_path / "train" / "validation" / "step-000004.json").read_text())
    assert [c["prompt"] for c in cells][0] == "a photo of melanoma on skin type 1"
    assert list((tmp_path / "train" / "logs").rglob("events.out.tfevents.*"))


def test_cached_and_uncached_runs_train_the_same(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    cached = train(make_recipe(tmp_path / "a", tiny_base, manifest, **SMALL, steps=3, caption_dropout=0.5), progress=False)
    uncached = train(
        make_recipe(tmp_path / "b", tiny_base, manifest, **SMALL, steps=3, caption_dropout=0.5,
                    cache_latents="false", cache_text="false"),
        progress=False,
    )
    # Same per-step draws; only the VAE's batched vs one-image encoding differs (float rounding).
    torch.testing.assert_close(torch.tensor(cached.losses), torch.tensor(uncached.losses), rtol=1e-4, atol=1e-5)
    text_entries = list((tmp_path / "a" / "cache" / "text").rglob("*.safetensors"))
    captions = {f"a photo of {c} on skin type {f}" for c, f in [("melanoma", 1), ("psoriasis", 2), ("melanoma", 3),
                                                                  ("psoriasis", 4), ("melanoma", 5), ("psoriasis", 6)]}
    assert len(text_entries) == len(captions) + 1  # and the empty caption that dropout uses
    assert not (tmp_path / "b" / "cache").exists()


def test_latent_cache_invalidates_when_the_vae_changes(tmp_path):
    from fairsynth.models.architectures import tiny_sd_components
    from fairsynth.training.caching import LatentCache, encode_moments
    from fairsynth.training.data import load_pixels, make_examples

    manifest = make_prepared(tmp_path / "prepared", n_train=3, n_val=0, size=16)
    from fairsynth.data.records import read_manifest

    examples = make_examples(read_manifest(manifest), manifest.parent, (16, 16))
    vae = tiny_sd_components(seed=0)["vae"]
    first = LatentCache(tmp_path / "cache", vae)
    assert first.fill(examples) == 3 and first.fill(examples) == 0  # the second time: all cached
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(0.5)  # new VAE weights
    second = LatentCache(tmp_path / "cache", vae)
    assert second.key(examples[0]) != first.key(examples[0])
    assert second.fill(examples) == 3
    mean, std = second.moments(examples[:1], "cpu")
    fresh_mean, fresh_std = encode_moments(vae, load_pixels(examples[0].path, (16, 16))[None])
    torch.testing.assert_close(mean, fresh_mean)
    torch.testing.assert_close(std, fresh_std)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, tiny_base, monkeypatch):
    import fairsynth.training.loop as loop

    calls = {"n": 0}
    real = loop.per_sample_mse

    def poisoned(prediction, target):
        calls["n"] += 1
        value = real(prediction, target)
        return value * float("nan") if calls["n"] >= 3 else value  # step 3 diverges

    monkeypatch.setattr(loop, "per_sample_mse", poisoned)
    manifest = make_prepared(tmp_path / "prepared", size=16)
    with pytest.raises(TrainingDiverged) as err:
        train(make_recipe(tmp_path, tiny_base, manifest, **SMALL, steps=6), progress=False)
    message = str(err.value)
    assert "nan at step 3" in message and "step-000002" in message
    kept = list_checkpoints(tmp_path / "train" / "checkpoints")
    assert [p.name for p in kept] == ["step-000002"]
    assert all(torch.isfinite(t).all() for t in load_checkpoint(kept[0]).trainable.values())
    assert not (tmp_path / "train" / "model").exists()


def test_resume_continues_exactly_mid_phase_and_at_a_phase_change(tmp_path, tiny_base):
    """Everything that carries state: two phases, EMA, the class-diversity pool, gradient
    accumulation, a cosine schedule with warm-up, offset noise, caption dropout, Min-SNR."""
    manifest = make_prepared(tmp_path / "prepared", size=16)
    settings = dict(
        **SMALL, steps=6, checkpoint_every=1, keep_checkpoints=10, gradient_accumulation=2, lr_scheduler="cosine",
        warmup_steps=2, min_snr_gamma=5.0, noise_offset=0.1, caption_dropout=0.3,
        **{"options.phases": 2, "ema.enabled": "true", "ema.decay": 0.9, "class_diversity.weight": 0.5,
           "class_diversity.pool_size": 3},
    )
    recipe = make_recipe(tmp_path, tiny_base, manifest, **settings)
    uninterrupted = train(recipe, progress=False)
    checkpoints = tmp_path / "train" / "checkpoints"
    final = load_checkpoint(checkpoints / "step-000006")
    assert "pool/melanoma" in final.extra and final.ema

    for resume_at in (2, 3):  # 2: inside phase 0; 3: phase 1 starts with a fresh optimiser
        for later in list_checkpoints(checkpoints):
            if int(later.name.split("-")[1]) > resume_at:
                shutil.rmtree(later)
        resume = "latest" if resume_at == 2 else checkpoints / f"step-{resume_at:06d}"  # both spellings
        resumed = train(recipe, resume=resume, progress=False)
        assert resumed.losses == uninterrupted.losses[resume_at:]
        again = load_checkpoint(checkpoints / "step-000006")
        assert _max_difference(again.trainable, final.trainable) <= 1e-6
        assert _max_difference(again.ema, final.ema) <= 1e-6
        assert _max_difference(again.extra, final.extra) <= 1e-6


def test_a_checkpoint_left_by_a_kill_while_pruning_is_pruned_when_the_run_resumes(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    recipe = make_recipe(tmp_path, tiny_base, manifest, **SMALL, steps=4, checkpoint_every=2, keep_checkpoints=1)
    train(recipe, progress=False)
    checkpoints = tmp_path / "train" / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000004"]
    # killed after writing the final checkpoint, before deleting the one before it
    shutil.copytree(checkpoints / "step-000004", checkpoints / "step-000002")
    left = tmp_path / "train" / ".losses.csv.k2j4.tmp"  # and a write it interrupted
    left.write_text("step,loss")
    train(recipe, resume="latest", progress=False)
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000004"]
    assert not left.exists()


def test_resume_refuses_a_changed_recipe(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    train(make_recipe(tmp_path, tiny_base, manifest, **SMALL, steps=2), progress=False)
    with pytest.raises(ConfigError, match="learning_rate: 0.001 -> 0.01"):
        train(make_recipe(tmp_path, tiny_base, manifest, **SMALL, steps=2, learning_rate=0.01), resume="latest")


@pytest.mark.parametrize(
    "settings, error, needle",
    [
        ({"split": "test"}, EmptyDatasetError, "no records in split 'test' (train 8, val 2)"),
        ({"options.max_label_id": 0}, MethodError, "class id 1 is out of range"),
        ({"balance.strategy": "mix", "balance.mix": "{V-VI: 1.0}", "balance.by": "label"}, ValueError, "no record has label"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, tiny_base, settings, error, needle):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    with pytest.raises(error) as err:
        train(make_recipe(tmp_path, tiny_base, manifest, **SMALL, **settings), progress=False)
    assert needle in str(err.value)
    assert not (tmp_path / "train" / "checkpoints").exists()


def test_sdxl_trains_with_micro_conditioning_cached_text_and_a_grid(tmp_path, tiny_sdxl_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    recipe = make_recipe(
        tmp_path, tiny_sdxl_base, manifest, **SMALL, method="lora", steps=2, **{
            "validation.every": 2, "validation.num_inference_steps": 1, "validation.fst": "[6]",
        },
    )
    result = train(recipe, progress=False)
    assert result.info["base_model"]["kind"] == "sdxl" and len(result.losses) == 2
    entry = next((tmp_path / "cache" / "text").rglob("*.safetensors"))
    assert set(load_file(entry)) == {"encoder_hidden_states", "text_embeds"}  # pooled embedding cached too
    assert Image.open(tmp_path / "train" / "validation" / "step-000002.png").size == (16, 2 * 16)


def _registered_methods(kind: str) -> list[str]:
    """Every method a module registered for ``kind`` (``sd`` / ``sdxl``), the tests' own left out."""
    from fairsynth.methods import METHODS

    return [name for name in METHODS.names() if not name.startswith("test_") and kind in METHODS.get(name).kinds]


def _trains_two_steps(tmp_path, base, name: str) -> None:
    """The contract end to end: two real steps of ``train()``, each changing what the method
    trains (the checkpoints of steps 1 and 2 differ), finite losses, the method's exports written."""
    manifest = make_prepared(tmp_path / "prepared", size=16)
    recipe = make_recipe(tmp_path / name, base, manifest, **SMALL, method=name, steps=2, checkpoint_every=1, **{
        "validation.every": 2, "validation.num_inference_steps": 1, "validation.fst": "[1]",
    })
    result = train(recipe, progress=False)
    assert len(result.losses) == 2 and all(math.isfinite(loss) for loss in result.losses)
    assert result.exports and all(Path(path).exists() for path in result.exports.values())
    checkpoints = tmp_path / name / "train" / "checkpoints"
    first = load_checkpoint(checkpoints / "step-000001").trainable
    second = load_checkpoint(checkpoints / "step-000002").trainable
    assert all(bool(torch.isfinite(t).all()) for t in second.values())
    shared = first.keys() & second.keys()
    assert second.keys() != first.keys() or any(not torch.equal(first[k], second[k]) for k in shared), (
        f"{name}: the second step changed nothing it trains"
    )


@pytest.mark.parametrize("name", _registered_methods("sd"))
def test_every_registered_method_trains_two_steps(tmp_path, tiny_base, name):
    _trains_two_steps(tmp_path, tiny_base, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", _registered_methods("sdxl"))
def test_every_registered_sdxl_method_trains_two_steps(tmp_path, tiny_sdxl_base, name):
    _trains_two_steps(tmp_path, tiny_sdxl_base, name)


def test_the_same_weights_export_the_same_bytes(tmp_path, tiny_base):
    """The model folder's hash is the trained output's identity (generation records it and a
    resumed generation checks it): writing the same weights again must not change it."""
    from fairsynth.models.loading import model_hash

    manifest = make_prepared(tmp_path / "prepared", size=16)
    recipe = make_recipe(tmp_path, tiny_base, manifest, **SMALL, method="lora", steps=2)
    first = train(recipe, progress=False)
    identity = model_hash(first.model_dir)
    files = {p.name: p.read_bytes() for p in first.model_dir.glob("*.safetensors")}
    assert len(files) == 2  # diffusers' file and the kohya file, each with several metadata keys
    for _ in range(3):  # exported again from the final checkpoint, in a new process state each time
        again = train(recipe, resume="latest", progress=False)
        assert model_hash(again.model_dir) == identity
        assert {p.name: p.read_bytes() for p in again.model_dir.glob("*.safetensors")} == files


def test_resolution_buckets_train_wide_images_at_a_wide_size(tmp_path, tiny_base):
    from fairsynth.data.records import read_manifest, write_manifest

    manifest = make_prepared(tmp_path / "prepared", size=16)
    records = read_manifest(manifest)
    for record in records[:4]:  # four of the images become 32x16 (2:1)
        path = manifest.parent / record.image
        Image.open(path).resize((32, 16)).save(path)
    write_manifest(records, manifest)
    recipe = make_recipe(tmp_path, tiny_base, manifest, **SMALL, steps=3, buckets="[[16, 16], [32, 16]]")
    result = train(recipe, progress=False)
    assert len(result.losses) == 3
    shapes = {tuple(load_file(p)["mean"].shape) for p in (tmp_path / "cache" / "latents").rglob("*.safetensors")}
    assert shapes == {(4, 8, 8), (4, 8, 16)}  # tiny VAE: latents are half the image size


def test_adamw8bit_is_refused_where_it_cannot_run(tmp_path, tiny_base, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without it
    manifest = make_prepared(tmp_path / "prepared", size=16)
    with pytest.raises(ConfigError, match="adamw8bit needs bitsandbytes"):
        train(make_recipe(tmp_path, tiny_base, manifest, **SMALL, optimizer="adamw8bit"), progress=False)
