"""dreambooth on tiny seeded components: class images once, prior weights, LoRA / full export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fairsynth.config import ConfigError
from fairsynth.data.records import Record, read_manifest
from fairsynth.methods import METHODS, MethodError
from fairsynth.methods.base import Batch
from fairsynth.models.architectures import build_pipeline, tiny_sd_components
from tests.methods.training_steps import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.methods.training_steps import tiny, train_steps

DB = METHODS.get("dreambooth")
GARMENT = [Record("g0", "g0.png", "jacket", "a photo of sks jacket", {})]


def prior_config(**options):
    values = dict(prior_preservation=True, class_prompt="a photo of a jacket", num_class_images=2,
                  class_inference_steps=2, class_batch_size=2, prior_loss_weight=0.5)
    values.update(options)
    return DB.Config(**values)


def test_class_images_are_generated_once_and_reused(tmp_path, monkeypatch):
    components, _ = tiny("sd")
    method = DB(prior_config())
    method.check(components, GARMENT)
    extra = method.extra_records(components, GARMENT, tmp_path)

    assert [r.attributes["prior"] for r in extra] == [True, True]
    assert all(r.caption == "a photo of a jacket" and r.label is None for r in extra)
    folder = tmp_path / "class_images"
    (subfolder,) = folder.iterdir()
    assert sorted(p.name for p in subfolder.iterdir()) == [
        "class_00000.png", "class_00001.png", "manifest.jsonl", "settings.json",
    ]
    assert [r.image for r in read_manifest(subfolder / "manifest.jsonl")] == ["class_00000.png", "class_00001.png"]
    first = np.asarray(Image.open(extra[0].image))
    assert first.shape == (32, 32, 3)

    # a rerun reuses them; asking for more generates only the missing ones, with the same seeds
    generated = []
    original = DB._generate
    def counting(self, components, folder, names, missing):
        generated.append(missing)
        original(self, components, folder, names, missing)

    monkeypatch.setattr(DB, "_generate", counting)
    assert [r.image for r in DB(prior_config()).extra_records(components, GARMENT, tmp_path)] == [r.image for r in extra]
    more = DB(prior_config(num_class_images=3)).extra_records(components, GARMENT, tmp_path)
    assert generated == [[2]] and len(more) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(more[0].image)), first)
    # a different prompt is a different set, never mixed with this one
    DB(prior_config(class_prompt="a photo of a coat", num_class_images=1)).extra_records(components, GARMENT, tmp_path)
    assert len(list(folder.iterdir())) == 2


def test_prior_records_get_the_prior_loss_weight_and_train(tmp_path):
    components, _ = tiny("sd")
    method = DB(prior_config())
    run = train_steps(method, components, GARMENT, workdir=tmp_path)
    assert [g["name"] for g in run.groups[0]] == ["unet"] and len(run.losses) == 2

    records = GARMENT + [Record("p", "p.png", None, "a photo of a jacket", {"prior": True})]
    weights = method.loss_weights(Batch([r.caption for r in records], records))
    assert weights.tolist() == [1.0, 0.5]
    assert DB().loss_weights(Batch(["x"], GARMENT)) is None


def test_class_images_must_come_from_the_base_model(tmp_path):
    components, _ = tiny("sd")
    method = DB(prior_config())
    method.check(components, GARMENT)
    method.prepare(components)
    with pytest.raises(MethodError, match="base model"):
        method.extra_records(components, GARMENT, tmp_path)


def test_lora_export_loads_into_a_fresh_pipeline(tmp_path):
    components, raw = tiny("sd")
    method = DB(DB.Config(apply_to="both"))
    run = train_steps(method, components, GARMENT, learning_rate=1e-2)
    assert [g["name"] for g in run.groups[0]] == ["unet", "text_encoder"]
    lora = method.export(components, tmp_path)["lora_diffusers"]
    fresh, trained = build_pipeline(tiny_sd_components()), build_pipeline(raw)

    def generate(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe("a photo of sks jacket", num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    base = generate(fresh)
    fresh.load_lora_weights(lora.parent)
    np.testing.assert_allclose(generate(fresh), generate(trained), atol=1e-5)
    assert np.abs(base - generate(trained)).max() > 1e-3


def test_sdxl_with_prior_preservation(tmp_path):
    components, _ = tiny("sdxl")
    method = DB(prior_config(num_class_images=1))
    run = train_steps(method, components, GARMENT, workdir=tmp_path)
    assert len(run.losses) == 2
    assert len(list((tmp_path / "class_images").rglob("*.png"))) == 1


def test_full_fine_tuning_trains_and_exports_the_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    components, _ = tiny("sd")
    method = DB(DB.Config(trainable="full"))
    run = train_steps(method, components, GARMENT)
    assert sum(p.numel() for p in run.groups[0][0]["params"]) == sum(p.numel() for p in components.unet.parameters())
    files = method.export(components, tmp_path)
    reloaded = UNet2DConditionModel.from_pretrained(files["unet"])
    assert torch.equal(reloaded.conv_in.weight, components.unet.conv_in.weight)
    method.load_trainable_state(components, method.trainable_state(components))


def test_instance_prompt_replaces_instance_captions_but_not_dropped_or_prior_ones():
    components, _ = tiny("sd")
    method = DB(DB.Config(instance_prompt="a photo of sks jacket"))
    records = [
        Record("a", "a.png", None, "IMG_0001", {}),
        Record("b", "b.png", None, "IMG_0002", {}),  # its caption was dropped by the loop
        Record("c", "c.png", None, None, {}),
        Record("p", "p.png", None, "a photo of a jacket", {"prior": True}),
    ]
    method.check(components, records)
    got = method.encode(components, Batch(["IMG_0001", "", "", "a photo of a jacket"], records)).encoder_hidden_states
    captions = ["a photo of sks jacket", "", "a photo of sks jacket", "a photo of a jacket"]
    expected = DB().encode(components, Batch(captions, records)).encoder_hidden_states
    assert torch.equal(got, expected)


# -- bad input ----------------------------------------------------------------------------


def test_captions_without_the_instance_token_are_an_error():
    components, _ = tiny("sd")
    strict = DB.Config(caption_token="none")
    with pytest.raises(MethodError, match="do not name 'sks'"):
        DB(strict).check(components, [Record("g", "g.png", None, "a photo of a jacket", {})])
    with pytest.raises(MethodError, match="'ukj'"):
        DB(DB.Config(instance_token="ukj", caption_token="none")).check(components, GARMENT)


def test_instance_token_is_prepended_to_captions_that_lack_it():
    method = DB()
    plain = Record("g", "g.png", None, "a photo of a jacket", {})
    assert method.caption_for("a photo of a jacket", plain) == "sks, a photo of a jacket"
    assert method.caption_for("a photo of SKS jacket", plain) == "a photo of SKS jacket"
    assert method.caption_for("", plain) == ""  # dropped by the loop
    assert method.caption_for("", Record("c", "c.png", None, None, {})) == "sks"
    prior = Record("p", "p.png", None, "a photo of a jacket", {"prior": True})
    assert method.caption_for("a photo of a jacket", prior) == "a photo of a jacket"


@pytest.mark.parametrize(
    "options",
    [
        {"prior_preservation": True},  # no class_prompt
        {"prior_preservation": True, "class_prompt": "a photo of sks jacket"},
        {"instance_prompt": "a photo of a jacket"},
        {"instance_token": "two words"},
        {"class_resolution": [30]},
    ],
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        DB.Config(**options)
