"""Which images the raters see: eligibility, equal quotas per stratum, a seeded draw (pure).

Allocation: the synthetic part of the sample is split equally over the strata (every
combination of the ``by`` fields found in the synthetic set), the real part likewise over the
same strata among the real images; when the strata outnumber the images, the first strata in
sorted order get one each. A stratum with too few images gives what it has and its shortfall
is reported, never filled from another stratum: that would unbalance the protocol where the
generator is weakest.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from fairsynth.data.records import Record

#: The column of `fairsynth generate`'s overall filter verdict (beside one ``<check>_ok`` per check).
#: ``selected`` is not a verdict: an accepted image beyond its cell's target is ``surplus``, not rejected.
VERDICT_COLUMNS = ("accepted",)


class ReviewExportError(ValueError):
    """The review sample cannot be drawn as asked (a clear, user-facing message)."""


@dataclass(frozen=True)
class Eligible:
    """The records that may be drawn, and what the filter verdicts removed."""

    records: list[Record]
    rejected: int
    verdict_columns: tuple[str, ...]

    def note(self, which: str) -> str:
        if not self.verdict_columns:
            return f"{which}: no filter verdicts in the manifest, every one of its {len(self.records)} images may be drawn"
        return (
            f"{which}: only images that passed the filters are drawn ({len(self.records)} passed, {self.rejected} rejected; "
            f"verdicts read from {', '.join(self.verdict_columns)})"
        )


def field_value(record: Record, name: str) -> object:
    """A stratum field of a record: ``label`` (or ``class``) is the class, anything else an attribute."""
    return record.label if name in ("label", "class") else record.attributes.get(name)


def stratum(record: Record, by: Sequence[str]) -> str:
    """The stratum name of a record, e.g. ``label=melanoma, fst=6``."""
    return ", ".join(f"{name}={field_value(record, name)}" for name in by)


def eligible(records: list[Record]) -> Eligible:
    """Records whose filter verdicts (``accepted``, ``<check>_ok``) are not False."""
    columns = sorted({
        key for record in records for key in record.attributes
        if key in VERDICT_COLUMNS or key.endswith("_ok")
    })
    kept = [r for r in records if not any(r.attributes.get(c) is False for c in columns)]
    return Eligible(kept, len(records) - len(kept), tuple(columns))


def allocate(total: int, strata: Sequence[str]) -> dict[str, int]:
    """``total`` split as equally as possible over ``strata`` (the first in sorted order get the remainder)."""
    if not strata:
        return {}
    base, extra = divmod(total, len(strata))
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(sorted(strata))}


def draw(
    records: Sequence[Record], quotas: dict[str, int], by: Sequence[str], rng: random.Random,
) -> tuple[list[Record], dict[str, int]]:
    """A seeded sample of ``quotas[stratum]`` records per stratum, and the shortfall per stratum."""
    pools: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        pools[stratum(record, by)].append(record)
    chosen: list[Record] = []
    shortfall: dict[str, int] = {}
    for name, quota in sorted(quotas.items()):
        pool = sorted(pools.get(name, []), key=lambda r: (r.id, r.image))  # manifest order must not matter
        take = min(quota, len(pool))
        chosen += rng.sample(pool, take)
        if take < quota:
            shortfall[name] = quota - take
    return chosen, shortfall


def check_fields(records: Sequence[Record], by: Sequence[str], manifest: str) -> None:
    """Every synthetic record must carry every strata field (a missing one would be a stratum of its own)."""
    for number, record in enumerate(records, 1):
        for name in by:
            if field_value(record, name) is None:
                raise ReviewExportError(
                    f"{manifest}: row {number} (id {record.id}) has no {name!r}; strata fields must be set on every "
                    f"synthetic image (choose others with --by)"
                )
