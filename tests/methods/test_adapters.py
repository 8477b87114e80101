"""Target selection, option validation, and the peft-folder exports of LoHa / LoKr / OFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairsynth.config import ConfigError, from_dict
from fairsynth.methods import METHODS
from fairsynth.methods._peft import adapted_components, inject_adapter, resolve_targets, short_name, target_modules
from fairsynth.methods.base import MethodError
from tests.methods.export_checks import fresh_pipeline, images, one_thread, trained_pipeline  # noqa: F401
from tests.methods.training_steps import derm_records, tiny, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

RANKED = ["lora", "dora", "loha", "lokr"]


# -- targets -------------------------------------------------------------------------------


def test_presets_select_the_documented_layers() -> None:
    components, _ = tiny("sd")
    unet = components.unet
    attention = target_modules(unet, "attention")
    cross = target_modules(unet, "cross_attention")
    attention_ff = target_modules(unet, "attention_ff")
    locon = target_modules(unet, "locon")
    assert {short_name(n) for n in attention} == {f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert set(cross) < set(attention) and all(".attn2." in n for n in cross) and len(cross) * 2 == len(attention)
    assert set(attention_ff) - set(attention) == {n for n in attention_ff if ".ff.net." in n}
    extra = {short_name(n) for n in set(locon) - set(attention_ff)}
    assert extra == {"conv1", "conv2", "conv_shortcut", "proj_in", "proj_out", "conv"}
    assert "down_blocks.0.downsamplers.0.conv" in locon and "up_blocks.0.upsamplers.0.conv" in locon
    assert not any("conv_in" in n or "time_emb" in n for n in locon)
    text = components.text_encoders[0]
    assert {short_name(n) for n in target_modules(text, "attention", "text_encoder")} == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}
    assert {short_name(n) for n in target_modules(text, "attention_ff", "text_encoder")} >= {"mlp.fc1", "mlp.fc2"}


def test_explicit_targets_match_as_suffixes_across_components() -> None:
    components, _ = tiny("sdxl")
    resolved = resolve_targets(components, ["attn2.to_k", "q_proj"], "both")
    assert set(resolved) == {"unet", "text_encoder", "text_encoder_2"} == set(adapted_components(components, "both"))
    assert resolved["unet"] and all(n.endswith("attn2.to_k") for n in resolved["unet"])
    assert all(n.endswith("q_proj") for n in resolved["text_encoder_2"])


def test_unknown_target_module_lists_available_names() -> None:
    components, _ = tiny("sd")
    with pytest.raises(MethodError, match="unknown target module 'to_query'") as err:
        resolve_targets(components, ["to_q", "to_query"], "unet")
    message = str(err.value)
    for name in ("attn1.to_q", "attn2.to_out.0", "ff.net.0.proj", "conv1", "proj_in"):
        assert name in message
    method = METHODS.get("lora")(METHODS.get("lora").Config(targets=["to_query"]))
    with pytest.raises(MethodError, match="available: .*attn1.to_k"):
        method.check(components, derm_records(2))


def test_inject_adapter_returns_what_it_adapted() -> None:
    from peft import LoraConfig

    components, _ = tiny("sd")
    seen = []

    def factory(names: list[str], component: str) -> LoraConfig:
        seen.append(component)
        return LoraConfig(r=2, lora_alpha=2, target_modules=names)

    injected = inject_adapter(components, factory, "attention", "both")
    assert seen == ["unet", "text_encoder"]
    assert len(injected["unet"]) == 4 * 2 * 6  # q,k,v,out x attn1,attn2 x 6 transformer blocks (down 2, mid 1, up 3)
    assert "fairsynth" in components.unet.peft_config
    # injected layers still count as targets (under their own name)
    assert target_modules(components.unet, "attention") == injected["unet"]


# -- option validation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", RANKED)
@pytest.mark.parametrize("options, message", [
    ({"rank": 0}, "rank must be > 0"),
    ({"rank": -4}, "rank must be > 0"),
    ({"alpha": 0}, "alpha must be > 0"),
    ({"alpha": -1.0}, "alpha must be > 0"),
    ({"targets": "everything"}, "unknown targets preset 'everything'"),
    ({"targets": []}, "non-empty list"),
    ({"targets": "cross_attention", "apply_to": "both"}, "UNet-only"),
    ({"text_encoder_lr": 0.0}, "text_encoder_lr must be > 0"),
    ({"unfreeze": [{"train": "adapters"}, {"steps": 5, "train": "all"}]}, "stage 1 needs steps"),
])
def test_bad_options_are_config_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(METHODS.get(name).Config, options)


def test_bad_option_types_and_lora_specifics() -> None:
    lora = METHODS.get("lora").Config
    with pytest.raises(ConfigError, match="rank: expected an integer"):
        from_dict(lora, {"rank": "8"})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(lora, {"ranks": 8})
    with pytest.raises(ConfigError, match="even rank"):
        from_dict(lora, {"init": "orthogonal", "rank": 3})
    with pytest.raises(ConfigError, match="fits none"):
        from_dict(lora, {"init": "loftq"})
    with pytest.raises(ConfigError, match="dropout"):
        from_dict(lora, {"dropout": 1.0})
    with pytest.raises(ConfigError, match="cannot be combined"):
        from_dict(lora, {"init": "pissa", "unfreeze": [{"steps": 1}, {"train": "all"}]})
    with pytest.raises(ConfigError, match="dora does not support init pissa"):
        from_dict(METHODS.get("dora").Config, {"init": "pissa"})
    assert from_dict(lora, {"init": "gaussian", "alpha": 2}).lora_alpha == 2.0
    assert from_dict(lora, {"rank": 16}).lora_alpha == 16.0  # None: alpha = rank


def test_residual_init_refuses_convolution_targets() -> None:
    lora = METHODS.get("lora")
    components, _ = tiny("sd")
    with pytest.raises(MethodError, match="Linear layers only"):
        lora(lora.Config(init="pissa", targets="locon")).check(components, derm_records(2))


def test_oft_options_and_layer_sizes() -> None:
    oft = METHODS.get("oft")
    with pytest.raises(ConfigError, match="not both"):
        from_dict(oft.Config, {"block_size": 8, "blocks": 4})
    with pytest.raises(ConfigError, match="block_size must be > 0"):
        from_dict(oft.Config, {"block_size": 0})
    with pytest.raises(ConfigError, match="blocks must be > 0"):
        from_dict(oft.Config, {"blocks": -2})
    assert oft(oft.Config()).block_size == 32
    components, _ = tiny("sd")
    # the tiny text encoder's MLP is 37 wide: no block size but 1 and 37 divides it
    with pytest.raises(MethodError, match=r"does not divide .*mlp\.fc2 \(37\)"):
        oft(from_dict(oft.Config, {"block_size": 8, "targets": "attention_ff", "apply_to": "text_encoder"})).check(
            components, derm_records(2))
    oft(from_dict(oft.Config, {"blocks": 4, "targets": "locon"})).check(components, derm_records(2))


# -- peft-folder exports --------------------------------------------------------------------


@pytest.mark.parametrize("name, kind, options", [
    ("loha", "sd", {"targets": "locon", "apply_to": "both"}),
    ("lokr", "sdxl", {"targets": "attention", "apply_to": "both"}),
    ("oft", "sd", {"targets": "locon", "block_size": 8, "apply_to": "unet"}),
])
def test_peft_folders_load_with_peft_model(name: str, kind: str, options: dict, tmp_path: Path) -> None:
    from peft import PeftModel

    method_class = METHODS.get(name)
    method = method_class(from_dict(method_class.Config, {**options, "init": False}))
    components, raw = tiny(kind)
    train_steps(method, components, derm_records(2), steps=1, learning_rate=1e-3)
    files = method.export(components, tmp_path / "out")
    assert (tmp_path / "out" / "unet" / "adapter_model.safetensors").exists()
    assert (tmp_path / "out" / "unet" / "adapter_config.json").exists()
    reference = images(trained_pipeline(components, raw))

    pipe = fresh_pipeline(kind)
    assert abs(images(pipe) - reference).max() > 1e-3
    for component in adapted_components(components, options["apply_to"]):
        PeftModel.from_pretrained(getattr(pipe, component), tmp_path / "out" / component)  # wraps in place
    assert abs(images(pipe) - reference).max() < 1e-5
    assert "PeftModel.from_pretrained" in files["note"].read_text()


def test_trainable_state_is_a_snapshot_and_round_trips() -> None:
    lora = METHODS.get("lora")
    method = lora(lora.Config(rank=2, apply_to="both"))
    components, _ = tiny("sd")
    method.check(components, [])
    method.prepare(components)
    state = method.trainable_state(components)
    assert all(k.startswith(("unet.", "text_encoder.")) for k in state)
    assert all(t.device.type == "cpu" for t in state.values())
    with torch.no_grad():
        next(iter(components.unet.parameters())).add_(0)  # touching the model ...
        for p in method._state_parameters(components).values():
            p.add_(1.0)
    assert all(not torch.equal(state[k], p.detach()) for k, p in method._state_parameters(components).items())
    method.load_trainable_state(components, state)  # ... and the snapshot restores it exactly
    assert all(torch.equal(state[k], p.detach()) for k, p in method._state_parameters(components).items())
    bad = dict(state)
    key = next(iter(bad))
    bad[key] = torch.zeros(3)
    with pytest.raises(MethodError, match="shape"):
        method.load_trainable_state(components, bad)
    del bad[key]
    with pytest.raises(MethodError, match="missing"):
        method.load_trainable_state(components, bad)
