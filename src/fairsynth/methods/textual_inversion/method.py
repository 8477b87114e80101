"""Textual inversion: new placeholder tokens whose embedding rows are all that trains.

Gal et al. 2022, "An Image is Worth One Word": for each concept a new token ``S*`` is added
to the vocabulary and only its embedding ``v*`` is optimised with the usual denoising loss,
``v* = argmin_v E ||eps - eps_theta(z_t, t, c_theta("a photo of S*"))||^2`` (their Eq. 2).
Everything else, including every other embedding row, stays bit-identical.

The tokens are either given (``placeholder_tokens: ["<melanoma-FST-VI>"]``) or derived from
the dataset, one per class x skin type (:func:`fairsynth.data.captions.placeholder_token`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.data.captions import concept_tokens
from fairsynth.data.fst import parse_fst
from fairsynth.methods import METHODS
from fairsynth.methods._export import write_note
from fairsynth.methods.base import (
    Batch,
    Components,
    Conditioning,
    Method,
    MethodConfig,
    MethodError,
    Phase,
    encode_prompts,
)
from fairsynth.methods.textual_inversion.tokens import PlaceholderTokens

if TYPE_CHECKING:
    from fairsynth.data.records import Record

logger = logging.getLogger(__name__)

#: Most vectors one token may take; CLIP's context is 77 positions, two of them BOS/EOS.
MAX_VECTORS = 32


@dataclass
class TokenConfig(MethodConfig):
    """Placeholder-token options, shared by ``textual_inversion`` and ``pivotal``."""

    placeholder_tokens: list[str] = knob(
        [], "New tokens to learn, e.g. ['<melanoma-FST-VI>']; empty: one per class x skin type "
        "of the training records (see token_per)."
    )
    token_per: Literal["class_and_fst", "class", "class_plus_fst"] = knob(
        "class_and_fst", "How tokens are derived when placeholder_tokens is empty: "
        "`class_and_fst` -> <melanoma-FST-VI> (a rare cell's token learns from that cell's images alone), "
        "`class` -> <melanoma>, `class_plus_fst` -> <melanoma> <FST-VI> (a class token learns from every "
        "skin type, a skin-type token from every class; the LoRA learns how they combine)."
    )
    initializer_token: str = knob(
        "mole", "A word that is a single CLIP token; every new vector starts as its embedding."
    )
    initializers: dict[str, str] = knob(
        {}, "Start phrases instead of initializer_token, keyed by class label or by placeholder token, "
        "e.g. {melanoma: 'a mottled dark brown irregular blob'}: words the base already draws. The "
        "phrase's token embeddings are spread over the token's num_vectors (a phrase of num_vectors "
        "tokens is copied row for row)."
    )
    fst_initializers: dict[str, str] = knob(
        {}, "A phrase per skin type (keys 1-6 or I-VI), e.g. {VI: 'on a dark brown background'}: with "
        "token_per: class_and_fst appended to the class's start phrase (or to initializer_token); with "
        "class_plus_fst the start phrase of the skin-type token <FST-VI>."
    )
    num_vectors: int = knob(
        1, "Embedding vectors per placeholder token (<tok> <tok>_1 ...); more capture more detail."
    )
    caption_token: Literal["prepend", "none"] = knob(
        "prepend", "`prepend`: a caption that names no placeholder token gets its record's token in "
        "front ('<melanoma-FST-VI>, a dermoscopic image ...'); `none`: captions must name the tokens "
        "themselves ({token} in data.caption_template)."
    )

    def __post_init__(self) -> None:
        if not 1 <= self.num_vectors <= MAX_VECTORS:
            raise ConfigError(f"num_vectors must be in 1..{MAX_VECTORS}, got {self.num_vectors}")
        if not self.initializer_token.strip():
            raise ConfigError("initializer_token must be a word, e.g. 'mole'")
        for key, phrase in {**self.initializers, **self.fst_initializers}.items():
            if not str(phrase).strip():
                raise ConfigError(f"initializer phrase of {key!r} is empty")
        for key in self.fst_initializers:
            try:
                fst = parse_fst(key)
            except ValueError:
                fst = None
            if fst is None:
                raise ConfigError(f"fst_initializers: key {key!r} is not a skin type 1-6 or I-VI")
        for token in self.placeholder_tokens:
            if not token or any(ch.isspace() for ch in token):
                raise ConfigError(f"placeholder token {token!r} must be one word without spaces, e.g. '<my-concept>'")
        if len({t.lower() for t in self.placeholder_tokens}) != len(self.placeholder_tokens):
            raise ConfigError(f"placeholder_tokens repeat a token (case-insensitively): {self.placeholder_tokens}")


@dataclass
class TextualInversionConfig(TokenConfig):
    """Textual inversion: only the placeholder tokens' embedding rows train."""

    apply_to: Literal["unet", "text_encoder", "both"] = knob(
        "text_encoder", "Always `text_encoder`: only the new rows of the token embedding matrix train."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.apply_to != "text_encoder":
            raise ConfigError(
                f"textual_inversion trains only token embeddings (apply_to: text_encoder), got {self.apply_to!r}; "
                "use `pivotal` to train a LoRA as well"
            )


def token_config(config: TokenConfig) -> TextualInversionConfig:
    """The textual-inversion part of a config that extends :class:`TokenConfig`."""
    return TextualInversionConfig(
        placeholder_tokens=list(config.placeholder_tokens),
        token_per=config.token_per,
        initializer_token=config.initializer_token,
        initializers=dict(config.initializers),
        fst_initializers=dict(config.fst_initializers),
        num_vectors=config.num_vectors,
        caption_token=config.caption_token,
        text_encoder_lr=config.text_encoder_lr,
    )


@METHODS.register("textual_inversion", help="New placeholder tokens (<melanoma-FST-VI>); only their embedding rows train")
class TextualInversion(Method):
    """Textual inversion (Gal et al. 2022): learn placeholder-token embeddings, nothing else.

    SD: one text encoder; SDXL: the token is added to both (clip_l and clip_g) and both rows
    train. Export: one ``.safetensors`` per token that ``pipe.load_textual_inversion`` loads.
    """

    Config = TextualInversionConfig
    kinds = ("sd", "sdxl")

    def __init__(self, config: TextualInversionConfig | None = None) -> None:
        super().__init__(config)
        self.tokens: PlaceholderTokens | None = None
        if self.config.placeholder_tokens:
            self.tokens = self._make_tokens(self.config.placeholder_tokens)

    def _make_tokens(self, tokens: list[str], concepts: dict[str, tuple[str, int | None]] | None = None) -> PlaceholderTokens:
        """Tokens with their start phrases; ``concepts`` maps a derived token to its (label, fst)."""
        phrases = {}
        fst_phrases = {parse_fst(key): phrase for key, phrase in self.config.fst_initializers.items()}
        for token in tokens:
            label, fst = (concepts or {}).get(token, (None, None))
            phrase = self.config.initializers.get(token) or (self.config.initializers.get(label) if label else None)
            if fst in fst_phrases:
                # a skin-type token of class_plus_fst (no class) starts from the skin type's phrase alone
                phrase = fst_phrases[fst] if label is None else f"{phrase or self.config.initializer_token} {fst_phrases[fst]}"
            if phrase:
                phrases[token] = phrase
        return PlaceholderTokens({t: self.config.num_vectors for t in tokens}, self.config.initializer_token, phrases)

    @property
    def trains_text_encoder(self) -> bool:
        return True  # the embedding rows change, so text-encoder outputs cannot be cached

    # -- tokens and captions --------------------------------------------------------------
    def record_tokens(self, record: "Record | None") -> list[str]:
        """The placeholder tokens that stand for a record's concept (none for a prior image)."""
        if self.config.placeholder_tokens:
            return self.config.placeholder_tokens[:1] if len(self.config.placeholder_tokens) == 1 else []
        if record is None or record.attributes.get("prior"):
            return []
        return concept_tokens(record.label, record.attributes.get("fst"), self.config.token_per)

    def _concepts(self, record: "Record") -> dict[str, tuple[str | None, int | None]]:
        """Each derived token of a record with the (class, skin type) its start phrase is for."""
        fst = record.attributes.get("fst")
        if self.config.token_per == "class_plus_fst":
            tokens = self.record_tokens(record)
            return dict(zip(tokens, [(record.label, None), (None, fst)]))
        return {token: (record.label, fst if self.config.token_per == "class_and_fst" else None)
                for token in self.record_tokens(record)}

    def require_tokens(self) -> PlaceholderTokens:
        if self.tokens is None:
            raise MethodError("placeholder tokens are derived from the records: call check(components, records) first")
        return self.tokens

    def expand_tokens(self, caption: str) -> str:
        """Spell out multi-vector tokens: ``"a <tok> lesion"`` -> ``"a <tok> <tok>_1 lesion"``."""
        return self.require_tokens().expand(caption)

    def caption_for(self, caption: str | None, record: "Record | None") -> str:
        """The caption as the text encoder sees it: token prepended (option) and expanded.

        An empty caption of a record that has one was dropped by the loop (caption dropout,
        for classifier-free guidance) and stays empty; a record without any caption trains
        as its token alone. A record whose concept has no learned token (a validation cell of
        a class x skin type the training data lacks) keeps its caption.
        """
        tokens = self.require_tokens()
        caption = caption or ""
        token = " ".join(t for t in self.record_tokens(record) if t in tokens.num_vectors)
        dropped = not caption and bool(record is not None and record.caption)
        if self.config.caption_token == "prepend" and token and not dropped and not tokens.mentioned_in(caption):
            caption = f"{token}, {caption}" if caption else token
        return tokens.expand(caption)

    # -- before training ---------------------------------------------------------------------
    def check(self, components: Components, records: list["Record"]) -> None:
        super().check(components, records)
        if not self.config.placeholder_tokens:
            concepts: dict[str, tuple[str | None, int | None]] = {}
            for record in records:
                concepts.update(self._concepts(record))
            if not concepts:
                raise MethodError("no placeholder tokens: give placeholder_tokens, or records with labels")
            classes = {label for label, _ in concepts.values() if label is not None}
            unused = sorted(set(self.config.initializers) - set(concepts) - classes)
            if unused:
                # A recipe may name classes a subset of the data lacks; a phrase that fits no class
                # at all is a typo.
                message = (
                    f"initializers name {', '.join(map(repr, unused))}, which is neither a class of the training "
                    f"records nor a token ({', '.join(sorted(classes))})"
                )
                if len(unused) == len(self.config.initializers):
                    raise MethodError(message)
                logger.warning("%s; those phrases are not used", message)
            self.tokens = self._make_tokens(sorted(concepts), concepts)
        tokens = self.require_tokens()
        tokens.check(components)
        if records and not any(tokens.mentioned_in(self.caption_for(r.caption, r)) for r in records):
            raise MethodError(
                f"no training caption names a placeholder token ({', '.join(tokens.tokens[:3])}...); put {{token}} "
                "in data.caption_template or set caption_token: prepend with one token per record"
            )

    def prepare(self, components: Components) -> None:
        self.require_tokens().add(components)

    # -- each phase / step -----------------------------------------------------------------------
    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        components.freeze_all()
        weights = self.require_tokens().embedding_weights(components)
        for weight in weights:
            weight.requires_grad_(True)
        lr = self.config.text_encoder_lr
        if lr is None:
            lr = phase.learning_rate if phase.learning_rate is not None else learning_rate
        return [{"params": weights, "lr": lr, "name": "tokens"}]

    def encode(self, components: Components, batch: Batch) -> Conditioning:
        records = batch.records if len(batch.records) == len(batch.captions) else [None] * len(batch.captions)
        captions = [self.caption_for(c, r) for c, r in zip(batch.captions, records)]
        return encode_prompts(components, captions, batch.time_ids)

    def after_step(self, components: Components) -> None:
        self.require_tokens().restore(components)

    # -- state and outputs -------------------------------------------------------------------------
    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        return self.require_tokens().state(components)

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        self.require_tokens().load_state(components, state)

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """Load the exported tokens; prompts naming them are expanded (multi-vector tokens)."""
        from fairsynth.methods._inference import require_unit_scale

        require_unit_scale(scale, "textual_inversion")
        return load_tokens_for_inference(pipe, export_dir)

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        """``<out_dir>/textual_inversion/``: ``<token>.safetensors`` per token, ``tokens.json``,
        ``method.yaml`` (the resolved options) and ``LOADING.md``."""
        folder = export_tokens(self.require_tokens(), components, Path(out_dir))
        return {
            "textual_inversion": folder,
            "config": save_resolved(self.config, folder, "method.yaml"),
        }


def load_tokens_for_inference(pipe: Any, export_dir: Path) -> Any:
    """The tokens of ``<export_dir>/textual_inversion`` into the pipeline, prompts expanded for them."""
    from fairsynth.methods.base import InferenceAdapter
    from fairsynth.methods.textual_inversion.tokens import expand_placeholder_tokens, load_exported_tokens

    folder = Path(export_dir) / "textual_inversion"
    if not folder.is_dir():
        raise MethodError(f"{export_dir} has no textual_inversion/ folder: not a textual-inversion export")
    tokens = load_exported_tokens(pipe, folder)
    return InferenceAdapter(
        "textual_inversion", prompt=lambda prompt: expand_placeholder_tokens(prompt, pipe.tokenizer), tokens=tokens
    )


def export_tokens(tokens: PlaceholderTokens, components: Components, out_dir: Path) -> Path:
    """Write the tokens' files and loading note into ``<out_dir>/textual_inversion/``."""
    folder = tokens.export(components, out_dir / "textual_inversion")
    write_note(folder, LOADING_SDXL if components.kind == "sdxl" else LOADING_SD)
    return folder


LOADING_SD = """
# Loading these textual-inversion tokens

One file per token, `{token: (num_vectors, dim)}`; `tokens.json` lists them. Each file also
works in A1111 / ComfyUI embedding folders (the file name is then the prompt word).

```python
from fairsynth.methods.textual_inversion import expand_placeholder_tokens, load_exported_tokens
load_exported_tokens(pipe, "OUT/textual_inversion")     # = pipe.load_textual_inversion(file, token=...) per file
prompt = expand_placeholder_tokens("a photo of <melanoma-FST-VI>", pipe.tokenizer)
image = pipe(prompt).images[0]
```

Expand prompts with `expand_placeholder_tokens` when a token has several vectors: diffusers'
own expansion skips tokens with capital letters (CLIP lowercases the prompt before comparing).
"""

LOADING_SDXL = """
# Loading these textual-inversion tokens (SDXL)

One file per token with `clip_l` (first text encoder) and `clip_g` (second) rows; `tokens.json`
lists them.

```python
from safetensors.torch import load_file
state = load_file("OUT/textual_inversion/<file>.safetensors")
pipe.load_textual_inversion(state["clip_l"], token=TOKEN, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
pipe.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
# or: fairsynth.methods.textual_inversion.load_exported_tokens(pipe, "OUT/textual_inversion")
prompt = expand_placeholder_tokens("a photo of <garment>", pipe.tokenizer)
```

Expand prompts with `expand_placeholder_tokens` when a token has several vectors: diffusers'
own expansion skips tokens with capital letters (CLIP lowercases the prompt before comparing).
"""
