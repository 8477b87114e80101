"""Captions built from attributes, and placeholder tokens for textual inversion / DreamBooth.

    >>> render_caption("A dermoscopic image of {diagnosis} on Fitzpatrick skin type {fst_roman}", record)
    'A dermoscopic image of melanoma on Fitzpatrick skin type VI'

Fields available to a template: ``label``, ``diagnosis`` (the ``diagnosis`` attribute, else
the label), ``fst``, ``fst_roman``, ``fst_group``, ``token`` (the placeholder token of the
record's class x skin type, e.g. ``<melanoma-FST-VI>``), ``class_token`` (the class's alone,
``<melanoma>``: ``token_per: class``), ``fst_token`` (the skin type's alone, ``<FST-VI>``;
``token_per: class_plus_fst`` names ``{class_token} {fst_token}``), ``caption`` (the dataset's
own), and every attribute of the record.
"""

from __future__ import annotations

import re
import string
from typing import Any

from fairsynth.data.fst import group_of, to_roman
from fairsynth.data.records import Record

#: Rare tokens used by DreamBooth for an instance ("a photo of sks garment").
DREAMBOOTH_TOKENS = ("sks", "ukj")


def placeholder_token(label: str | None, fst: int | None = None) -> str:
    """Textual-inversion token for a class (and skin type): ``<melanoma-FST-VI>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", (label or "concept").lower()).strip("-")
    return f"<{slug}-FST-{to_roman(fst)}>" if fst is not None else f"<{slug}>"


def skin_type_token(fst: int) -> str:
    """Textual-inversion token for a skin type alone, shared by every class: ``<FST-VI>``."""
    return f"<FST-{to_roman(fst)}>"


#: How placeholder tokens are derived from a record: one per class x skin type
#: (``<melanoma-FST-VI>``), one per class (``<melanoma>``), or one per class plus one per skin type
#: (``<melanoma> <FST-VI>``: each token learns from every image of its class or of its skin type).
TOKEN_SCHEMES = ("class_and_fst", "class", "class_plus_fst")


def concept_tokens(label: str | None, fst: int | None, token_per: str) -> list[str]:
    """The placeholder tokens that stand for an image of class ``label`` on skin type ``fst``."""
    if token_per not in TOKEN_SCHEMES:
        raise ValueError(f"token_per must be one of {', '.join(TOKEN_SCHEMES)}, got {token_per!r}")
    if token_per == "class_and_fst":
        return [placeholder_token(label, fst)]
    if token_per == "class_plus_fst" and fst is not None:
        return [placeholder_token(label), skin_type_token(fst)]
    return [placeholder_token(label)]


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def caption_fields(record: Record) -> dict[str, Any]:
    fst = record.attributes.get("fst")
    values: dict[str, Any] = dict(record.attributes)
    values.update(
        label=record.label,
        diagnosis=record.attributes.get("diagnosis") or record.label,
        fst=fst,
        fst_roman=to_roman(fst),
        fst_group=record.attributes.get("fst_group") or group_of(fst) or "unknown",
        token=placeholder_token(record.label, fst),
        class_token=placeholder_token(record.label),
        fst_token=skin_type_token(fst) if fst is not None else "",
        caption=record.caption or "",
    )
    return values


def render_caption(template: str, record: Record) -> str:
    """Fill ``template`` from a record; a field the record lacks is an error naming the row."""
    values = caption_fields(record)
    missing = [name for name in template_fields(template) if values.get(name) is None]
    if missing:
        raise KeyError(f"row {record.id}: caption template needs {', '.join(missing)}, which the row lacks")
    return template.format(**values)
