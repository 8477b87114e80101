from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fairsynth.config import (
    ConfigError, DataConfig, PrepareConfig, apply_overrides, describe, from_dict, knob, load_config, save_resolved,
)
from fairsynth.recipe import Recipe, load_recipe


def test_defaults_and_derived_folders():
    recipe = load_recipe(None, ["name=skin"])
    assert recipe.workdir == "runs/skin"
    assert recipe.prepare.output == str(Path("runs/skin/prepared"))
    assert recipe.prepare.size == (512, 512)


def test_dotted_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  reader: ddi\nprepare:\n  resolution: [512]\n")
    recipe = load_recipe(path, ["prepare.resolution=[512, 360]", "prepare.hair_removal.enabled=true", "prepare.split.seed=3"])
    assert recipe.data.reader == "ddi"
    assert recipe.prepare.size == (512, 360)
    assert recipe.prepare.hair_removal.enabled is True
    assert recipe.prepare.split.seed == 3


def test_scalar_override_of_a_list_field():
    assert load_recipe(None, ["prepare.resolution=256"]).prepare.size == (256, 256)


def test_unknown_key_lists_valid_ones(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("prepare:\n  resolutoin: 256\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "prepare.resolutoin" in message and "resolution" in message and "hair_removal" in message


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown key trian"):
        load_recipe(None, ["trian.steps=3"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("prepare.resolution=[250]", "multiples of 8"),
        ("prepare.resolution=[512, 512, 3]", "[side] or [width, height]"),
        ("prepare.split.val=0.9", "leave rows for training"),
        ("prepare.hair_removal.kernel=4", "odd"),
        ("prepare.crop=random", "not one of"),
        ("prepare.estimate_fst=maybe", "true or false"),
        ("seed=one", "integer"),
    ],
)
def test_invalid_values_are_specific_errors(override, needle):
    with pytest.raises(ConfigError) as err:
        load_recipe(None, [override])
    assert needle in str(err.value)


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["prepare.resolution"])


def test_resolved_config_round_trips(tmp_path):
    recipe = load_recipe(None, ["name=x", "prepare.resolution=[64]", "data.columns={image: path}"])
    written = save_resolved(recipe, tmp_path)
    again = load_recipe(written)
    assert again == recipe


def test_every_field_has_help():
    for key, _default, help_text in describe(Recipe):
        assert help_text, f"{key} has no help text"


def test_load_config_of_one_stage(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("resolution: [128]\n")
    cfg = load_config(PrepareConfig, path, ["crop=none"])
    assert cfg.size == (128, 128) and cfg.crop == "none"


def test_required_field_missing_is_a_config_error():
    @dataclass
    class Needs:
        value: int = knob(help="required")

    with pytest.raises(ConfigError, match="value"):
        from_dict(Needs, {})


def test_mutable_defaults_are_not_shared():
    a, b = DataConfig(), DataConfig()
    a.columns["image"] = "x"
    assert b.columns == {}


def test_exponent_numbers_without_a_dot_are_numbers():
    """YAML 1.1 reads `1e-4` as a string; a float field takes it as the number it means."""
    from fairsynth.recipe import load_recipe

    assert load_recipe(None, ["train.learning_rate=3e-3"]).train.learning_rate == 0.003
    assert load_recipe(None, ["train.learning_rate=1E+2"]).train.learning_rate == 100.0
    with pytest.raises(ConfigError, match="train.learning_rate: expected a number, got '3e-3x'"):
        load_recipe(None, ["train.learning_rate=3e-3x"])
