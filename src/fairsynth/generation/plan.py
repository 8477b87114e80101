"""The plan: cells (class x attributes), how many images each must deliver, every image's seed.

Pure functions of the configuration and the real records:

    plan = build_plan(cfg.plan, real_records, seed=0)
    plan.cells[0].cell.id        # 'melanoma/fst=6'
    image_seed(0, 'melanoma/fst=6', 17)   # the same on any machine, in any process split

A cell's target is what it must *deliver* after filtering. Candidates are generated in index
order 0, 1, 2, ...; candidate ``i`` of cell ``c`` is sampled from the seed
``image_seed(run_seed, c, i)``, so any single image can be regenerated and the work can be
split across processes in any way without changing any image.

Targets come from one distribution over the cells, rounded to whole images by the largest
remainder (Hamilton's method), ties broken by cell order, so they add up to ``total`` exactly:

* ``counts``: given per cell id;
* ``uniform``: the same for every cell;
* ``match_real``: proportional to the real images of the cell;
* ``inverse_frequency``: proportional to 1 / real images of the cell (a cell without real
  images counts as one);
* ``shares`` / named (``fairskin``): a share per value of one field, split evenly over the
  cells with that value (FairSkin: FST I 10 %, II 10 %, III 15 %, IV 15 %, V 25 %, VI 25 %,
  each split across the diagnoses).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fairsynth.config import ConfigError
from fairsynth.data.fst import group_of, parse_fst, to_roman
from fairsynth.data.records import Record
from fairsynth.data.sampling import bucket_of
from fairsynth.generation.config import NAMED_DISTRIBUTIONS, PlanConfig


class PlanError(ValueError):
    """Targets that cannot be met as asked (the message says which and why)."""


@dataclass(frozen=True)
class Cell:
    """One class x attribute combination, e.g. melanoma on FST VI."""

    label: str | None
    attributes: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        """``melanoma/fst=6``: stable, human-readable, used in seeds and in counts."""
        parts = [str(self.label) if self.label is not None else "*"]
        parts += [f"{name}={value}" for name, value in self.attributes]
        return "/".join(parts)

    @property
    def slug(self) -> str:
        """File-name form of the id: ``melanoma-fst-6``."""
        return re.sub(r"[^A-Za-z0-9]+", "-", self.id).strip("-").lower() or "cell"

    def value(self, field_name: str) -> Any:
        if field_name in ("label", "class"):
            return self.label
        return dict(self.attributes).get(field_name)

    def record(self) -> Record:
        """A record standing for the cell (caption templates fill from it)."""
        attributes = dict(self.attributes)
        if attributes.get("fst") is not None:
            attributes.setdefault("fst_group", group_of(attributes["fst"]))
        return Record(self.id, "", self.label, None, attributes)

    def describe(self) -> str:
        parts = [str(self.label)] if self.label is not None else []
        for name, value in self.attributes:
            parts.append(f"FST {to_roman(value)}" if name == "fst" else f"{name} {value}")
        return ", ".join(parts)


@dataclass
class CellPlan:
    """A cell's target and what the real data holds of it."""

    cell: Cell
    target: int
    real: int = 0


@dataclass
class Plan:
    """Every cell with its target; candidates per cell are bounded by ``max_attempts``."""

    cells: list[CellPlan]
    seed: int
    oversample: float = 1.0
    max_attempts: float = 3.0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(c.target for c in self.cells)

    def first_round(self, cell: CellPlan) -> int:
        """Candidates generated for a cell before any filter result is known."""
        return math.ceil(cell.target * self.oversample - 1e-9)

    def attempt_cap(self, cell: CellPlan) -> int:
        """Most candidates a cell may use."""
        return max(self.first_round(cell), math.ceil(cell.target * self.max_attempts - 1e-9))

    def by_id(self) -> dict[str, CellPlan]:
        return {c.cell.id: c for c in self.cells}


def derived_seed(run_seed: int, cell_id: str, index: int, stream: str = "noise") -> int:
    """A 63-bit seed for one stream (noise, source image, reference image) of one candidate."""
    key = f"fairsynth-generate/{run_seed}/{cell_id}/{index}/{stream}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


def image_seed(run_seed: int, cell_id: str, index: int) -> int:
    """The seed of candidate ``index`` of a cell: its initial noise comes from ``torch.Generator().manual_seed`` of it."""
    return derived_seed(run_seed, cell_id, index, "noise")


def allocate(weights: list[float], total: int) -> list[int]:
    """Whole numbers proportional to ``weights`` that add up to ``total`` (largest remainder;
    ties go to the earlier cell)."""
    if total == 0:
        return [0] * len(weights)
    mass = float(sum(weights))
    if mass <= 0:
        raise PlanError("every cell has weight 0, so no image can be allocated")
    exact = [total * w / mass for w in weights]
    counts = [math.floor(x + 1e-9) for x in exact]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def _field_of(record: Record, name: str) -> Any:
    return record.label if name in ("label", "class") else record.attributes.get(name)


def _normalise(name: str, value: Any) -> Any:
    """fst values as 1-6 ('VI', '6', 6 all mean 6); others as given."""
    if name == "fst" and value is not None:
        try:
            return parse_fst(value)
        except ValueError as err:
            raise PlanError(f"generate.plan: {err}") from None
    return value


def _share_values(name: str, shares: dict[str, float]) -> list[Any]:
    """The values a mapping of shares names: Roman ranges expanded for fst."""
    from fairsynth.data.sampling import _roman_range

    values: list[Any] = []
    for key in shares:
        numbers = _roman_range(key) if name == "fst" else None
        if numbers is None and name == "fst":
            numbers = {_normalise("fst", key)}
        values += sorted(numbers) if numbers is not None else [key]
    return list(dict.fromkeys(values))


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def build_cells(cfg: PlanConfig, real: list[Record]) -> list[Cell]:
    """Classes x values of every ``by`` field, in a fixed order."""
    labels = list(cfg.classes) or sorted({r.label for r in real if r.label is not None})
    if not labels:
        raise PlanError("generate.plan: no classes (the real data has no labels); set generate.plan.classes")
    share_field, shares = _shares(cfg)
    axes = []
    for name in cfg.by:
        if name in ("label", "class"):
            raise PlanError("generate.plan.by lists attributes besides the class; the class label is always a cell axis")
        given = cfg.values.get(name)
        if given:
            values = [_normalise(name, v) for v in given]
        else:
            values = sorted({_normalise(name, _field_of(r, name)) for r in real} - {None}, key=_sort_key)
            if share_field == name:
                values = sorted(set(values) | set(_share_values(name, shares)), key=_sort_key)
        if not values:
            raise PlanError(
                f"generate.plan.by names {name!r}, but the real data has no value of it; "
                f"list them in generate.plan.values.{name}"
            )
        axes.append([(name, v) for v in values])
    extra = sorted(set(cfg.values) - set(cfg.by))
    if extra:
        raise PlanError(f"generate.plan.values has {', '.join(extra)}, which generate.plan.by does not list")
    cells = [Cell(label) for label in labels]
    for axis in axes:
        cells = [Cell(c.label, c.attributes + (pair,)) for c in cells for pair in axis]
    return cells


def _shares(cfg: PlanConfig) -> tuple[str | None, dict[str, float]]:
    if cfg.distribution in NAMED_DISTRIBUTIONS:
        return NAMED_DISTRIBUTIONS[cfg.distribution]
    if cfg.distribution == "shares":
        return cfg.shares_by, dict(cfg.shares)
    return None, {}


def real_counts(cells: list[Cell], real: list[Record]) -> list[int]:
    """Real images of each cell (class and every attribute equal)."""
    names = [name for name, _ in cells[0].attributes] if cells else []
    found = Counter((r.label, tuple((n, _normalise(n, _field_of(r, n))) for n in names)) for r in real)
    return [found[(c.label, c.attributes)] for c in cells]


def build_plan(cfg: PlanConfig, real: list[Record], seed: int) -> Plan:
    """Cells and targets for ``cfg`` given the real records (already restricted to ``real_split``)."""
    cells = build_cells(cfg, real)
    counts_real = real_counts(cells, real)
    notes: list[str] = []
    if cfg.distribution == "counts":
        ids = {c.id: i for i, c in enumerate(cells)}
        unknown = sorted(set(cfg.counts) - set(ids))
        if unknown:
            raise PlanError(
                f"generate.plan.counts names cells that do not exist: {', '.join(unknown)}; cells are "
                f"{', '.join(list(ids)[:12])}{' ...' if len(ids) > 12 else ''}"
            )
        targets = [int(cfg.counts.get(c.id, 0)) for c in cells]
        if cfg.total and cfg.total != sum(targets):
            raise PlanError(f"generate.plan.total is {cfg.total} but generate.plan.counts add up to {sum(targets)}")
    else:
        if cfg.total == 0:
            raise PlanError("generate.plan.total is 0: nothing to generate")
        weights = _weights(cfg, cells, counts_real)
        if _shares(cfg)[0] is not None:
            targets = _share_targets(cfg, cells, weights)
        else:
            targets = allocate(weights, cfg.total)
        starved = [c.id for c, w, n in zip(cells, weights, targets) if w > 0 and n == 0]
        if starved:
            notes.append(
                f"{len(starved)} cell(s) get no image because total {cfg.total} is too small for their share: "
                f"{', '.join(starved[:6])}{' ...' if len(starved) > 6 else ''}"
            )
    return Plan(
        [CellPlan(cell, target, real_n) for cell, target, real_n in zip(cells, targets, counts_real)],
        seed, cfg.oversample, cfg.max_attempts, notes,
    )


def _weights(cfg: PlanConfig, cells: list[Cell], counts_real: list[int]) -> list[float]:
    if cfg.distribution == "uniform":
        return [1.0] * len(cells)
    if cfg.distribution == "match_real":
        if sum(counts_real) == 0:
            raise PlanError("generate.plan.distribution match_real: the real data has no image of any cell")
        return [float(n) for n in counts_real]
    if cfg.distribution == "inverse_frequency":
        return [1.0 / max(n, 1) for n in counts_real]
    name, shares = _shares(cfg)
    assert name is not None
    if not any(c.value(name) is not None for c in cells) and name not in ("label", "class"):
        raise PlanError(
            f"distribution {cfg.distribution!r} shares images over {name!r}, which is not a cell axis; "
            f"add it to generate.plan.by"
        )
    keys = list(shares)
    bucket = [bucket_of(c.value(name), keys, name) for c in cells]
    empty = [k for k in keys if shares[k] > 0 and k not in bucket]
    if empty:
        raise PlanError(f"generate.plan shares {', '.join(empty)} of {name}, but no cell has that {name}")
    per_bucket = Counter(b for b in bucket if b is not None)
    if sum(shares.values()) <= 0:
        raise PlanError("generate.plan shares are all 0")
    return [0.0 if b is None else shares[b] / per_bucket[b] for b in bucket]


def _share_targets(cfg: PlanConfig, cells: list[Cell], weights: list[float]) -> list[int]:
    """Shares rounded per value first, then split evenly across the value's cells, so that each
    value gets its exact share of the total (FairSkin: FST V-VI exactly half)."""
    name, shares = _shares(cfg)
    keys = list(shares)
    bucket = [bucket_of(c.value(name), keys, str(name)) for c in cells]
    per_key = dict(zip(keys, allocate([shares[k] for k in keys], cfg.total)))
    targets = [0] * len(cells)
    for key in keys:
        members = [i for i, b in enumerate(bucket) if b == key]
        for i, n in zip(members, allocate([weights[i] for i in members], per_key[key]) if members else []):
            targets[i] = n
    return targets


def unet_evaluations_per_image(steps: int, guidance_scale: float, strength: float | None = None) -> int:
    """UNet rows evaluated for one image: one per denoising step (img2img: ``int(steps * strength)``
    steps), twice with classifier-free guidance (diffusers runs it when guidance_scale > 1)."""
    run = steps if strength is None else int(steps * strength)
    return run * (2 if guidance_scale > 1.0 else 1)


def plan_rows(plan: Plan, evaluations_per_image: int, seconds_per_evaluation: float | None) -> list[dict[str, Any]]:
    """One row per cell for the ``--dry-run`` table (and a total row)."""
    rows = []
    for c in plan.cells:
        first = plan.first_round(c)
        evaluations = first * evaluations_per_image
        rows.append({
            "cell": c.cell.id, "real": c.real, "target": c.target, "first_round": first,
            "max_attempts": plan.attempt_cap(c), "unet_evaluations": evaluations,
            "seconds": None if seconds_per_evaluation is None else evaluations * seconds_per_evaluation,
        })
    total_eval = sum(r["unet_evaluations"] for r in rows)
    rows.append({
        "cell": "total", "real": sum(r["real"] for r in rows), "target": plan.total,
        "first_round": sum(r["first_round"] for r in rows), "max_attempts": sum(r["max_attempts"] for r in rows),
        "unet_evaluations": total_eval,
        "seconds": None if seconds_per_evaluation is None else total_eval * seconds_per_evaluation,
    })
    return rows


def validate_cells(plan: Plan) -> None:
    """Two cells whose file-name forms collide cannot share an output folder."""
    seen: dict[str, str] = {}
    for c in plan.cells:
        if c.cell.slug in seen and seen[c.cell.slug] != c.cell.id:
            raise ConfigError(f"cells {seen[c.cell.slug]!r} and {c.cell.id!r} map to the same folder name {c.cell.slug!r}; rename a class")
        seen[c.cell.slug] = c.cell.id
