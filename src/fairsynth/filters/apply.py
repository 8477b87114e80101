"""Measure, judge and select: from candidates' stored values to the delivered set.

    values = measure_images(checks, images, rows, context)     # right after generation
    measure_missing(checks, rows, context, folder)             # values a run did not record yet
    judged = judge(checks, rows, context)                      # verdicts, near-duplicates, accepted
    selection = select(judged, targets)                        # first `target` accepted per cell

Verdicts are recomputed from stored values every time, so changing a threshold never needs a
new measurement, and changing an extractor re-measures only what it measures.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from fairsynth.filters.base import Filter


def measure_images(
    checks: list[Filter], images: list[Image.Image], rows: list[dict[str, Any]], context: Any
) -> list[dict[str, Any]]:
    """Values of every per-image check for freshly generated images (rows need ``sha256``)."""
    out: list[dict[str, Any]] = [{} for _ in rows]
    for check in checks:
        if check.set_level:
            continue
        identity = check.measured_with(context)
        for values, measured in zip(out, check.measure(images, rows, context)):
            values.update(measured)
            if identity:
                values[check.provenance_column] = identity
    return out


def stale(check: Filter, row: dict[str, Any], identity: str) -> bool:
    """True when a row lacks the check's values or they were measured by something else."""
    if any(column not in row for column in check.columns):
        return True
    return bool(identity) and row.get(check.provenance_column) != identity


def measure_missing(
    checks: list[Filter],
    rows: list[dict[str, Any]],
    context: Any,
    load: Callable[[dict[str, Any]], Image.Image],
    batch_size: int = 16,
) -> list[tuple[str, dict[str, Any]]]:
    """Measure per-image checks whose values a row lacks (or measured with another extractor);
    updates the rows in place and returns ``(id, new values)`` for the journal."""
    updates: dict[str, dict[str, Any]] = {}
    for check in checks:
        if check.set_level:
            continue
        identity = check.measured_with(context)
        todo = [row for row in rows if stale(check, row, identity)]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [load(row) for row in chunk]
            for row, measured in zip(chunk, check.measure(images, chunk, context)):
                if identity:
                    measured[check.provenance_column] = identity
                row.update(measured)
                updates.setdefault(row["id"], {}).update(measured)
    return list(updates.items())


def judge(checks: list[Filter], rows: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
    """Verdict columns, set-level values, ``accepted`` and ``rejected_by`` for every row, in
    (cell, index) order. Rows must hold every per-image check's values."""
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_cell[row["cell"]].append(row)
    ordered: list[dict[str, Any]] = []
    for cell_rows in by_cell.values():
        cell_rows.sort(key=lambda r: r["index"])
        for row in cell_rows:
            for check in checks:
                if not check.set_level:
                    row[check.verdict_column] = check.passes(row, row)
        eligible = [all(row[c.verdict_column] is not False for c in checks if not c.set_level) for row in cell_rows]
        for check in checks:
            if not check.set_level:
                continue
            for row, values in zip(cell_rows, check.measure_set(cell_rows, eligible, context)):
                row.update(values)
                row[check.verdict_column] = check.passes(values, row)
        for row in cell_rows:
            failed = [c.name for c in checks if row[c.verdict_column] is False]
            row["accepted"] = not failed
            row["rejected_by"] = ",".join(failed)
        ordered += cell_rows
    return ordered


def select(rows: list[dict[str, Any]], targets: dict[str, int], limits: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Mark the first ``targets[cell]`` accepted rows (by index, below ``limits[cell]`` when given)
    as ``selected``; the others are ``rejected`` (failed a check) or ``surplus``."""
    taken: dict[str, int] = defaultdict(int)
    for row in sorted(rows, key=lambda r: (r["cell"], r["index"])):
        cell = row["cell"]
        within = limits is None or row["index"] < limits.get(cell, 0)
        row["selected"] = bool(row["accepted"] and within and taken[cell] < targets.get(cell, 0))
        taken[cell] += row["selected"]
        row["status"] = "selected" if row["selected"] else ("rejected" if not row["accepted"] else "surplus")
    return rows


def load_row_image(row: dict[str, Any]) -> Image.Image:
    """A candidate's image, from its ``_path``."""
    from fairsynth.data.preprocess import load_rgb

    return load_rgb(Path(row["_path"]))
