"""New placeholder tokens in the text encoder(s): add, initialise, keep the rest frozen, save.

Textual inversion (Gal et al. 2022) learns one embedding row per new token and nothing else.
:class:`PlaceholderTokens` owns those rows for every text encoder of a pipeline (one for SD,
clip_l and clip_g for SDXL) and is shared by ``textual_inversion`` and ``pivotal``::

    tokens = PlaceholderTokens({"<melanoma-FST-VI>": 2}, initializer_token="mole")
    tokens.check(components)      # every vocabulary / initializer problem, before training
    tokens.add(components)        # rows appended, copied from the initializer's row
    ...optimizer step...
    tokens.restore(components)    # every other row back to its original bits

A token with ``num_vectors > 1`` is the sequence ``<tok> <tok>_1 ... <tok>_{n-1}`` (diffusers'
naming, which ``load_textual_inversion`` recreates); prompts name ``<tok>`` only and
:func:`expand_tokens` spells it out before tokenisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from fairsynth.io import atomic_write_text
from fairsynth.methods._export import write_safetensors
from fairsynth.methods.base import Components, MethodError

#: Key of each SDXL text encoder's rows in an exported file (kohya / A1111 / diffusers' SDXL scripts).
SDXL_KEYS = ("clip_l", "clip_g")
#: Index of the exported tokens, beside the embedding files.
INDEX_NAME = "tokens.json"


def vector_names(token: str, num_vectors: int) -> list[str]:
    """``["<tok>", "<tok>_1", ...]``: the vocabulary entries of a multi-vector token."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_tokens(caption: str, num_vectors: Mapping[str, int]) -> str:
    """Spell out multi-vector tokens: ``"a <tok> lesion"`` -> ``"a <tok> <tok>_1 lesion"``.

    Matching ignores case (the CLIP tokenizer lowercases text before it matches added tokens)
    and an already expanded sequence is left as it is, so expanding twice changes nothing.
    """
    for token, count in num_vectors.items():
        if count <= 1:
            continue
        names = vector_names(token, count)
        spelled = re.escape(token) + rf"(?:\s+{re.escape(token)}_\d+)*(?!_\d)"
        caption = re.sub(spelled, lambda _: " ".join(names), caption, flags=re.IGNORECASE)
    return caption


def added_token_vectors(tokenizer: Any) -> dict[str, int]:
    """``{token: num_vectors}`` of the placeholder tokens a tokenizer holds (``<tok>_i`` counted)."""
    added = set(tokenizer.get_added_vocab())
    counts: dict[str, int] = {}
    for token in added:
        if re.search(r"_\d+$", token) and token.rsplit("_", 1)[0] in added:
            continue
        count = 1
        while f"{token}_{count}" in added:
            count += 1
        counts[token] = count
    return counts


def expand_placeholder_tokens(prompt: str, tokenizer: Any) -> str:
    """:func:`expand_tokens` for a pipeline's tokenizer after ``load_textual_inversion``.

    diffusers' own ``maybe_convert_prompt`` misses tokens with capitals such as
    ``<melanoma-FST-VI>`` (it compares the lowercased tokenisation with the added tokens),
    so generation code expands prompts with this first.
    """
    return expand_tokens(prompt, added_token_vectors(tokenizer))


def phrase_vectors(tokenizer: Any, weight: torch.Tensor, phrase: str, num_vectors: int) -> torch.Tensor:
    """``(num_vectors, D)`` start vectors from a phrase: its token rows, in order, in ``num_vectors`` groups.

    Group ``i`` is the mean of its rows; a phrase with fewer tokens than vectors repeats from
    its start. With exactly ``num_vectors`` tokens the token *is* the phrase at the input.
    """
    ids = tokenizer.encode(phrase, add_special_tokens=False)
    rows = weight.detach()[ids]  # (T, D)
    if len(ids) < num_vectors:
        return rows[torch.arange(num_vectors) % len(ids)].clone()
    return torch.stack([group.mean(0) for group in torch.tensor_split(rows, num_vectors)])


def file_stem(token: str) -> str:
    """A file name for a token: ``<melanoma-FST-VI>`` -> ``melanoma-FST-VI``."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", token).strip("-")
    return stem or "token"


def encoder_names(components: Components) -> list[str]:
    return ["text_encoder", "text_encoder_2"][: len(components.text_encoders)]


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the contiguous True stretches of a 1-D bool mask."""
    values = mask.cpu().tolist()
    runs, start = [], None
    for index, value in enumerate(values + [False]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((start, index))
            start = None
    return runs


def _gradient_mask(trained: torch.Tensor) -> Any:
    """A gradient hook that zeroes the gradient of every row outside ``trained`` ``(V,)``."""
    keep = trained.float().unsqueeze(1)  # (V, 1)
    cached: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def mask(grad: torch.Tensor) -> torch.Tensor:  # grad: (V, D)
        key = (grad.device, grad.dtype)
        if key not in cached:
            cached.clear()
            cached[key] = keep.to(device=grad.device, dtype=grad.dtype)
        return grad * cached[key]

    return mask


@dataclass
class _Rows:
    """The new rows of one text encoder and what is needed to keep every other row frozen."""

    ids: dict[str, list[int]]  # token -> row ids of its vectors
    trained: torch.Tensor  # (V,) bool: rows textual inversion may change
    original: torch.Tensor  # (V, D) the matrix right after initialisation
    weight: torch.nn.Parameter  # the embedding matrix the hook is attached to
    frozen_runs: list[tuple[int, int]]  # contiguous stretches of rows that never change


class PlaceholderTokens:
    """The placeholder tokens of a run, in every text encoder of the pipeline.

    Args:
        num_vectors: ``{token: vectors}``, in the order the rows are appended.
        initializer_token: a word that is one token; every new row starts as its embedding.
        phrases: ``{token: phrase}``: these tokens start from a phrase instead, as kohya's
            ``--init_word`` does: the phrase's token embeddings are split in order into
            ``num_vectors`` groups and each vector starts as the mean of its group (a phrase
            of exactly ``num_vectors`` tokens is copied row for row; a shorter one repeats).
    """

    def __init__(
        self, num_vectors: Mapping[str, int], initializer_token: str, phrases: Mapping[str, str] | None = None
    ) -> None:
        self.num_vectors = dict(num_vectors)
        self.initializer_token = initializer_token
        self.phrases = {token: phrase for token, phrase in (phrases or {}).items() if token in self.num_vectors}
        self._rows: list[_Rows] = []

    @property
    def tokens(self) -> list[str]:
        return list(self.num_vectors)

    def expand(self, caption: str) -> str:
        return expand_tokens(caption, self.num_vectors)

    def mentioned_in(self, caption: str) -> bool:
        lowered = caption.lower()
        return any(token.lower() in lowered for token in self.num_vectors)

    # -- before training ---------------------------------------------------------------
    def check(self, components: Components) -> None:
        """Every placeholder is new to every tokenizer, and the initializer is one token."""
        seen: dict[str, str] = {}
        for token in self.tokens:
            if token.lower() in seen:
                raise MethodError(
                    f"placeholder tokens {seen[token.lower()]!r} and {token!r} differ only in case; "
                    "CLIP lowercases prompts, so they would be one token"
                )
            seen[token.lower()] = token
        for index, tokenizer in enumerate(components.tokenizers):
            vocab = tokenizer.get_vocab()
            for token, count in self.num_vectors.items():
                for name in vector_names(token, count):
                    low = name.lower()
                    if name in vocab or low in vocab or f"{low}</w>" in vocab:
                        raise MethodError(
                            f"placeholder token {name!r} is already in the vocabulary of tokenizer {index + 1}; "
                            "choose a new token such as '<my-concept>'"
                        )
            ids = tokenizer.encode(self.initializer_token, add_special_tokens=False)
            if len(ids) != 1:
                pieces = tokenizer.convert_ids_to_tokens(ids)
                raise MethodError(
                    f"initializer_token {self.initializer_token!r} is {len(ids)} tokens ({' '.join(pieces)}); "
                    "it must be a single token"
                )
            for token, phrase in self.phrases.items():
                if not tokenizer.encode(phrase, add_special_tokens=False):
                    raise MethodError(f"the initializer phrase of {token} ({phrase!r}) has no tokens")

    def add(self, components: Components) -> None:
        """Append the rows to every tokenizer/encoder, initialised from the initializer token."""
        if self._rows:
            raise MethodError("placeholder tokens were already added to these components")
        self.check(components)
        for tokenizer, encoder in zip(components.tokenizers, components.text_encoders):
            init_id = tokenizer.encode(self.initializer_token, add_special_tokens=False)[0]
            names = [name for token, count in self.num_vectors.items() for name in vector_names(token, count)]
            if tokenizer.add_tokens(names) != len(names):
                raise MethodError(f"the tokenizer refused some of {names}")
            # mean_resizing=False: rows are overwritten below; no covariance of the whole matrix.
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            weight = encoder.get_input_embeddings().weight
            ids = {
                token: tokenizer.convert_tokens_to_ids(vector_names(token, count))
                for token, count in self.num_vectors.items()
            }
            trained = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
            with torch.no_grad():
                for token, row_ids in ids.items():
                    if token in self.phrases:
                        weight[row_ids] = phrase_vectors(tokenizer, weight, self.phrases[token], len(row_ids))
                    else:
                        weight[row_ids] = weight[init_id].clone()
                    trained[row_ids] = True
            rows = _Rows(ids, trained, weight.detach().clone(), weight, _runs(~trained))
            # Frozen rows get no gradient, so they add nothing to gradient clipping's norm or
            # to Adam's moments; `restore` still puts their bits back (weight decay moves them).
            requires_grad = weight.requires_grad
            weight.requires_grad_(True)  # a hook can only be registered on a tensor that needs grad
            weight.register_hook(_gradient_mask(trained))
            weight.requires_grad_(requires_grad)
            self._rows.append(rows)

    # -- training ---------------------------------------------------------------------------
    def _live(self, components: Components) -> list[tuple[_Rows, torch.nn.Parameter]]:
        if not self._rows:
            raise MethodError("placeholder tokens are not added yet (call prepare first)")
        out = []
        for rows, encoder in zip(self._rows, components.text_encoders):
            weight = encoder.get_input_embeddings().weight
            if weight is not rows.weight:
                raise MethodError("the text encoder's embedding matrix was replaced after the tokens were added")
            out.append((rows, weight))
        return out

    def embedding_weights(self, components: Components) -> list[torch.nn.Parameter]:
        """The embedding matrices (one per text encoder) that hold the trained rows."""
        return [weight for _, weight in self._live(components)]

    def restore(self, components: Components, *, include_new: bool = False) -> None:
        """Put every row that is not a placeholder row back to its original bits.

        ``include_new`` also resets the placeholder rows to :meth:`snapshot`'s values (a phase
        that trains something else must not move them).
        """
        with torch.no_grad():
            for rows, weight in self._live(components):
                if rows.original.device != weight.device or rows.original.dtype != weight.dtype:
                    rows.original = rows.original.to(device=weight.device, dtype=weight.dtype)
                    rows.trained = rows.trained.to(weight.device)
                if include_new:
                    weight.copy_(rows.original)
                    continue
                # Copy contiguous runs of frozen rows (usually one: everything before the new rows).
                for start, end in rows.frozen_runs:
                    weight[start:end] = rows.original[start:end]

    def snapshot(self, components: Components) -> None:
        """Record the current placeholder rows as the values :meth:`restore` returns them to."""
        with torch.no_grad():
            for rows, weight in self._live(components):
                rows.original = rows.original.to(device=weight.device, dtype=weight.dtype)
                rows.trained = rows.trained.to(weight.device)
                rows.original[rows.trained] = weight[rows.trained]

    # -- state ------------------------------------------------------------------------------
    def state(self, components: Components) -> dict[str, torch.Tensor]:
        """``{"text_encoder.<tok>": (num_vectors, D)}`` (and ``text_encoder_2.`` for SDXL)."""
        state = {}
        for name, (rows, weight) in zip(encoder_names(components), self._live(components)):
            for token, ids in rows.ids.items():
                state[f"{name}.{token}"] = weight.detach()[ids].clone().cpu()
        return state

    def load_state(self, components: Components, state: Mapping[str, torch.Tensor]) -> None:
        expected = set()
        with torch.no_grad():
            for name, (rows, weight) in zip(encoder_names(components), self._live(components)):
                for token, ids in rows.ids.items():
                    key = f"{name}.{token}"
                    expected.add(key)
                    if key not in state:
                        raise MethodError(f"checkpoint lacks the rows of {key}")
                    if tuple(state[key].shape) != (len(ids), weight.shape[1]):
                        raise MethodError(f"checkpoint rows of {key} have shape {tuple(state[key].shape)}")
                    weight[ids] = state[key].to(device=weight.device, dtype=weight.dtype)
        unknown = sorted(set(state) - expected)
        if unknown:
            raise MethodError(f"checkpoint has rows of unknown placeholder tokens: {', '.join(unknown)}")

    # -- export -----------------------------------------------------------------------------
    def export(self, components: Components, folder: Path) -> Path:
        """One safetensors file per token that ``pipe.load_textual_inversion`` reads, plus an index.

        SD: ``{"<tok>": (num_vectors, D)}`` — diffusers takes a single key per file (the token
        is the key), A1111/ComfyUI take the same file. SDXL: ``{"clip_l": (n, 768), "clip_g":
        (n, 1280)}``, loaded into each encoder with ``load_textual_inversion(sd["clip_l"],
        token=..., text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)`` and likewise for
        clip_g. :func:`load_exported_tokens` does either.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.state(components)
        names = encoder_names(components)
        index = {"kind": components.kind, "initializer_token": self.initializer_token, "tokens": []}
        if self.phrases:
            index["initializer_phrases"] = dict(self.phrases)
        stems: set[str] = set()
        for token, count in self.num_vectors.items():
            stem = file_stem(token)
            while stem in stems:
                stem += "_"
            stems.add(stem)
            if components.kind == "sdxl":
                tensors = {key: state[f"{name}.{token}"] for key, name in zip(SDXL_KEYS, names)}
            else:
                tensors = {token: state[f"text_encoder.{token}"]}
            path = write_safetensors(folder / f"{stem}.safetensors", tensors, {"token": token, "num_vectors": str(count)})
            index["tokens"].append({"token": token, "num_vectors": count, "file": path.name})
        atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        return folder


def load_exported_tokens(pipe: Any, folder: str | Path) -> list[str]:
    """Load every token of an exported folder into a diffusers pipeline; returns the tokens.

    Uses only ``pipe.load_textual_inversion`` (SD and SDXL), so the files are what any diffusers
    user loads. Prompts still go through :func:`expand_placeholder_tokens`.
    """
    folder = Path(folder)
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    tokens = []
    for entry in index["tokens"]:
        path = folder / entry["file"]
        if index["kind"] == "sdxl":
            state = load_file(str(path))
            pipe.load_textual_inversion(
                state["clip_l"], token=entry["token"], text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
            )
            pipe.load_textual_inversion(
                state["clip_g"], token=entry["token"], text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
            )
        else:
            pipe.load_textual_inversion(str(path), token=entry["token"])
        tokens.append(entry["token"])
    return tokens
