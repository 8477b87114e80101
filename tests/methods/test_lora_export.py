"""LoRA / DoRA exports load into a fresh diffusers pipeline and give the trained model's images.

The LoRA trains with alpha != rank and a random (non-zero) start, so a wrong alpha, a
dropped layer or a mis-mapped kohya name changes the images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from fairsynth.methods import METHODS
from fairsynth.methods._kohya import kohya_key, sgm_unet_name
from fairsynth.methods._peft import adaptable_modules, target_modules
from fairsynth.models.architectures import sd15_configs, sdxl_configs
from tests.methods.export_checks import (  # noqa: F401  (one_thread: fixture)
    fresh_pipeline,
    images,
    one_thread,
    trained_pipeline,
)
from tests.methods.training_steps import derm_records, tiny, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

RANK, ALPHA = 4, 3.0


def train(name: str, kind: str, **options: object):
    method_class = METHODS.get(name)
    method = method_class(method_class.Config(**{"rank": RANK, "alpha": ALPHA, "init": False, **options}))
    components, raw = tiny(kind)
    train_steps(method, components, derm_records(2), steps=1, learning_rate=1e-3)
    return method, components, raw


def adapted_layers(module: torch.nn.Module) -> int:
    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def assert_same_images(loaded, reference) -> None:
    diff = abs(images(loaded) - reference).max()
    assert diff < 1e-5, f"max abs difference {diff}"


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_lora_exports_load_in_diffusers_in_both_formats(kind: str, tmp_path: Path) -> None:
    method, components, raw = train("lora", kind, targets="locon", apply_to="both")
    files = method.export(components, tmp_path / "out")
    reference = images(trained_pipeline(components, raw))
    assert abs(reference - images(fresh_pipeline(kind))).max() > 1e-3  # the LoRA changes the images

    for source in (tmp_path / "out", files["kohya"]):  # folder -> diffusers file; file -> kohya
        pipe = fresh_pipeline(kind)
        pipe.load_lora_weights(str(source))
        assert adapted_layers(pipe.unet) == len(method.injected["unet"])
        for i, encoder in enumerate(components.text_encoders):
            name = "text_encoder" if i == 0 else "text_encoder_2"
            assert adapted_layers(getattr(pipe, name)) == len(method.injected[name])
        assert_same_images(pipe, reference)


def test_kohya_file_holds_the_true_alpha_and_kohya_names(tmp_path: Path) -> None:
    method, components, _ = train("lora", "sd", targets="attention", apply_to="both")
    files = method.export(components, tmp_path / "out")
    assert files["kohya"].name == "out_kohya.safetensors"
    state = safetensors.torch.load_file(files["kohya"])
    alphas = {k: v for k, v in state.items() if k.endswith(".alpha")}
    assert alphas and all(v.item() == ALPHA for v in alphas.values())  # not the rank
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in state
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in state
    assert state["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"].shape[0] == RANK
    with safetensors.safe_open(files["kohya"], "pt") as f:
        assert f.metadata()["ss_network_alpha"] == str(ALPHA)


def test_sdxl_kohya_keys_use_stability_block_names(tmp_path: Path) -> None:
    method, components, _ = train("lora", "sdxl", targets="locon", apply_to="both")
    state = safetensors.torch.load_file(method.export(components, tmp_path / "out")["kohya"])
    names = {k.split(".")[0] for k in state}
    # tiny SDXL: down blocks (DownBlock2D, CrossAttnDownBlock2D), 2 layers each; up blocks mirrored
    for expected in (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",  # down_blocks.1.attentions.0
        "lora_unet_input_blocks_5_1_transformer_blocks_1_attn2_to_out_0",
        "lora_unet_input_blocks_1_0_in_layers_2",  # down_blocks.0.resnets.0.conv1
        "lora_unet_input_blocks_4_0_skip_connection",  # down_blocks.1.resnets.0.conv_shortcut
        "lora_unet_input_blocks_3_0_op",  # down_blocks.0.downsamplers.0.conv
        "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_k",
        "lora_unet_middle_block_2_out_layers_3",  # mid_block.resnets.1.conv2
        "lora_unet_output_blocks_2_2_conv",  # up_blocks.0.upsamplers.0.conv (after the attention)
        "lora_unet_output_blocks_0_1_proj_in",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_1_mlp_fc2",
    ):
        assert expected in names, expected
    assert not any(n.startswith(("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block", "lora_te_")) for n in names)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_kohya_names_of_real_layouts_convert_back_through_diffusers(kind: str) -> None:
    """Every layer LoRA can adapt in the real SD 1.5 / SDXL UNet (built on the meta device, so
    free) survives kohya naming -> diffusers' kohya loader -> peft names unchanged."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    with torch.device("meta"):
        unet = UNet2DConditionModel(**(sdxl_configs() if kind == "sdxl" else sd15_configs())["unet"])
    names = list(adaptable_modules(unet))
    assert set(target_modules(unet, "locon")) < set(names) and "conv_in" in names and "time_embedding.linear_1" in names
    state = {}
    for name in names:
        key = kohya_key("unet", name, kind, unet.config)
        state[f"{key}.lora_down.weight"] = torch.zeros(1, 1)
        state[f"{key}.lora_up.weight"] = torch.zeros(1, 1)
        state[f"{key}.alpha"] = torch.tensor(1.0)
    if kind == "sdxl":
        converted, alphas = StableDiffusionXLPipeline.lora_state_dict(state, unet_config=unet.config)
    else:
        converted, alphas = StableDiffusionPipeline.lora_state_dict(state)
    peft_keys = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in converted.items()})
    back = {k.rsplit(".lora_A", 1)[0] for k in peft_keys if ".lora_A" in k}
    assert back == set(names)
    assert len(alphas) == len(names)


def test_sgm_names_of_the_real_sdxl_unet() -> None:
    config = sdxl_configs()["unet"]
    cases = {
        "conv_in": "input_blocks.0.0",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2": "input_blocks.8.1.transformer_blocks.9.ff.net.2",
        "down_blocks.0.resnets.1.time_emb_proj": "input_blocks.2.0.emb_layers.1",
        "down_blocks.1.downsamplers.0.conv": "input_blocks.6.0.op",
        "mid_block.resnets.0.conv1": "middle_block.0.in_layers.2",
        "mid_block.attentions.0.proj_out": "middle_block.1.proj_out",
        "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_k": "output_blocks.2.1.transformer_blocks.0.attn2.to_k",
        "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
        "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
        "up_blocks.2.resnets.2.conv_shortcut": "output_blocks.8.0.skip_connection",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
    }
    for diffusers_name, sgm in cases.items():
        assert sgm_unet_name(diffusers_name, config) == sgm


def test_dora_export_loads_in_diffusers(tmp_path: Path) -> None:
    method, components, raw = train("dora", "sd", targets="attention_ff", apply_to="unet")
    files = method.export(components, tmp_path / "out")
    assert set(files) >= {"diffusers", "config", "note"} and "kohya" not in files
    keys = safetensors.torch.load_file(files["diffusers"]).keys()
    assert any("lora_magnitude_vector" in k for k in keys)
    pipe = fresh_pipeline("sd")
    pipe.load_lora_weights(str(tmp_path / "out"))
    assert_same_images(pipe, images(trained_pipeline(components, raw)))


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_residual_inits_export_as_lora_over_the_original_base(init: str, tmp_path: Path) -> None:
    """PiSSA/OLoRA rewrite the base weights; the export is the equivalent rank-2r LoRA."""
    method, components, raw = train("lora", "sd", targets="attention", apply_to="both", init=init)
    files = method.export(components, tmp_path / "out")
    state = safetensors.torch.load_file(files["kohya"])
    down = next(v for k, v in state.items() if k.endswith(".lora_down.weight"))
    assert down.shape[0] == 2 * RANK
    reference = images(trained_pipeline(components, raw))
    for source in (tmp_path / "out", files["kohya"]):
        pipe = fresh_pipeline("sd")
        pipe.load_lora_weights(str(source))
        diff = abs(images(pipe) - reference).max()
        assert diff < 1e-4, diff  # float32 round-off of W_res + s B A vs W + s (B A - B0 A0)
