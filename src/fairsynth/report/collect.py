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


class ReportInputError(ValueError):
    """A study output the report reads is present but unreadable."""


def read_json(path: Path) -> Any:
    try:
        return read_optional_json(path)
    except InvalidJSONError as err:
        raise ReportInputError(str(err)) from err


def read_jsonl(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ReportInputError(f"{path}, line {number}: not valid JSON ({err})") from err
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
    sweep: list[dict[str, Any]] | None
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
    info = read_json(folder / "model" / "training_info.json")
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
        validation=sorted(validation), conditioning=read_json(folder / "conditioning.json"),
    )


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
            counts = pd.read_csv(prepared / "counts.csv", index_col=0)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise ReportInputError(f"{prepared / 'counts.csv'} is not a counts table ({err})") from err
    generation = None
    generated = work / "generated"
    report = read_json(generated / "report.json")
    if report is not None:
        generation = Generation(
            root=generated, report=report, delivered=read_jsonl(generated / "metadata.jsonl") or [],
            candidates=read_jsonl(generated / "candidates.jsonl") or [],
        )
    sweep = read_json(work / "sweep" / "table.json")
    if sweep is not None and not (isinstance(sweep, list) and all(isinstance(row, dict) for row in sweep)):
        raise ReportInputError(f"{work / 'sweep' / 'table.json'} is not a list of rows")
    return StudyOutputs(
        workdir=work,
        recipe=_yaml(prepared / "config.yaml") or _yaml(work / "downstream" / "config.yaml"),
        counts=counts,
        real_root=prepared if (prepared / "metadata.jsonl").is_file() else None,
        real=read_jsonl(prepared / "metadata.jsonl"),
        training=_training(work / "train"),
        generation=generation,
        evaluation=read_json(work / "evaluation" / "evaluation.json"),
        downstream=read_json(work / "downstream" / "compare.json"),
        downstream_config=_yaml(work / "downstream" / "config.yaml"),
        sweep=sweep,
        run_state=read_json(work / "run-state.json"),
    )


def image_path(root: Path, file_name: str) -> Path | None:
    """A manifest's image path, kept inside its root; None when it escapes or is missing."""
    try:
        path = resolve_inside(root, file_name)
    except UnsafePathError:
        return None
    return path if path.is_file() else None
