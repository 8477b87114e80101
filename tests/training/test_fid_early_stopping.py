"""FID during training (the `random` test extractor) and early stopping on a plateau."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from fairsynth.config import ConfigError
from fairsynth.metrics.extractors import WeightsNotFound
from fairsynth.training.config import FidConfig
from fairsynth.training.loop import train
from tests.training.conftest import make_prepared, make_recipe

FID = {"fid.extractor": "random", "fid.num_images": 4, "validation.num_inference_steps": 2}


def test_fid_config_is_checked():
    with pytest.raises(ConfigError, match="train.fid.every"):
        FidConfig(every=-1)
    with pytest.raises(ConfigError, match="train.fid.num_images"):
        FidConfig(num_images=1)
    with pytest.raises(ConfigError, match="train.fid.patience"):
        FidConfig(patience=-1)
    with pytest.raises(ConfigError, match="train.fid.min_delta"):
        FidConfig(min_delta=-0.5)
    assert FidConfig().every == 0 and FidConfig().extractor == "inception"


def test_fid_is_measured_stops_on_a_plateau_and_leaves_the_weights_alone(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    plain = train(make_recipe(tmp_path / "off", tiny_base, manifest, resolution="[16]", steps=4), progress=False)

    # patience 1 and a huge min_delta: the 2nd measurement (step 4) is "no improvement" -> stop.
    stopped = train(
        make_recipe(tmp_path / "on", tiny_base, manifest, resolution="[16]", steps=8, checkpoint_every=3, **FID, **{
            "fid.every": 2, "fid.patience": 1, "fid.min_delta": 1e9,
        }),
        progress=False,
    )
    assert stopped.steps == 4 and len(stopped.losses) == 4
    info = json.loads((stopped.model_dir / "training_info.json").read_text())
    assert [m["step"] for m in info["fid"]] == [2, 4]
    assert all(m["extractor"] == "random" and len(m["weights_sha256"]) == 64 and m["fid"] >= 0 for m in info["fid"])
    assert info["stopped_early"] is True and info["steps"] == 4
    assert info["fid_best_step"] == 2 and info["fid_best"] == info["fid"][0]["fid"]
    assert info["fid_extractor"]["test_only"] is True and "RANDOM WEIGHTS" in info["fid_extractor"]["warning"]
    # a final checkpoint at the stopping step (not a multiple of checkpoint_every) and the exports
    assert (tmp_path / "on" / "train" / "checkpoints" / "step-000004").is_dir()
    assert (stopped.model_dir / "unet_biases.safetensors").is_file() and (stopped.model_dir / "README.md").is_file()

    # The FID it stopped on is the FID of the weights it had then: torchmetrics' FID, with the
    # same extractor, between the training images and images drawn as documented (captions
    # cycled in manifest order, image k seeded fid.seed + k) from the step-4 checkpoint.
    recipe = make_recipe(tmp_path / "on", tiny_base, manifest, resolution="[16]", steps=8, **FID)
    expected = _fid_of_checkpoint(recipe, tiny_base, manifest, tmp_path / "on" / "train" / "checkpoints" / "step-000004")
    assert info["fid"][1]["fid"] == pytest.approx(expected, rel=1e-4)

    # FID on trains exactly the weights of FID off, up to the stopping step.
    torch.testing.assert_close(stopped.losses, plain.losses, rtol=0, atol=0)
    on = load_file(stopped.model_dir / "unet_biases.safetensors")
    off = load_file(plain.model_dir / "unet_biases.safetensors")
    assert on.keys() == off.keys()
    for key in on:
        assert torch.equal(on[key], off[key]), key


def _fid_of_checkpoint(recipe, base, manifest, checkpoint) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    from fairsynth.data.preprocess import load_rgb
    from fairsynth.data.records import read_manifest
    from fairsynth.methods.base import Components
    from fairsynth.metrics.extractors import create_extractor, prepare_image
    from fairsynth.models.architectures import training_noise_scheduler
    from fairsynth.models.loading import load_base
    from fairsynth.training.checkpoint import load_checkpoint
    from fairsynth.training.validation import GridCell, sample_images

    cfg = recipe.train
    pipe = load_base(str(base))
    components = Components.from_pipeline(pipe, training_noise_scheduler(pipe))
    components.freeze_all()
    method = cfg.build_method()
    method.prepare(components)
    method.load_trainable_state(components, load_checkpoint(checkpoint).trainable)
    records = [r for r in read_manifest(manifest) if r.split == cfg.split]
    cells = [GridCell(r.label, r.fst, r.caption, r) for r in (records[k % len(records)] for k in range(cfg.fid.num_images))]
    sampling = dataclasses.replace(cfg.validation, seed=cfg.fid.seed)
    images = sample_images(components, method, cells, cfg.size, sampling, "cpu")
    extractor = create_extractor("random")
    batch = lambda pictures: torch.stack([  # noqa: E731
        torch.from_numpy(prepare_image(p.convert("RGB"), extractor.input_size)).permute(2, 0, 1) for p in pictures
    ])
    fid = FrechetInceptionDistance(feature=extractor.load()).double()
    fid.update(batch([load_rgb(manifest.parent / r.image) for r in records]), real=True)
    fid.update(batch(images), real=False)
    return float(fid.compute())


def test_fid_without_improvement_limit_runs_to_the_end(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    result = train(
        make_recipe(tmp_path, tiny_base, manifest, resolution="[16]", steps=2, **FID, **{"fid.every": 1}),
        progress=False,
    )
    info = json.loads((result.model_dir / "training_info.json").read_text())
    assert result.steps == 2 and [m["step"] for m in info["fid"]] == [1, 2] and info["stopped_early"] is False


def test_missing_fid_weights_fail_before_training(tmp_path, tiny_base, monkeypatch):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("FAIRSYNTH_WEIGHTS", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FAIRSYNTH_OFFLINE", "1")
    manifest = make_prepared(tmp_path / "prepared", size=16)
    recipe = make_recipe(tmp_path, tiny_base, manifest, resolution="[16]", steps=2, **{"fid.every": 1})
    with pytest.raises(WeightsNotFound) as err:
        train(recipe, progress=False)
    message = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message and "fairsynth weights fetch inception" in message
    assert not (tmp_path / "train" / "checkpoints").exists()
