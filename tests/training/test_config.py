"""`train:` parses into TrainConfig: derived folders, checked values, method options resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairsynth.config import ConfigError, save_resolved
from fairsynth.recipe import load_recipe


def test_defaults_derive_from_the_workdir_and_prepare():
    recipe = load_recipe(None, ["name=skin", "seed=7", "prepare.resolution=[256]", "train.method=test_unet_bias"])
    train = recipe.train
    assert train.data == str(Path("runs/skin/prepared/metadata.jsonl"))
    assert train.output == str(Path("runs/skin/train"))
    assert train.cache_dir == str(Path("runs/skin/cache"))
    assert train.size == (256, 256)
    assert train.seed == 7


def test_the_validation_prompt_template_defaults_to_the_data_one():
    recipe = load_recipe(None, ["data.caption_template=a photo of {label}", "train.method=test_unet_bias"])
    assert recipe.train.validation.caption_template == "a photo of {label}"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.resolution=[250]", "multiples of 8"),
        ("train.buckets=[[512, 300]]", "multiples of 8"),
        ("train.method=lorra", "unknown method 'lorra'; available: "),
        ("train.steps=0", "train.steps must be >= 1"),
        ("train.caption_dropout=1.5", "caption_dropout"),
        ("train.lr_scheduler=warm", "not one of"),
        ("train.optimizer=sgd", "not one of"),
        ("train.ema.decay=1.0", "ema.decay"),
        ("train.min_snr_gamma=0", "min_snr_gamma"),
        ("train.options.nope=1", "unknown key train.options.nope"),
        ("train.options.phases=x", "train.options.phases: expected an integer"),
        ("train.base.dtype=float16", "needs train.mixed_precision fp16 or bf16"),
    ],
)
def test_bad_values_are_short_specific_errors(override, needle):
    with pytest.raises(ConfigError) as err:
        load_recipe(None, ["train.method=test_unet_bias", override])
    assert needle in str(err.value)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        load_recipe(None, ["train.method=nope"])
    assert "test_unet_bias" in str(err.value) and "lora" in str(err.value)


def test_options_are_resolved_and_round_trip(tmp_path):
    recipe = load_recipe(None, ["train.method=test_unet_bias", "train.options.phases=2"])
    assert recipe.train.options == {"apply_to": "unet", "text_encoder_lr": None, "phases": 2, "max_label_id": -1}
    path = save_resolved(recipe, tmp_path)
    again = load_recipe(path)
    assert again == recipe
    assert again.train.build_method().config.phases == 2


def test_lora_options_resolve_with_their_defaults():
    recipe = load_recipe(None, ["train.method=lora", "train.options.rank=4"])
    assert recipe.train.options["rank"] == 4
    assert "alpha" in recipe.train.options  # every option, defaults included
