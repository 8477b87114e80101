"""A learnable embedding of class (and attribute) ids that stands in for the text encoder.

For few-shot data without useful captions (9 MVTec defect classes of ~10 images each) the
UNet is conditioned on a short learned sequence instead of CLIP text: one block of
``tokens_per_factor`` vectors per conditioning factor (the class, then attributes such as
``fst``), plus a learned position/type embedding::

    seq = [E_class[c] ; E_fst[s]] + P          # (B, F * k, cross_attention_dim)

Each factor has one extra learned *null* row (id ``n`` of a factor with ``n`` values, or
``-1``), used for conditioning dropout during training and as the negative conditioning of
classifier-free guidance (Ho & Salimans 2022): ``eps = eps(null) + w (eps(c) - eps(null))``.

:func:`class_conditioning` is a pure function of the saved tensors, so generation needs only
``class_embedding.safetensors`` and ``class_vocab.json`` (:func:`load_class_embedding`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from safetensors.torch import load_file

from fairsynth.methods.base import MethodError

if TYPE_CHECKING:
    from fairsynth.data.records import Record

#: The factor that holds the record's class label; attribute factors are named after the attribute.
CLASS_FACTOR = "class"
EMBEDDING_FILE = "class_embedding.safetensors"
VOCAB_FILE = "class_vocab.json"


def _value_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)  # numbers in numeric order: 2 before 10
    except ValueError:
        return (1, 0.0, value)


@dataclass
class ClassVocabulary:
    """Values of each conditioning factor, in id order; id ``len(values)`` is the null id."""

    factors: list[str]
    values: list[list[str]]

    @classmethod
    def from_records(
        cls,
        records: list["Record"],
        attributes: list[str],
        classes: list[str] | None = None,
        attribute_values: Mapping[str, list[str]] | None = None,
    ) -> "ClassVocabulary":
        """Classes (``classes`` if given, else the sorted labels) and attribute values
        (``attribute_values[name]`` if given, else the sorted values of the records).

        A record without a label, or with a label / attribute value outside a given list, is
        an error; a missing attribute value is fine (it maps to the factor's null id).
        """
        attribute_values = attribute_values or {}
        labels = []
        for record in records:
            if record.label is None:
                raise MethodError(f"record {record.id} has no class label; class_embedding needs one per record")
            labels.append(str(record.label))
        if classes:
            unknown = sorted(set(labels) - set(classes))
            if unknown:
                raise MethodError(f"labels {', '.join(unknown)} are not in classes: {', '.join(classes)}")
            class_values = list(classes)
        else:
            class_values = sorted(set(labels), key=_value_key)
        values = [class_values]
        for name in attributes:
            seen = {str(r.attributes[name]) for r in records if r.attributes.get(name) is not None}
            if name in attribute_values:
                unknown = sorted(seen - set(attribute_values[name]), key=_value_key)
                if unknown:
                    raise MethodError(f"{name} values {', '.join(unknown)} are not in attribute_values.{name}")
                values.append(list(attribute_values[name]))
                continue
            if not seen:
                raise MethodError(f"no training record has attribute {name!r}")
            values.append(sorted(seen, key=_value_key))
        if not class_values:
            raise MethodError("no classes: class_embedding needs labelled records")
        return cls([CLASS_FACTOR, *attributes], values)

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.values]

    @property
    def null_ids(self) -> list[int]:
        return self.sizes

    def ids(self, label: str | None, attributes: Mapping[str, Any] | None = None, *, where: str = "") -> list[int]:
        """Ids of one sample, ``[class, attr...]``; an unknown value is a :class:`MethodError`."""
        attributes = attributes or {}
        out = []
        for factor, values in zip(self.factors, self.values):
            value = label if factor == CLASS_FACTOR else attributes.get(factor)
            if value is None:
                if factor == CLASS_FACTOR:
                    raise MethodError(f"{where or 'sample'} has no class label")
                out.append(len(values))  # unknown attribute: the null id
                continue
            try:
                out.append(values.index(str(value)))
            except ValueError:
                raise MethodError(
                    f"{where or 'sample'}: {factor} {value!r} is not in the vocabulary ({', '.join(values)})"
                ) from None
        return out

    def record_ids(self, record: "Record") -> list[int]:
        return self.ids(record.label, record.attributes, where=f"record {record.id}")

    def to_json(self) -> dict[str, Any]:
        return {
            "factors": [
                {"name": f, "values": v, "null_id": len(v)} for f, v in zip(self.factors, self.values)
            ]
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ClassVocabulary":
        return cls([f["name"] for f in data["factors"]], [list(f["values"]) for f in data["factors"]])


class ClassEmbedding(torch.nn.Module):
    """Per-factor tables ``(n_i + 1, k, D)`` (last row: null) and a position embedding ``(F * k, D)``."""

    def __init__(self, sizes: list[int], tokens_per_factor: int, dim: int) -> None:
        super().__init__()
        self.tables = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(n + 1, tokens_per_factor, dim)) for n in sizes]
        )
        self.position = torch.nn.Parameter(torch.zeros(len(sizes) * tokens_per_factor, dim))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The saved form: ``{"factor_0": ..., "factor_1": ..., "position": ...}``."""
        named = {f"factor_{i}": table for i, table in enumerate(self.tables)}
        named["position"] = self.position
        return named

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return class_conditioning(self, ids[:, 0], ids[:, 1:])


def _tables(embedding: ClassEmbedding | Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    named = embedding.tensors() if isinstance(embedding, ClassEmbedding) else embedding
    count = sum(1 for key in named if key.startswith("factor_"))
    try:
        tables = [named[f"factor_{i}"] for i in range(count)]
        position = named["position"]
    except KeyError as err:
        raise MethodError(f"class embedding tensors lack {err.args[0]!r}") from None
    return tables, position


def null_ids(embedding: ClassEmbedding | Mapping[str, torch.Tensor]) -> list[int]:
    """The null id of every factor (the last row of each table)."""
    return [table.shape[0] - 1 for table in _tables(embedding)[0]]


def class_conditioning(
    embedding: ClassEmbedding | Mapping[str, torch.Tensor],
    class_ids: torch.Tensor,
    attr_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The cross-attention sequence ``(B, F * k, D)`` for class ids ``(B,)`` and attribute ids ``(B, F - 1)``.

    ``embedding`` is the module or its saved tensors (``class_embedding.safetensors``). An id is
    a value's index in :class:`ClassVocabulary`, the factor's null id (its value count) or -1
    (null too); anything else is a :class:`MethodError`. Pass the result as ``prompt_embeds``
    (and the all-null result as ``negative_prompt_embeds``) to a diffusers SD pipeline.
    """
    tables, position = _tables(embedding)
    class_ids = torch.as_tensor(class_ids).reshape(-1)
    batch = class_ids.shape[0]
    if attr_ids is None:
        attr_ids = torch.empty(batch, 0, dtype=torch.long)
    attr_ids = torch.as_tensor(attr_ids).reshape(batch, -1)
    ids = torch.cat([class_ids[:, None], attr_ids.to(class_ids.device)], dim=1).long()  # (B, F)
    if ids.shape[1] != len(tables):
        raise MethodError(f"got ids of {ids.shape[1]} factors, the embedding has {len(tables)}")
    blocks = []
    for factor, table in enumerate(tables):
        column = ids[:, factor].to(table.device)
        null = table.shape[0] - 1
        if bool(((column < -1) | (column > null)).any()):
            bad = column[(column < -1) | (column > null)].tolist()
            raise MethodError(f"factor {factor}: ids {bad} are out of range 0..{null} (null {null}, or -1)")
        column = torch.where(column == -1, torch.full_like(column, null), column)
        blocks.append(table[column])  # (B, k, D)
    sequence = torch.cat(blocks, dim=1)  # (B, F * k, D)
    return sequence + position.to(sequence.device, sequence.dtype)


def guidance_pair(
    embedding: ClassEmbedding | Mapping[str, torch.Tensor],
    class_ids: torch.Tensor,
    attr_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)``: the conditioning and its all-null twin."""
    cond = class_conditioning(embedding, class_ids, attr_ids)
    batch = cond.shape[0]
    nulls = torch.tensor(null_ids(embedding)).expand(batch, -1)
    return cond, class_conditioning(embedding, nulls[:, 0], nulls[:, 1:])


def load_class_embedding(folder: str | Path) -> tuple[dict[str, torch.Tensor], ClassVocabulary]:
    """The tensors and vocabulary a ``class_embedding`` export holds (safetensors + JSON, no pickle)."""
    folder = Path(folder)
    state = load_file(str(folder / EMBEDDING_FILE))
    vocab = ClassVocabulary.from_json(json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8")))
    sizes = [t.shape[0] - 1 for t in _tables(state)[0]]
    if sizes != vocab.sizes:
        raise MethodError(f"{folder}: embedding tables {sizes} do not match the vocabulary {vocab.sizes}")
    return state, vocab
