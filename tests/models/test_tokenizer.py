"""The offline CLIP tokenizer gives SD's ids; checked against open_clip's own tokenizer."""

from __future__ import annotations

import time

import pytest
from transformers import CLIPTokenizer

from fairsynth.models.tokenizer import (
    CLIP_VOCAB_SIZE,
    END_OF_TEXT_ID,
    START_OF_TEXT_ID,
    clip_tokenizer,
    save_clip_tokenizer,
)

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")

PROMPTS = [
    "a photo of a cat",
    "A dermoscopic image of melanoma on Fitzpatrick skin type VI",
    "sks dog's toy -- it's 3.5cm; naïve café, 1024x768!",
    "  several   spaces\tand\nnew lines ",
    "emoji 🙂 and 日本語",
    "a photo of a sks garment, studio lighting, 8k, trending on artstation",
]


def test_known_sd_ids_and_padding():
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == CLIP_VOCAB_SIZE == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a photo of a cat", padding="max_length", truncation=True).input_ids
    assert len(padded) == tokenizer.model_max_length == 77
    assert padded[7:] == [END_OF_TEXT_ID] * 70


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_open_clip(prompt):
    reference = open_clip_tokenizer.SimpleTokenizer()
    expected = [START_OF_TEXT_ID, *reference.encode(prompt), END_OF_TEXT_ID]
    assert clip_tokenizer()(prompt).input_ids == expected


def test_padded_batch_matches_open_clip_tokenize():
    # open_clip.tokenize pads with 0 where SD pads with <|endoftext|>; compare the real tokens.
    reference = open_clip_tokenizer.tokenize(PROMPTS, context_length=77)
    ours = clip_tokenizer()(PROMPTS, padding="max_length", truncation=True, return_tensors="pt").input_ids
    for row, prompt in enumerate(PROMPTS):
        length = len(clip_tokenizer()(prompt).input_ids)
        assert ours[row, :length].tolist() == reference[row, :length].tolist()


def test_long_prompts_are_truncated_to_end_with_end_of_text():
    ids = clip_tokenizer()("cat " * 100, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == START_OF_TEXT_ID and ids[-1] == END_OF_TEXT_ID


def test_sdxl_second_tokenizer_pads_with_exclamation_mark():
    tokenizer = clip_tokenizer(pad_token="!")
    ids = tokenizer("a photo of a cat", padding="max_length").input_ids
    assert tokenizer.pad_token_id == 0 and ids[7:] == [0] * 70 and ids[6] == END_OF_TEXT_ID


def test_each_call_is_a_fresh_object():
    first = clip_tokenizer()
    first.add_tokens(["<fst-vi>"])
    assert len(clip_tokenizer()) == CLIP_VOCAB_SIZE


def test_builds_quickly():
    clip_tokenizer()  # the first build also reads the BPE file
    start = time.perf_counter()
    clip_tokenizer()
    assert time.perf_counter() - start < 2.0


def test_saved_tokenizer_reloads_from_either_file_set(tmp_path):
    tokenizer = clip_tokenizer()
    tokenizer.add_tokens(["<derm-token>"])
    folder = save_clip_tokenizer(tokenizer, tmp_path / "tokenizer")
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {path.name for path in folder.iterdir()}
    reloaded = CLIPTokenizer.from_pretrained(folder)
    from_vocab_files = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    prompt = "a photo of a cat"
    assert reloaded(prompt).input_ids == from_vocab_files(prompt).input_ids == tokenizer(prompt).input_ids
    assert reloaded.model_max_length == 77
    assert reloaded.convert_tokens_to_ids("<derm-token>") == CLIP_VOCAB_SIZE
