"""Class-embedding conditioning: learned class/attribute ids replace the text prompt."""

from fairsynth.methods.class_embedding.embedding import (
    ClassEmbedding,
    ClassVocabulary,
    class_conditioning,
    guidance_pair,
    load_class_embedding,
    null_ids,
)
from fairsynth.methods.class_embedding.method import ClassEmbeddingConfig, ClassEmbeddingMethod

__all__ = [
    "ClassEmbedding",
    "ClassEmbeddingConfig",
    "ClassEmbeddingMethod",
    "ClassVocabulary",
    "class_conditioning",
    "guidance_pair",
    "load_class_embedding",
    "null_ids",
]
