"""Read a study's outputs into plain data for the report; nothing here computes a metric.

Each reader returns ``None`` when its stage did not run (its files are absent) and raises
:class:`ReportInputError` naming the file when a file is there but unreadable — a report must
never show a number that is not in the study's own outputs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fairsynth.io import InvalidJSONError, UnsafePathError, read_optional_json, resolve_inside


#: Where a sweep's table may be, first found wins: ``fairsynth sweep`` writes the first.
SWEEP_TABLES = ("sweep/table.json", "sweep.json")


class ReportInputError(ValueError):
    """A study output the report reads is present but unreadable."""


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; None when absent; :class:`ReportInputError` naming it when unreadable."""
    try:
        return read_optional_json(path)
    except InvalidJSONError as err:
        raise ReportInputError(str(err)) from err


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON file that must hold one object (a stage's record); None when absent."""
    value = read_json(path)
    if value is not None and not isinstance(value, dict):
        raise ReportInputError(f"{path} is not a JSON object (found {type(value).__name__})")
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a JSON-lines manifest; None when absent; :class:`ReportInputError` naming the line."""
    if not path.is_file():
        return None
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ReportInputError(f"{path} is not UTF-8 text ({err})") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReportInputError(f"{path}, line {number}: not valid JSON ({err})") from err
        if not isinstance(row, dict):
            raise ReportInputError(f"{path}, line {number}: expected one JSON object per line")
        rows.append(row)
    return rows


@dataclass
class Training:
    """What ``train`` left: its info, loss log, before/after grids and conditioning scores."""

    info: dict[str, Any]
    losses: list[tuple[int, float]] = field(default_factory=list)
    grids: dict[str, Path] = field(default_factory=dict)  # "before" / "after" -> PNG
    validation: list[tuple[int, Path]] = field(default_factory=list)  # (step, grid PNG)
    conditioning: dict[str, Any] | None = None


@dataclass
class Generation:
    """The delivered set, every candidate's checks, and the delivery report."""

    root: Path
    report: dict[str, Any]
    delivered: list[dict[str, Any]]
    candidates: list[dict[str, Any]]


@dataclass
class StudyOutputs:
    """Everything the report shows; ``None``: the stage did not run."""

    workdir: Path
    recipe: dict[str, Any] | None
    counts: pd.DataFrame | None
    real_root: Path | None
    real: list[dict[str, Any]] | None
    training: Training | None
    generation: Generation | None
    evaluation: dict[str, Any] | None
    downstream: dict[str, Any] | None
    downstream_config: dict[str, Any] | None
    downstream_runs: dict[str, dict[int, dict[str, Any]]]  # arm -> seed -> the run's metrics.json
    curve: dict[str, Any] | None  # downstream/curve.json: the mixed arm at each synthetic:real ratio
    ablation: dict[str, Any] | None  # downstream/ablate.json: a group's real images removed, share by share
    sweep: list[dict[str, Any]] | None
    sweep_file: Path | None
    run_state: dict[str, Any] | None


def _losses(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, row in enumerate(csv.DictReader(handle), 2):
            try:
                out.append((int(row["step"]), float(row["loss"])))
            except (KeyError, TypeError, ValueError) as err:
                raise ReportInputError(f"{path}, line {number}: expected step,loss,lr ({err})") from err
    return out


def _training(folder: Path) -> Training | None:
    info = read_object(folder / "model" / "training_info.json")
    if info is None:
        return None
    grids = {name: folder / f"grid-{stem}.png" for name, stem in (("before", "base"), ("after", "fine-tuned"))}
    validation = []
    for path in sorted((folder / "validation").glob("*.png")) if (folder / "validation").is_dir() else []:
        digits = "".join(ch for ch in path.stem if ch.isdigit())
        validation.append((int(digits) if digits else 0, path))
    return Training(
        info=info, losses=_losses(folder / "losses.csv"),
        grids={name: path for name, path in grids.items() if path.is_file()},
        validation=sorted(validation), conditioning=read_object(folder / "conditioning.json"),
    )


def _downstream_runs(folder: Path, compare: dict[str, Any] | None) -> dict[str, dict[int, dict[str, Any]]]:
    """Each compared run's ``<arm>/seed-<seed>/metrics.json`` (bootstrap intervals, training images)."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in (compare or {}).get("arms", []):
        for seed in (compare or {}).get("seeds", []):
            metrics = read_object(folder / str(arm) / f"seed-{seed}" / "metrics.json")
            if metrics is not None:
                runs.setdefault(str(arm), {})[int(seed)] = metrics
    return runs


def _yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ReportInputError(f"{path} is not valid YAML ({err})") from err


def collect(workdir: str | Path) -> StudyOutputs:
    """Read every output of the study in ``workdir`` that exists (folders as a recipe lays them out)."""
    work = Path(workdir)
    if not work.is_dir():
        raise ReportInputError(f"{work} is not a folder: give the study's workdir (e.g. runs/demo)")
    prepared = work / "prepared"
    counts = None
    if (prepared / "counts.csv").is_file():
        try:
            counts = pd.read_csv(prepared / "counts.csv", index_col=0).apply(pd.to_numeric).astype(int)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, TypeError) as err:
            raise ReportInputError(f"{prepared / 'counts.csv'} is not a table of image counts ({err})") from err
    generation = None
    generated = work / "generated"
    report = read_object(generated / "report.json")
    if report is not None:
        generation = Generation(
            root=generated, report=report, delivered=read_jsonl(generated / "metadata.jsonl") or [],
            candidates=read_jsonl(generated / "candidates.jsonl") or [],
        )
    sweep, sweep_file = None, None
    for candidate in SWEEP_TABLES:
        sweep = read_json(work / candidate)
        if sweep is not None:
            sweep_file = work / candidate
            break
    if sweep is not None and not (isinstance(sweep, list) and all(isinstance(row, dict) for row in sweep)):
        raise ReportInputError(f"{sweep_file} is not a list of rows (one JSON object per configuration)")
    downstream = read_object(work / "downstream" / "compare.json")
    run_state = read_object(work / "run-state.json")
    if run_state is not None:
        # The stages in the order they run, whatever order the JSON file keeps them in.
        from fairsynth.study import STAGES

        order = {name: k for k, name in enumerate(STAGES)}
        run_state = dict(sorted(run_state.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
    return StudyOutputs(
        workdir=work,
        recipe=_yaml(prepared / "config.yaml") or _yaml(work / "downstream" / "config.yaml"),
        counts=counts,
        real_root=prepared if (prepared / "metadata.jsonl").is_file() else None,
        real=read_jsonl(prepared / "metadata.jsonl"),
        training=_training(work / "train"),
        generation=generation,
        evaluation=read_object(work / "evaluation" / "evaluation.json"),
        downstream=downstream,
        downstream_config=_yaml(work / "downstream" / "config.yaml"),
        downstream_runs=_downstream_runs(work / "downstream", downstream),
        curve=read_object(work / "downstream" / "curve.json"),
        ablation=read_object(work / "downstream" / "ablate.json"),
        sweep=sweep,
        sweep_file=sweep_file,
        run_state=run_state,
    )


def image_path(root: Path, file_name: str) -> Path | None:
    """A manifest's image path, kept inside its root; None when it escapes or is missing."""
    try:
        path = resolve_inside(root, file_name)
    except UnsafePathError:
        return None
    return path if path.is_file() else None
