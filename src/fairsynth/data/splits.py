"""Train/val/test splits: stratified by class x group, grouped, or held out by group.

Pure functions of (records, config): the same seed gives the same split on any machine.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import numpy as np

from fairsynth.config import SplitConfig
from fairsynth.data.records import Record

SPLITS = ("train", "val", "test")


def _field(record: Record, name: str) -> Any:
    if name == "label":
        return record.label
    if name == "id":
        return record.id
    return record.attributes.get(name)


def _stable_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _allocate(n: int, val: float, test: float, rng: np.random.Generator) -> list[str]:
    """Split names for ``n`` shuffled units of one stratum.

    Counts use stochastic rounding (``floor(n * fraction + u)``), so a stratum of one or two
    units is not always left entirely in train: over many strata the fractions hold.
    """
    n_test = min(n, int(np.floor(n * test + rng.random())))
    n_val = min(n - n_test, int(np.floor(n * val + rng.random())))
    return ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)


def assign_splits(records: list[Record], cfg: SplitConfig) -> list[Record]:
    """Set ``attributes["split"]`` on every record (in place) and return the records.

    Order of rules: a split the dataset already gives (``keep_existing``), then the hold-out
    group (``holdout_column`` in ``holdout_values`` -> test), then stratified random
    allocation of the rest over ``stratify`` fields. With ``group_by``, the unit of
    allocation is the group (e.g. HAM10000's ``lesion_id``), so no group spans two splits;
    a group is stratified by its first record.
    """
    holdout = {str(v) for v in cfg.holdout_values}
    pending: list[Record] = []
    for record in records:
        existing = record.attributes.get("split")
        if cfg.keep_existing and existing in SPLITS:
            continue
        if cfg.holdout_column and str(_field(record, cfg.holdout_column)) in holdout:
            record.attributes["split"] = "test"
            continue
        pending.append(record)

    # Units: groups of records that must share a split.
    units: dict[str, list[Record]] = defaultdict(list)
    for record in pending:
        group = _field(record, cfg.group_by) if cfg.group_by else None
        units[f"g:{group}" if group is not None else f"r:{record.id}:{id(record)}"].append(record)

    strata: dict[tuple, list[str]] = defaultdict(list)
    for key, members in units.items():
        strata[tuple(str(_field(members[0], name)) for name in cfg.stratify)].append(key)

    # Hold-out rows already fill the test split: the rest is divided into train and val only.
    test_fraction = 0.0 if holdout else cfg.test
    val_fraction = cfg.val / (1.0 - cfg.test) if holdout else cfg.val
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng = np.random.default_rng(_stable_seed(cfg.seed, "|".join(stratum)))
        order = rng.permutation(len(keys))
        names = _allocate(len(keys), val_fraction, test_fraction, rng)
        for position, index in enumerate(order):
            for record in units[keys[index]]:
                record.attributes["split"] = names[position]
    return records
