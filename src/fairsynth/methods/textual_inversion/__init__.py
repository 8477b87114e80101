"""Textual inversion: learn the embeddings of new placeholder tokens (``<melanoma-FST-VI>``)."""

from fairsynth.methods.textual_inversion.method import TextualInversion, TextualInversionConfig, TokenConfig
from fairsynth.methods.textual_inversion.tokens import (
    PlaceholderTokens,
    expand_placeholder_tokens,
    expand_tokens,
    load_exported_tokens,
)

__all__ = [
    "PlaceholderTokens",
    "TextualInversion",
    "TextualInversionConfig",
    "TokenConfig",
    "expand_placeholder_tokens",
    "expand_tokens",
    "load_exported_tokens",
]
