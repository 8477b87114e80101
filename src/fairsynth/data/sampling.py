"""Balanced sampling: per-record weights that give a chosen batch mix.

Used by fine-tuning (FairSkin's batch mix by skin type: FST I-III 40 %, IV 20 %, V-VI 40 %)
and by the downstream classifier (class-balanced sampling). The weights go straight into
``torch.utils.data.WeightedRandomSampler``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fairsynth.config import ConfigError, knob
from fairsynth.data.fst import ROMAN
from fairsynth.data.records import Record

#: FairSkin's skin-type batch mix for fine-tuning.
FAIRSKIN_BATCH_MIX = {"I-III": 0.4, "IV": 0.2, "V-VI": 0.4}


@dataclass
class BalanceConfig:
    """How training batches are drawn from the dataset."""

    strategy: Literal["none", "inverse_frequency", "mix"] = knob(
        "none", "`none`: uniform over rows; `inverse_frequency`: every value of `by` equally "
        "often; `mix`: the shares given in `mix`."
    )
    by: str | list[str] = knob(
        "fst", "Field balanced over: `label`, `fst`, `fst_group`, or any attribute; for `inverse_frequency` also "
        "a list, every combination equally often ([label, fst]: each class x skin type cell)."
    )
    mix: dict[str, float] = knob(
        {}, "For `mix`: share per value. For `fst`, keys may be ranges of types in Roman "
        "numerals: {'I-III': 0.4, 'IV': 0.2, 'V-VI': 0.4} (FairSkin)."
    )

    def __post_init__(self) -> None:
        if isinstance(self.by, list):
            if not self.by or not all(isinstance(field, str) and field for field in self.by):
                raise ConfigError(f"balance.by must be a field name or a non-empty list of them, got {self.by!r}")
            if self.strategy == "mix" and len(self.by) > 1:
                raise ConfigError("balance.by lists several fields; strategy 'mix' takes one (use inverse_frequency)")
            if len(self.by) == 1:
                self.by = self.by[0]
        if self.strategy == "mix":
            if not self.mix:
                raise ConfigError("balance.mix is empty but balance.strategy is 'mix'")
            if any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
                raise ConfigError(f"balance.mix shares must be >= 0 and not all zero, got {self.mix}")


def _roman_range(key: str) -> set[int] | None:
    """'I-III' -> {1, 2, 3}; 'IV' -> {4}; None where the key is not Roman numerals."""
    to_number = {roman: number for number, roman in ROMAN.items()}
    parts = [p.strip().upper() for p in key.split("-")]
    if not all(p in to_number for p in parts) or len(parts) > 2:
        return None
    low, high = to_number[parts[0]], to_number[parts[-1]]
    return set(range(min(low, high), max(low, high) + 1))


def _value(record: Record, by: str | list[str]) -> Any:
    if isinstance(by, list):
        return tuple(_value(record, field) for field in by)
    return record.label if by == "label" else record.attributes.get(by)


def bucket_of(value: Any, keys: list[str], by: str) -> str | None:
    """Which key of a mix a value falls in (``fst`` values match Roman ranges)."""
    for key in keys:
        if by == "fst" and isinstance(value, int):
            numbers = _roman_range(key)
            if numbers is not None and value in numbers:
                return key
        if str(value) == key:
            return key
    return None


def sampling_weights(records: list[Record], cfg: BalanceConfig) -> np.ndarray:
    """One non-negative weight per record; drawing proportional to them gives the mix.

    Records whose value falls in no bucket of ``mix`` (e.g. unknown skin type) get weight 0;
    a bucket of the mix that no record fills is an error, since the mix cannot be met.
    """
    n = len(records)
    if n == 0:
        raise ValueError("cannot balance an empty dataset")
    if cfg.strategy == "none":
        return np.full(n, 1.0 / n)
    values = [_value(r, cfg.by) for r in records]
    if cfg.strategy == "inverse_frequency":
        counts = Counter(map(str, values))
        weights = np.array([1.0 / counts[str(v)] for v in values])
        return weights / weights.sum()
    keys = list(cfg.mix)
    buckets = [bucket_of(v, keys, cfg.by) for v in values]
    counts = Counter(b for b in buckets if b is not None)
    empty = [k for k in keys if cfg.mix[k] > 0 and counts[k] == 0]
    if empty:
        raise ValueError(f"balance.mix asks for {', '.join(empty)} but no record has {cfg.by} there")
    total = sum(cfg.mix[k] for k in keys)
    weights = np.array([0.0 if b is None else cfg.mix[b] / total / counts[b] for b in buckets])
    return weights / weights.sum()
