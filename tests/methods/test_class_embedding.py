"""class_embedding on tiny seeded SD components: vocabulary, dropout, export, guidance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fairsynth.config import ConfigError
from fairsynth.data.records import Record
from fairsynth.methods import METHODS, MethodError
from fairsynth.methods.base import Batch
from fairsynth.methods.class_embedding import class_conditioning, guidance_pair, load_class_embedding, null_ids
from fairsynth.models.architectures import build_pipeline
from tests.methods.training_steps import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.methods.training_steps import tiny, train_steps

CE = METHODS.get("class_embedding")
DEFECTS = ["broken_large", "broken_small", "contamination"]


def defect_records(n: int = 6) -> list[Record]:
    return [
        Record(f"d{i}", f"d{i}.png", DEFECTS[i % 3], "a photo of a bottle", {"fst": [1, 6, None][i % 3]})
        for i in range(n)
    ]


def trained(unet: str = "lora", **options):
    components, raw = tiny("sd")
    method = CE(CE.Config(attributes=["fst"], unet=unet, **options))
    run = train_steps(method, components, defect_records(), learning_rate=1e-2)
    return method, components, raw, run


def test_vocabulary_comes_from_the_records_and_the_sequence_has_one_token_per_factor():
    method, components, _, run = trained()
    assert method.vocab.factors == ["class", "fst"]
    assert method.vocab.values == [DEFECTS, ["1", "6"]]
    assert method.vocab.record_ids(defect_records()[2]) == [2, 2]  # fst None -> the null id
    cond = method.encode(components, Batch(["", ""], defect_records(2)))
    assert cond.encoder_hidden_states.shape == (2, 2, 32)  # (B, factors x tokens_per_factor, cross_attention_dim)
    assert [g["name"] for g in run.groups[0]] == ["class_embedding", "unet_lora"]


def test_unet_modes_train_what_they_say():
    _, components, _, run = trained("full")
    assert [g["name"] for g in run.groups[0]] == ["class_embedding", "unet"]
    assert sum(p.numel() for p in run.groups[0][1]["params"]) == sum(p.numel() for p in components.unet.parameters())
    _, _, _, run = trained("frozen", init="random")
    assert [g["name"] for g in run.groups[0]] == ["class_embedding"]


def test_conditioning_dropout_draws_from_the_batch_generator_only():
    method, components, _, _ = trained(cond_dropout=0.5)
    records = defect_records(6) * 2

    def encode(generator):
        return method.encode(components, Batch([""] * len(records), records, generator=generator)).encoder_hidden_states

    torch.manual_seed(123)  # the global RNG must play no part
    first = encode(torch.Generator().manual_seed(7))
    torch.manual_seed(456)
    assert torch.equal(first, encode(torch.Generator().manual_seed(7)))
    assert not torch.equal(first, encode(torch.Generator().manual_seed(8)))
    undropped = encode(None)  # evaluation batches carry no generator: never dropped
    null = class_conditioning(method.embedding, torch.tensor([-1]), torch.tensor([[-1]]))[0]
    dropped = [i for i in range(len(records)) if not torch.equal(first[i], undropped[i])]
    assert dropped and all(torch.equal(first[i], null) for i in dropped)


def test_export_loads_back_and_generates_with_classifier_free_guidance(tmp_path):
    method, components, raw, _ = trained()
    files = method.export(components, tmp_path)
    assert {"class_embedding", "class_vocab", "lora_diffusers", "lora_kohya"} <= set(files)
    state, vocab = load_class_embedding(files["class_embedding"].parent)
    assert vocab.values == method.vocab.values and null_ids(state) == [3, 2]
    assert json.loads(files["class_vocab"].read_text())["factors"][0]["null_id"] == 3

    ids = torch.tensor([vocab.ids("broken_small", {"fst": 6}), vocab.ids("contamination", {"fst": 1})])
    cond, uncond = guidance_pair(state, ids[:, 0], ids[:, 1:])
    assert torch.allclose(cond, method.embedding(ids))  # the pure function equals the trained module
    from_method = method.guidance_embeds(["broken_small", "contamination"], [{"fst": 6}, {"fst": 1}])
    assert all(torch.allclose(a, b) for a, b in zip(from_method, (cond, uncond)))
    pipe = build_pipeline(raw)
    pipe.set_progress_bar_config(disable=True)

    def generate(scale):
        return pipe(
            prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=scale, num_inference_steps=2,
            generator=torch.Generator().manual_seed(0), output_type="np",
        ).images

    guided = generate(3.0)
    assert guided.shape == (2, 32, 32, 3) and np.isfinite(guided).all()
    assert not np.array_equal(guided, generate(1.0))  # the null conditioning takes part


# -- bad input ----------------------------------------------------------------------------


def test_unknown_classes_and_out_of_range_ids_are_errors():
    method, components, _, _ = trained()
    crack = Record("x", "x.png", "crack", "", {"fst": 1})
    with pytest.raises(MethodError, match="'crack' is not in the vocabulary"):
        method.encode(components, Batch([""], [crack]))
    with pytest.raises(MethodError, match="out of range"):
        class_conditioning(method.embedding, torch.tensor([4]), torch.tensor([[0]]))
    with pytest.raises(MethodError, match="out of range"):
        class_conditioning(method.embedding, torch.tensor([0]), torch.tensor([[-2]]))

    fixed = CE(CE.Config(classes=["broken_large", "broken_small"]))
    with pytest.raises(MethodError, match="contamination"):
        fixed.check(tiny("sd")[0], defect_records())
    with pytest.raises(MethodError, match="no class label"):
        CE().check(tiny("sd")[0], [Record("u", "u.png", None, "", {})])


def test_sdxl_is_not_a_base_class_embedding_can_train():
    with pytest.raises(MethodError, match="SD 1.x/2.x"):
        CE().check(tiny("sdxl")[0], defect_records())


@pytest.mark.parametrize(
    "options", [{"apply_to": "both"}, {"cond_dropout": 1.0}, {"attributes": ["class"]}, {"tokens_per_factor": 0}]
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        CE.Config(**options)


def test_state_round_trip():
    method, components, _, _ = trained()
    state = method.trainable_state(components)
    fresh_components, _ = tiny("sd")
    fresh = CE(CE.Config(attributes=["fst"]))
    fresh.check(fresh_components, defect_records())
    fresh.prepare(fresh_components)
    fresh.load_trainable_state(fresh_components, state)
    batch = Batch(["", ""], defect_records(2))
    assert torch.equal(fresh.encode(fresh_components, batch).encoder_hidden_states,
                       method.encode(components, batch).encoder_hidden_states)


def test_a_batch_without_records_is_the_unconditional_side_of_guidance():
    method, components, _, _ = trained()
    uncond = method.encode(components, Batch([""], [])).encoder_hidden_states
    null = class_conditioning(method.embedding, torch.tensor([3]), torch.tensor([[2]]))
    assert torch.equal(uncond, null)


def test_attribute_values_make_unseen_skin_types_askable():
    components, _ = tiny("sd")
    method = CE(CE.Config(attributes=["fst"], attribute_values={"fst": [1, 2, 3, 4, 5, 6]}, unet="frozen"))
    method.check(components, defect_records())  # the records hold FST 1 and 6 only
    method.prepare(components)
    assert method.vocab.values[1] == ["1", "2", "3", "4", "5", "6"]
    cond, uncond = method.guidance_embeds(["contamination"], [{"fst": 5}])
    assert cond.shape == uncond.shape == (1, 2, 32)
    narrow = CE(CE.Config(attributes=["fst"], attribute_values={"fst": [1, 2]}))
    with pytest.raises(MethodError, match="6 are not in attribute_values.fst"):
        narrow.check(components, defect_records())
    with pytest.raises(ConfigError, match="not in attributes"):
        CE.Config(attribute_values={"fst": [1]})
