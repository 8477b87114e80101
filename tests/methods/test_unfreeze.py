"""Progressive unfreezing: stages become phases, each with its own trainable set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairsynth.config import ConfigError, from_dict
from fairsynth.methods import METHODS
from fairsynth.methods._export import load_weights
from fairsynth.methods._unfreeze import parse_train
from fairsynth.methods.base import MethodError
from tests.methods.export_checks import fresh_pipeline, images, one_thread, trained_pipeline  # noqa: F401
from tests.methods.training_steps import derm_records, tiny, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = [
    {"steps": 1, "train": "adapters"},
    {"steps": 1, "train": "+up_blocks.1,mid_block,text_encoder"},
    {"train": "all", "learning_rate": 1e-3},
]


def lora(**options: object):
    method_class = METHODS.get("lora")
    return method_class(from_dict(method_class.Config, {"rank": 2, "alpha": 1, **options}))


def test_stages_become_phases() -> None:
    method = lora(unfreeze=STAGES)
    phases = method.phases(10)
    assert [(p.steps, p.learning_rate, p.settings["train"]) for p in phases] == [
        (1, None, "adapters"), (1, None, "+up_blocks.1,mid_block,text_encoder"), (8, 1e-3, "all")]
    assert method.trains_text_encoder  # stage 2 trains text-encoder weights
    assert [p.name for p in lora().phases(7)] == ["train"] and lora().phases(7)[0].steps == 7


def test_each_stage_trains_its_set_and_exports_the_moved_base_weights(tmp_path: Path) -> None:
    method = lora(unfreeze=STAGES)
    components, raw = tiny("sd")
    base_before = {n: p.detach().clone() for n, p in components.unet.named_parameters() if "lora_" not in n}
    run = train_steps(method, components, derm_records(2), steps=3, learning_rate=1e-3)

    def trained(groups: list[dict]) -> dict[str, int]:
        return {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}

    adapters_only, partial, everything = (trained(g) for g in run.groups)
    assert set(adapters_only) == {"unet"}
    assert set(partial) == {"unet", "text_encoder"} and partial["unet"] > adapters_only["unet"]
    assert set(everything) == {"unet"}  # apply_to: unet, so `all` is the whole UNet
    assert everything["unet"] == sum(p.numel() for p in components.unet.parameters())
    up_params = dict(components.unet.named_parameters())
    down_weight = "down_blocks.0.resnets.0.conv1.weight"
    assert not torch.equal(up_params[down_weight], base_before[down_weight])  # moved in stage 3

    state = method.trainable_state(components)
    assert any(k.startswith("text_encoder.") for k in state) and any(".base_layer." in k for k in state)
    files = method.export(components, tmp_path / "out")
    assert "base_weights" in files and "Base weights" in files["note"].read_text()
    pipe = fresh_pipeline("sd")
    load_weights(pipe, files["base_weights"])  # base first, then the adapter
    pipe.load_lora_weights(str(files["kohya"]))
    assert abs(images(pipe) - images(trained_pipeline(components, raw))).max() < 1e-5


@pytest.mark.parametrize("spec, expected", [
    ("adapters", (False, [])),
    ("all", (True, [])),
    ("+up_blocks, mid_block", (False, [("unet", "up_blocks"), ("unet", "mid_block")])),
    ("+text_encoder,unet.conv_in,text_encoder_2.text_model", (False, [("text_encoder", ""), ("unet", "conv_in"), ("text_encoder_2", "text_model")])),
])
def test_train_specs(spec: str, expected: tuple) -> None:
    assert parse_train(spec) == expected


@pytest.mark.parametrize("stages, message", [
    ([{"steps": 1, "train": "everything"}], "must be 'adapters', 'all' or"),
    ([{"steps": 1, "train": "+"}], "must be 'adapters', 'all' or"),
    ([{"steps": 1, "train": "+up_blocks,,mid_block"}], "empty module path"),
    ([{"steps": 1, "train": "+vae"}], "VAE is not trained"),
    ([{"steps": 0}], "steps must be >= 1"),
    ([{"train": "adapters"}, {"steps": 3}], "stage 1 needs steps"),
    ([{"steps": 2, "learning_rate": -1.0}], "learning_rate must be > 0"),
])
def test_bad_stages_are_config_errors(stages: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lora(unfreeze=stages)


def test_stage_lengths_must_fit_the_run() -> None:
    with pytest.raises(MethodError, match="add up to 3 steps but the run has 5"):
        lora(unfreeze=[{"steps": 1}, {"steps": 2, "train": "all"}]).phases(5)
    with pytest.raises(MethodError, match="leaving none for the last stage"):
        lora(unfreeze=[{"steps": 5}, {"train": "all"}]).phases(5)


def test_unknown_module_path_lists_the_top_level_modules() -> None:
    components, _ = tiny("sd")
    with pytest.raises(MethodError, match="no module 'upblocks'; its top-level modules: conv_in, .*up_blocks"):
        lora(unfreeze=[{"steps": 1}, {"steps": 1, "train": "+upblocks"}]).check(components, [])
    with pytest.raises(MethodError, match="has no text_encoder_2"):
        lora(unfreeze=[{"steps": 1, "train": "+text_encoder_2"}]).check(components, [])
