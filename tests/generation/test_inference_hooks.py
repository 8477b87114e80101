"""Every registered method's export loads back for generation and gives the trained model's images.

Parametrised over ``METHODS.names()``: a new method is covered the moment it registers. Each
method trains one step on the tiny SD pipeline (AdamW moves every trained tensor), exports, and
its ``load_for_inference`` hook puts the export into a fresh pipeline of the same base.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fairsynth.methods import METHODS
from fairsynth.methods.base import MethodError
from fairsynth.models.architectures import build_pipeline, tiny_sd_components
from tests.methods.training_steps import derm_records, tiny, train_steps


def quick(method_class: type) -> object:
    config = method_class.Config()
    shorter = {f.name: 1 for f in dataclasses.fields(config)
               if f.name.endswith("_steps") and isinstance(getattr(config, f.name), int) and getattr(config, f.name) > 1}
    return dataclasses.replace(config, **shorter) if shorter else config


def sample(pipe, adapter) -> np.ndarray:
    kwargs = dict(num_inference_steps=2, height=16, width=16, generator=torch.Generator().manual_seed(0), output_type="np")
    if adapter.conditioning is not None:
        cond, uncond = adapter.conditioning(["melanoma"], [{"fst": 1}])
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, **kwargs).images
    prompt = "a photo of sks melanoma <melanoma-FST-I>"
    return pipe(adapter.prompt(prompt) if adapter.prompt else prompt, **kwargs).images


@pytest.mark.parametrize("name", METHODS.names())
def test_export_loads_for_generation(name: str, tmp_path) -> None:
    method_class = METHODS.get(name)
    method = method_class(quick(method_class))
    components, raw = tiny("sd")
    records = derm_records(2)
    for record in records:
        record.caption = f"a photo of sks {record.label}"
    train_steps(method, components, records, steps=sum(p.steps for p in method.phases(2)) if name == "pivotal" else 2,
                max_steps_per_phase=1, learning_rate=1e-2)
    method.export(components, tmp_path / "model")

    trained = build_pipeline(raw)
    fresh = build_pipeline(tiny_sd_components(0))
    adapter = method_class(quick(method_class)).load_for_inference(fresh, tmp_path / "model", name="adapter0")
    if adapter.lora_adapters:
        fresh.set_adapters(list(adapter.lora_adapters), adapter_weights=list(adapter.lora_adapters.values()))
    for pipe in (trained, fresh):
        pipe.set_progress_bar_config(disable=True)
    reference = adapter
    assert ("<melanoma-FST-I>" in adapter.tokens) == (name in ("textual_inversion", "pivotal")), adapter.tokens
    if name in ("textual_inversion", "pivotal"):
        # the trained pipeline's tokenizer holds the tokens already; expand prompts for it
        from fairsynth.methods.textual_inversion import expand_placeholder_tokens

        reference = dataclasses.replace(adapter, prompt=lambda p: expand_placeholder_tokens(p, trained.tokenizer))
    assert np.abs(sample(fresh, adapter) - sample(trained, reference)).max() < 1e-4

def test_scale_applies_to_lora_only(tmp_path) -> None:
    method_class = METHODS.get("bitfit")
    method = method_class(method_class.Config())
    components, _ = tiny("sd")
    train_steps(method, components, derm_records(2), steps=1)
    method.export(components, tmp_path / "model")
    with pytest.raises(MethodError, match="no strength to scale"):
        method.load_for_inference(build_pipeline(tiny_sd_components(0)), tmp_path / "model", scale=0.5)


def test_prompt_without_trained_tokens_warns() -> None:
    from types import SimpleNamespace

    from fairsynth.generation.run import token_warnings

    sampler = SimpleNamespace(tokens=["<melanoma-FST-I>", "<nevus-FST-I>"])
    template = "a photo of {diagnosis}"
    (warning,) = token_warnings(sampler, {"melanoma|fst=1": "a photo of melanoma"}, template)
    assert "names none of the 2 trained token(s)" in warning and "{token}" in warning and template in warning
    assert token_warnings(sampler, {"melanoma|fst=1": "<melanoma-FST-I>, a photo of melanoma"}, template) == []
    assert token_warnings(SimpleNamespace(tokens=[]), {"melanoma|fst=1": "a photo of melanoma"}, template) == []
