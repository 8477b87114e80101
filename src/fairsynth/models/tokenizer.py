"""An offline CLIP tokenizer identical to the one Stable Diffusion ships.

Every Stable Diffusion text encoder (SD 1.x, SD 2.x, both of SDXL's) reads the byte-level BPE
vocabulary of OpenAI CLIP: 256 byte characters, the same 256 with the end-of-word marker
``</w>``, one token per merge rule, then ``<|startoftext|>`` (49406) and ``<|endoftext|>``
(49407) — 49408 tokens. open_clip ships the merge rules (``bpe_simple_vocab_16e6.txt.gz``), so
the tokenizer is rebuilt here without any download::

    tokenizer = clip_tokenizer()
    tokenizer("a photo of a cat").input_ids  # [49406, 320, 1125, 539, 320, 2368, 49407]

The file is located through the installed ``open_clip`` package without importing it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

#: Id of ``<|startoftext|>`` in the CLIP vocabulary.
START_OF_TEXT_ID = 49406
#: Id of ``<|endoftext|>``; SD 1.x pads with it.
END_OF_TEXT_ID = 49407
#: Size of the CLIP vocabulary.
CLIP_VOCAB_SIZE = 49408

_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI CLIP keeps the first 49152 - 256 - 2 merge rules of the file (line 0 is a header).
_MERGE_COUNT = 49152 - 256 - 2


def bpe_vocabulary_file() -> Path:
    """Path of CLIP's BPE merge file inside the installed open_clip package."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the CLIP tokenizer needs the BPE vocabulary that open_clip ships; "
            "install it with `pip install 'fairsynth[clip]'` (or `pip install open_clip_torch`)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _BPE_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"open_clip is installed but {_BPE_FILE} is missing from it")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's token -> id table and merge rules, built the way OpenAI CLIP builds them."""
    lines = gzip.open(bpe_vocabulary_file()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"{_BPE_FILE} gave {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def clip_tokenizer(max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A fresh CLIP tokenizer with SD's vocabulary, built offline in about 0.1 s.

    Args:
        max_length: ``model_max_length``; prompts are padded/truncated to it (SD: 77).
        pad_token: ``"<|endoftext|>"`` as in SD 1.x and SDXL's first tokenizer; ``"!"`` (id 0)
            as in SD 2.x and SDXL's second tokenizer.

    Each call returns a new object, so adding tokens (textual inversion) never leaks between
    callers.

    Example:
        >>> clip_tokenizer()("a photo of a cat").input_ids
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    vocab, merges = _clip_vocab_and_merges()
    if pad_token not in vocab:
        raise ValueError(f"pad_token {pad_token!r} is not a CLIP token")
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=max_length
    )


def save_clip_tokenizer(tokenizer: CLIPTokenizer, folder: str | Path) -> Path:
    """Save ``tokenizer`` into ``folder`` (e.g. ``<pipeline>/tokenizer``) and return the folder.

    Besides transformers' own files (``tokenizer.json``, ``tokenizer_config.json``) it writes
    ``vocab.json`` and ``merges.txt``, the two files older transformers releases and other
    tools read for a CLIP tokenizer.
    """
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    vocab, merges = _clip_vocab_and_merges()
    full_vocab = dict(vocab)
    full_vocab.update(tokenizer.get_added_vocab())  # tokens added by textual inversion
    (folder / "vocab.json").write_text(json.dumps(full_vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [f"{first} {second}" for first, second in merges]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    return folder
