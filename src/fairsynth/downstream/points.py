"""One more arm run: a point of a curve or an ablation, trained by the comparison's own code, resumable.

A point is an arm of :func:`fairsynth.downstream.train.train_run` on a changed training set (more
synthetic images, fewer real images of a group) under the study's settings. Each (point, seed)
run lives in ``<folder>/seed-<k>/`` with the files :func:`~fairsynth.downstream.train.save_run`
writes, plus ``point.json``: what the point is and the **key** of everything that decides its run
(arm, seed, settings, the ids of every training, validation and test image). A run whose
``metrics.json`` is there under the same key is reused ("a finished point is skipped"); one
under another key (other settings, other images) is trained again; a finished run that lacks an
external test set added since is tested by its saved model, not retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from fairsynth.downstream import fairness
from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.data import Sample, Sets
from fairsynth.downstream.train import predict_saved_run, read_predictions, save_run, train_run
from fairsynth.io import atomic_write_text

#: Settings that do not change what a run learns or predicts (tested sets are added without retraining).
_NOT_IN_KEY = ("output", "arms", "seeds", "test_sets", "oracle", "real", "synthetic", "curve", "ablate", "hybrid")


@dataclass
class Point:
    """One point: an arm trained on ``sets[seed]`` under ``config``, its runs in ``folder``/seed-<k>.

    The training images may differ by seed (the seed draws which synthetic images join, which real
    images are removed), so each seed has its own :class:`~fairsynth.downstream.data.Sets`.
    """

    name: str
    folder: Path
    arm: str  # real, mixed or oracle (train_run's arms)
    sets: dict[int, Sets]
    config: DownstreamConfig
    info: dict[str, Any] = field(default_factory=dict)  # what the point is, for point.json and the reports


def _ids(samples: list[Sample]) -> list[str]:
    return [f"{s.id}|{s.path.name}|{s.label}|{s.group}" for s in samples]


def point_key(point: Point, seed: int) -> str:
    """SHA-256 of everything that decides the run of ``point`` at ``seed``."""
    settings = {k: v for k, v in dataclasses.asdict(point.config).items() if k not in _NOT_IN_KEY}
    sets = point.sets[seed]
    content = {
        "arm": point.arm, "seed": seed, "settings": settings, "classes": list(sets.classes),
        "train": _ids(sets.train), "mixed_in": _ids(mixed_in(point, seed)), "val": _ids(sets.val), "test": _ids(sets.test),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


def mixed_in(point: Point, seed: int) -> list[Sample]:
    """The images mixed into the real ones at ``seed`` (none for the real arm)."""
    sets = point.sets[seed]
    return list(sets.oracle) if point.arm == "oracle" else list(sets.synthetic) if point.arm != "real" else []


def run_point(point: Point, seed: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Reuse or train the run of ``point`` at ``seed``; returns its ``metrics.json`` record."""
    sets = point.sets[seed]
    folder = point.folder / f"seed-{seed}"
    key = point_key(point, seed)
    done, described = folder / "metrics.json", folder / "point.json"
    if done.is_file() and described.is_file():
        try:
            recorded = json.loads(described.read_text(encoding="utf-8")).get("key")
        except ValueError:
            recorded = None
        if recorded == key:
            record = json.loads(done.read_text(encoding="utf-8"))
            missing = sorted(set(sets.external) - set(record.get("external") or {}))
            if missing:
                log(f"{point.name} seed {seed}: testing the saved model of {folder} on {', '.join(missing)}")
                record = predict_saved_run(folder, record, sets, point.config)
            log(f"{point.name} seed {seed}: reusing {folder}")
            return record
        log(f"{point.name} seed {seed}: {folder} holds a run of other settings or images; training again")
        done.unlink()  # the run below rewrites every file; metrics.json last marks it complete
    extra = mixed_in(point, seed)
    log(f"{point.name} seed {seed}: training ({point.arm}: {len(sets.train)} real"
        + (f" + {len(extra)} {'oracle' if point.arm == 'oracle' else 'synthetic'}" if point.arm != "real" else "")
        + " training images)")
    record = train_run(sets, point.config, point.arm, seed)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(described, json.dumps({"key": key, "point": point.name, "arm": point.arm, "seed": seed,
                                             **point.info}, indent=1, default=str) + "\n")
    save_run(record, folder)
    record = json.loads(done.read_text(encoding="utf-8"))
    log(f"{point.name} seed {seed}: {record['seconds']:.0f} s, selected epoch {record['selected_epoch']}")
    return record


def point_predictions(points: Mapping[Any, Point], seeds: list[int], test_set: str | None) -> dict[tuple[Any, int], fairness.Predictions]:
    """Every finished run's predictions on one test set (None: the test split), keyed (point key, seed)."""
    file = "predictions.csv" if test_set is None else f"predictions-{test_set}.csv"
    return {(name, seed): read_predictions(point.folder / f"seed-{seed}" / file) for name, point in points.items() for seed in seeds}


def with_training(sets: Sets, *, train: list[Sample] | None = None, synthetic: list[Sample] | None = None,
                  oracle: list[Sample] | None = None) -> Sets:
    """``sets`` with some of its training parts replaced (validation and test sets unchanged)."""
    changes: dict[str, Any] = {}
    if train is not None:
        changes["train"] = list(train)
    if synthetic is not None:
        changes["synthetic"] = list(synthetic)
    if oracle is not None:
        changes["oracle"] = list(oracle)
    return dataclasses.replace(sets, **changes)


def run_config(config: DownstreamConfig, epochs: int | None) -> DownstreamConfig:
    """The settings of a point's runs: every mixed-in image used as given (the point chose them), and
    ``epochs`` where a protocol sets its own."""
    changed = dataclasses.replace(config, mix=dataclasses.replace(config.mix, synthetic_share="all"))
    if epochs is not None:
        changed = dataclasses.replace(changed, epochs=epochs)
    return changed


def test_set_label(name: str | None) -> str:
    return "the test split" if name is None else name


def chosen_test_set(config: DownstreamConfig, wanted: str, where: str) -> str | None:
    """The test set a protocol's plot and headline use: None (the test split) or an external name."""
    if wanted == "test":
        return None
    if wanted:
        if wanted not in config.test_sets:
            raise ValueError(f"{where}.test_set: {wanted!r} is not among downstream.test_sets "
                             f"({', '.join(config.test_sets) or 'none'}); use `test` for the in-distribution split")
        return wanted
    return next(iter(config.test_sets), None)
