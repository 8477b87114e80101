"""textual_inversion and pivotal on tiny seeded SD / SDXL components."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fairsynth.config import ConfigError, from_dict, to_dict
from fairsynth.data.records import Record
from fairsynth.methods import METHODS, MethodError
from fairsynth.methods._peft import adapter_parameters, base_parameters
from fairsynth.methods.base import Batch
from fairsynth.methods.textual_inversion import expand_placeholder_tokens, expand_tokens
from fairsynth.models.architectures import build_pipeline, tiny_sd_components, tiny_sdxl_components
from fairsynth.models.tokenizer import CLIP_VOCAB_SIZE
from tests.methods.training_steps import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.methods.training_steps import derm_records, tiny, train_steps

TI = METHODS.get("textual_inversion")
PIVOTAL = METHODS.get("pivotal")


def embedding_matrices(components):
    return [e.get_input_embeddings().weight.detach().clone() for e in components.text_encoders]


def images(pipe, prompt):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images


# --------------------------------------------------------------------------------------
# textual inversion
# --------------------------------------------------------------------------------------


def test_ti_changes_only_the_new_rows_and_derives_tokens_from_classes_and_skin_types():
    components, _ = tiny("sd")
    method = TI(TI.Config(num_vectors=2))
    (before,) = embedding_matrices(components)
    train_steps(method, components, derm_records(4, fsts=(1, 6)))

    assert method.tokens.tokens == ["<melanoma-FST-I>", "<melanoma-FST-VI>", "<psoriasis-FST-I>", "<psoriasis-FST-VI>"]
    (after,) = embedding_matrices(components)
    assert after.shape == (CLIP_VOCAB_SIZE + 8, before.shape[1])
    # AdamW's weight decay moved every row it was given; after_step put the frozen ones back.
    assert torch.equal(after[:CLIP_VOCAB_SIZE], before)
    initializer = before[components.tokenizers[0].convert_tokens_to_ids("mole</w>")]
    assert all(not torch.equal(row, initializer) for row in after[CLIP_VOCAB_SIZE:])
    state = method.trainable_state(components)
    assert set(state) == {f"text_encoder.{t}" for t in method.tokens.tokens}
    assert all(v.shape == (2, 32) for v in state.values())
    assert method.trains_text_encoder


def test_ti_sdxl_adds_the_token_to_both_encoders_and_keeps_every_other_row():
    components, _ = tiny("sdxl")
    method = TI(TI.Config(placeholder_tokens=["<garment>"], initializer_token="jacket"))
    before = embedding_matrices(components)
    records = [Record("g", "g.png", "jacket", "a photo of <garment>", {})]
    train_steps(method, components, records)
    after = embedding_matrices(components)
    for old, new in zip(before, after):
        assert new.shape[0] == old.shape[0] + 1
        assert torch.equal(new[:-1], old)
        assert not torch.equal(new[-1], old[components.tokenizers[0].convert_tokens_to_ids("jacket</w>")])
    assert set(method.trainable_state(components)) == {"text_encoder.<garment>", "text_encoder_2.<garment>"}


def test_ti_export_in_a_fresh_pipeline_gives_the_trained_pipelines_images(tmp_path):
    components, raw = tiny("sd")
    method = TI(TI.Config(num_vectors=2))
    train_steps(method, components, derm_records(4), learning_rate=0.5)
    folder = method.export(components, tmp_path)["textual_inversion"]

    index = json.loads((folder / "tokens.json").read_text())
    assert [e["token"] for e in index["tokens"]] == method.tokens.tokens
    fresh = build_pipeline(tiny_sd_components())
    for entry in index["tokens"]:  # one file per token, each {token: (num_vectors, dim)}
        state = load_file(folder / entry["file"])
        assert list(state) == [entry["token"]] and state[entry["token"]].shape == (2, 32)
        fresh.load_textual_inversion(folder / entry["file"], token=entry["token"])

    prompt = "a photo of <melanoma-FST-VI> on the arm"
    expanded = expand_placeholder_tokens(prompt, fresh.tokenizer)
    assert expanded == method.expand_tokens(prompt) == "a photo of <melanoma-FST-VI> <melanoma-FST-VI>_1 on the arm"
    trained = build_pipeline(raw)
    np.testing.assert_array_equal(images(fresh, expanded), images(trained, expanded))
    # and the token matters: the base pipeline draws something else
    assert not np.array_equal(images(fresh, expanded), images(fresh, "a photo of mole mole on the arm"))


def test_ti_sdxl_export_loads_per_encoder_with_clip_l_and_clip_g(tmp_path):
    components, raw = tiny("sdxl")
    method = TI(TI.Config(placeholder_tokens=["<garment>"], initializer_token="jacket", num_vectors=2))
    train_steps(method, components, [Record("g", "g.png", None, "a photo of <garment>", {})], learning_rate=0.5)
    folder = method.export(components, tmp_path)["textual_inversion"]

    state = load_file(folder / "garment.safetensors")
    assert set(state) == {"clip_l", "clip_g"} and state["clip_l"].shape == (2, 32) and state["clip_g"].shape == (2, 64)
    fresh = build_pipeline(tiny_sdxl_components())
    fresh.load_textual_inversion(
        state["clip_l"], token="<garment>", text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer
    )
    fresh.load_textual_inversion(
        state["clip_g"], token="<garment>", text_encoder=fresh.text_encoder_2, tokenizer=fresh.tokenizer_2
    )
    for encoder, trained in zip((fresh.text_encoder, fresh.text_encoder_2), components.text_encoders):
        assert torch.equal(encoder.get_input_embeddings().weight, trained.get_input_embeddings().weight)
    prompt = expand_placeholder_tokens("a photo of <garment>", fresh.tokenizer)
    np.testing.assert_array_equal(images(fresh, prompt), images(build_pipeline(raw), prompt))


def test_ti_state_round_trip_restores_the_conditioning():
    records = derm_records(2)
    components, _ = tiny("sd")
    method = TI(TI.Config(num_vectors=3))
    train_steps(method, components, records, learning_rate=0.5)
    batch = Batch([r.caption for r in records], records)
    expected = method.encode(components, batch).encoder_hidden_states

    resumed_components, _ = tiny("sd")
    resumed = TI(TI.Config(num_vectors=3))
    resumed.check(resumed_components, records)
    resumed.prepare(resumed_components)
    resumed.load_trainable_state(resumed_components, method.trainable_state(components))
    assert torch.equal(resumed.encode(resumed_components, batch).encoder_hidden_states, expected)
    with pytest.raises(MethodError, match="unknown placeholder"):
        extra = {**method.trainable_state(components), "text_encoder.<x>": torch.zeros(3, 32)}
        resumed.load_trainable_state(resumed_components, extra)


def test_captions_get_their_records_token_unless_dropped_or_already_named():
    method = TI(TI.Config(num_vectors=2))
    components, _ = tiny("sd")
    records = derm_records(2, fsts=(6,))
    method.check(components, records)
    expected = "<melanoma-FST-VI> <melanoma-FST-VI>_1, a photo of melanoma"
    assert method.caption_for("a photo of melanoma", records[0]) == expected
    assert method.caption_for("", records[0]) == ""  # dropped by the loop for guidance: stays empty
    assert method.caption_for("a <psoriasis-FST-VI> rash", records[0]) == "a <psoriasis-FST-VI> <psoriasis-FST-VI>_1 rash"
    no_caption = Record("x", "x.png", "melanoma", None, {"fst": 6})
    assert method.caption_for(None, no_caption) == "<melanoma-FST-VI> <melanoma-FST-VI>_1"
    unseen = Record("v", "", "melanoma", "melanoma on FST II", {"fst": 2})  # no token was learned for it
    assert method.caption_for(unseen.caption, unseen) == "melanoma on FST II"


def test_expand_tokens_is_case_insensitive_and_idempotent():
    counts = {"<a>": 3, "<b>": 1}
    once = expand_tokens("<a> and <A>, <b>", counts)
    assert once == "<a> <a>_1 <a>_2 and <a> <a>_1 <a>_2, <b>"
    assert expand_tokens(once, counts) == once


def test_ti_config_round_trips_through_the_recipe_machinery():
    cfg = TI.Config(placeholder_tokens=["<x>"], num_vectors=4)
    assert from_dict(TI.Config, to_dict(cfg)) == cfg


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["photo", "Photo", "<|endoftext|>"])
def test_a_placeholder_already_in_the_vocabulary_is_an_error(token):
    components, _ = tiny("sd")
    method = TI(TI.Config(placeholder_tokens=[token]))
    with pytest.raises(MethodError, match="already in the vocabulary"):
        method.check(components, [Record("r", "r.png", "x", f"a {token}", {})])


def test_an_initializer_of_several_tokens_is_an_error():
    components, _ = tiny("sd")
    method = TI(TI.Config(placeholder_tokens=["<x>"], initializer_token="lesion"))  # le + sion
    with pytest.raises(MethodError, match="2 tokens"):
        method.check(components, [Record("r", "r.png", "x", "a <x>", {})])


def test_start_phrases_per_class_and_skin_type_set_the_new_rows_from_the_phrase_embeddings():
    """A token of exactly num_vectors phrase tokens *is* the phrase at the input; others are group means."""
    components, _ = tiny("sd")
    tokenizer = components.tokenizers[0]
    melanoma, psoriasis, dark = "a dark irregular blob", "a red patch", "on a brown background"
    size = len(tokenizer.encode(f"{melanoma} {dark}", add_special_tokens=False))
    method = TI(TI.Config(num_vectors=size, initializers={"melanoma": melanoma, "psoriasis": psoriasis},
                          fst_initializers={"VI": dark}))
    (before,) = embedding_matrices(components)
    method.check(components, derm_records(4, fsts=(1, 6)))
    method.prepare(components)
    (after,) = embedding_matrices(components)

    def rows(token):
        return after[tokenizer.convert_tokens_to_ids(method.tokens.expand(token).split())]

    def phrase(text):
        return before[tokenizer.encode(text, add_special_tokens=False)]

    assert method.tokens.phrases["<melanoma-FST-VI>"] == f"{melanoma} {dark}"
    assert torch.equal(rows("<melanoma-FST-VI>"), phrase(f"{melanoma} {dark}"))
    # Skin type I has no start phrase: the class's phrase alone, repeated to fill num_vectors.
    short = phrase(psoriasis)
    assert torch.equal(rows("<psoriasis-FST-I>"), short[torch.arange(size) % len(short)])


def test_class_plus_fst_learns_a_token_per_class_and_one_per_skin_type_that_captions_combine():
    """Each class token starts from its class's phrase, each skin-type token from its skin type's."""
    components, _ = tiny("sd")
    tokenizer = components.tokenizers[0]
    melanoma, dark = "a dark irregular blob", "on a brown background"
    method = TI(TI.Config(token_per="class_plus_fst", num_vectors=2, initializers={"melanoma": melanoma},
                          fst_initializers={"VI": dark}))
    (before,) = embedding_matrices(components)
    records = derm_records(4, fsts=(1, 6))
    method.check(components, records)
    method.prepare(components)
    (after,) = embedding_matrices(components)
    assert sorted(method.tokens.tokens) == ["<FST-I>", "<FST-VI>", "<melanoma>", "<psoriasis>"]
    assert method.tokens.phrases == {"<melanoma>": melanoma, "<FST-VI>": dark}
    dark_rows = before[tokenizer.encode(dark, add_special_tokens=False)]
    new = after[tokenizer.convert_tokens_to_ids(method.tokens.expand("<FST-VI>").split())]
    torch.testing.assert_close(new, torch.stack([part.mean(0) for part in torch.tensor_split(dark_rows, 2)]))
    record = next(r for r in records if r.label == "melanoma" and r.attributes["fst"] == 6)
    assert method.caption_for(record.caption, record).startswith("<melanoma> <melanoma>_1 <FST-VI> <FST-VI>_1, ")


def test_a_long_start_phrase_is_averaged_in_order_over_the_vectors():
    components, _ = tiny("sd")
    tokenizer = components.tokenizers[0]
    text = "a small smooth brown round blob"
    method = TI(TI.Config(placeholder_tokens=["<x>"], num_vectors=2, initializers={"<x>": text}))
    (before,) = embedding_matrices(components)
    method.check(components, [Record("r", "r.png", "x", "a <x>", {})])
    method.prepare(components)
    (after,) = embedding_matrices(components)
    phrase = before[tokenizer.encode(text, add_special_tokens=False)]
    first, second = torch.tensor_split(phrase, 2)
    new = after[tokenizer.convert_tokens_to_ids(["<x>", "<x>_1"])]
    torch.testing.assert_close(new, torch.stack([first.mean(0), second.mean(0)]))


def test_start_phrases_that_fit_no_class_are_an_error_and_those_of_absent_classes_a_warning(caplog):
    components, _ = tiny("sd")
    method = TI(TI.Config(initializers={"melanomma": "a dark blob"}))
    with pytest.raises(MethodError, match="'melanomma'.*melanoma, psoriasis"):
        method.check(components, derm_records(4))
    method = TI(TI.Config(initializers={"melanoma": "a dark blob", "psoriasis": "a red patch", "nevus": "a round blob"}))
    with caplog.at_level("WARNING"):
        method.check(components, derm_records(4))
    assert "'nevus'" in caplog.text and "not used" in caplog.text
    assert set(method.tokens.phrases) == {"<melanoma-FST-I>", "<melanoma-FST-VI>", "<psoriasis-FST-I>", "<psoriasis-FST-VI>"}


def test_captions_that_name_no_token_are_an_error_when_not_prepending():
    components, _ = tiny("sd")
    method = TI(TI.Config(caption_token="none"))
    with pytest.raises(MethodError, match="names a placeholder token"):
        method.check(components, derm_records(2))


@pytest.mark.parametrize(
    "options",
    [
        {"apply_to": "unet"},
        {"num_vectors": 0},
        {"placeholder_tokens": ["<a>", "<A>"]},
        {"placeholder_tokens": ["two words"]},
        {"initializer_token": " "},
        {"fst_initializers": {"VII": "on a black background"}},
        {"initializers": {"melanoma": " "}},
    ],
)
def test_bad_ti_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        TI.Config(**options)


# --------------------------------------------------------------------------------------
# pivotal
# --------------------------------------------------------------------------------------


def test_pivotal_phases_carry_their_steps_learning_rates_and_schedules():
    method = PIVOTAL()  # the FairSkin plan by default: 2,000 TI at 5e-4, 10,000 LoRA at 1e-4
    phases = method.phases(12000)
    assert [(p.name, p.steps, p.learning_rate) for p in phases] == [("textual_inversion", 2000, 5e-4), ("lora", 10000, 1e-4)]
    assert method.config.lora_rank == 16 and method.config.lora_alpha == 32

    method = PIVOTAL(PIVOTAL.Config(joint_steps=3000, ti_lr_scheduler="constant", joint_lr_scheduler="cosine"))
    phases = method.phases(15000)
    assert [(p.name, p.steps, p.lr_scheduler) for p in phases] == [
        ("textual_inversion", 2000, "constant"), ("lora", 10000, None), ("joint", 3000, "cosine"),
    ]
    assert phases[2].settings == {"train": ["tokens", "lora"], "token_learning_rate": 5e-5}


def test_pivotal_splits_a_different_step_count_in_proportion(caplog):
    method = PIVOTAL(PIVOTAL.Config(joint_steps=3000))
    with caplog.at_level("WARNING"):
        assert [p.steps for p in method.phases(150)] == [20, 100, 30]
    assert "differs from" in caplog.text
    assert [p.steps for p in method.phases(3)] == [1, 1, 1]
    with pytest.raises(MethodError, match="fewer than"):
        method.phases(2)


def test_pivotal_phase_1_trains_tokens_phase_2_the_lora_phase_3_both(tmp_path):
    components, raw = tiny("sd")
    method = PIVOTAL(PIVOTAL.Config(
        ti_steps=2, lora_steps=2, joint_steps=2, num_vectors=2,
        ti_learning_rate=0.05, lora_learning_rate=0.01, joint_token_learning_rate=0.005,
    ))
    unet_base = {k: v.detach().clone() for k, v in components.unet.named_parameters()}
    (base,) = embedding_matrices(components)
    initializer = base[components.tokenizers[0].convert_tokens_to_ids("mole</w>")]
    snapshots = []

    def snapshot(phase):
        lora = {k: v.detach().clone() for k, v in adapter_parameters(components.unet).items()}
        snapshots.append((phase, embedding_matrices(components)[0], lora))

    run = train_steps(method, components, derm_records(4), steps=6, learning_rate=0.5, on_phase_end=snapshot)
    assert [[g["name"] for g in groups] for groups in run.groups] == [["tokens"], ["unet_lora"], ["tokens", "unet_lora"]]
    assert [[g["lr"] for g in groups] for groups in run.groups] == [[0.05], [0.01], [0.005, 0.01]]

    assert [phase.name for phase, _, _ in snapshots] == ["textual_inversion", "lora", "joint"]
    (_, emb1, lora1), (_, emb2, lora2), (_, emb3, lora3) = snapshots
    new = slice(CLIP_VOCAB_SIZE, None)
    # phase 1: tokens moved away from the initializer, other rows did not, LoRA still at its init (B = 0)
    assert all(not torch.equal(row, initializer) for row in emb1[new])
    assert torch.equal(emb1[:CLIP_VOCAB_SIZE], base)
    assert all(torch.count_nonzero(v) == 0 for k, v in lora1.items() if "lora_B" in k)
    # phase 2: the whole embedding matrix is bit-identical, the LoRA moved
    assert torch.equal(emb2, emb1)
    assert any(not torch.equal(lora1[k], lora2[k]) for k in lora1)
    # phase 3: both move, frozen rows never do
    assert not torch.equal(emb3[new], emb2[new]) and torch.equal(emb3[:CLIP_VOCAB_SIZE], emb1[:CLIP_VOCAB_SIZE])
    assert any(not torch.equal(lora2[k], lora3[k]) for k in lora2)
    for name, param in base_parameters(components.unet).items():
        assert torch.equal(param, unet_base[name.replace(".base_layer", "")])

    # export: tokens + LoRA, and a fresh pipeline with both gives the trained pipeline's images
    files = method.export(components, tmp_path)
    assert files["lora_diffusers"].name == "pytorch_lora_weights.safetensors"
    fresh = build_pipeline(tiny_sd_components())
    for path in sorted(files["textual_inversion"].glob("*.safetensors")):
        fresh.load_textual_inversion(path, token=next(iter(load_file(path))))
    prompt = expand_placeholder_tokens("<melanoma-FST-VI> on the back", fresh.tokenizer)
    tokens_only = images(fresh, prompt)
    fresh.load_lora_weights(files["lora_diffusers"].parent)
    trained = images(build_pipeline(raw), prompt)
    np.testing.assert_allclose(images(fresh, prompt), trained, atol=1e-5)
    assert np.abs(tokens_only - trained).max() > 1e-3  # the LoRA is part of what was loaded


def test_pivotal_rejects_bad_lora_targets_and_a_base_it_cannot_train():
    components, _ = tiny("sd")
    method = PIVOTAL(PIVOTAL.Config(lora_targets=["no_such_layer"]))
    with pytest.raises(MethodError, match="no_such_layer"):
        method.check(components, derm_records(2))
    with pytest.raises(ConfigError):
        PIVOTAL.Config(ti_steps=0, lora_steps=0)


def test_pivotal_state_round_trip_restores_tokens_and_lora():
    records = derm_records(2)
    options = dict(ti_steps=1, lora_steps=1, joint_steps=1, num_vectors=2, ti_learning_rate=0.05, lora_learning_rate=0.01)
    components, _ = tiny("sd")
    method = PIVOTAL(PIVOTAL.Config(**options))
    train_steps(method, components, records, steps=3)
    state = method.trainable_state(components)
    assert {k.split(".")[0] for k in state} == {"tokens", "lora"}

    resumed_components, _ = tiny("sd")
    resumed = PIVOTAL(PIVOTAL.Config(**options))
    resumed.check(resumed_components, records)
    resumed.prepare(resumed_components)
    resumed.load_trainable_state(resumed_components, state)
    batch = Batch([r.caption for r in records], records)
    assert torch.equal(
        resumed.encode(resumed_components, batch).encoder_hidden_states,
        method.encode(components, batch).encoder_hidden_states,
    )
    for key, value in resumed.trainable_state(resumed_components).items():
        assert torch.equal(value, state[key])
    with pytest.raises(MethodError, match="does not train"):
        resumed.load_trainable_state(resumed_components, {**state, "other.x": torch.zeros(1)})
