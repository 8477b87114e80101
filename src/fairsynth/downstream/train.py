"""Train one classifier (one arm, one seed), select it on validation, measure it once on test.

The loop, top to bottom:

1. The arm decides the training images: ``real`` (the real training split), ``synthetic``
   (every synthetic image, no real one) or ``mixed`` (real + synthetic at the per-group shares
   of ``mix``; :func:`fairsynth.downstream.data.mix_training_set`).
2. Optional synthetic pre-training (mixed arm): ``synthetic_pretrain_epochs`` on synthetic
   images only; the main phase then starts from those weights at ``learning_rate · lr_drop``.
3. Each epoch: batches from :class:`~fairsynth.downstream.data.MixedBatchSampler`
   (class-balanced, least real share); cross-entropy, plus the domain-adversarial loss when
   ``domain_adversarial > 0``; AdamW with a cosine schedule per phase.
4. After each epoch the *validation* split is scored (``select_on``, ties broken by the lower
   validation cross-entropy); the best weights are kept and training stops after ``patience``
   epochs without improvement. The test split is never
   looked at during training or selection.
5. The selected weights predict the test split once; :mod:`fairsynth.downstream.fairness`
   measures it, per group, with bootstrap intervals.

Outputs of a run, in ``<output>/<arm>/seed-<k>/`` (written atomically; a finished run is
reused on the next invocation): ``model.safetensors``, ``history.json``, ``predictions.csv``
(test), ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save

from fairsynth.downstream import fairness
from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.data import (
    ImageSet,
    MixedBatchSampler,
    Sample,
    Sets,
    curriculum_prefix,
    mix_training_set,
)
from fairsynth.downstream.model import Classifier, build_classifier
from fairsynth.io import atomic_open, atomic_write_bytes, atomic_write_text, canonical_safetensors

@dataclass
class Phase:
    """One training phase: which synthetic images may join, for how long, how fast."""

    name: str
    real: bool
    epochs: int
    learning_rate: float


#: The arms that train on the real images plus a mixed-in pool (the synthetic set, or for
#: ``oracle`` true world images of its cells), under the same mix, curriculum and head.
MIXING_ARMS = ("mixed", "hybrid", "oracle")


def phases_of(arm: str, config: DownstreamConfig) -> list[Phase]:
    """The phases an arm trains through."""
    if arm == "real":
        return [Phase("real", True, config.epochs, config.learning_rate)]
    if arm == "synthetic":
        return [Phase("synthetic", False, config.epochs, config.learning_rate)]
    phases = []  # mixed, hybrid and oracle
    rate = config.learning_rate
    if config.synthetic_pretrain_epochs:
        phases.append(Phase("synthetic-pretrain", False, config.synthetic_pretrain_epochs, rate))
        rate *= config.lr_drop
    phases.append(Phase(arm, True, config.epochs, rate))
    return phases


@torch.no_grad()
def predict(model: Classifier, dataset: ImageSet, classes: Sequence[str], batch_size: int = 128) -> fairness.Predictions:
    """Softmax predictions of ``model`` on every image of ``dataset``."""
    model.eval()
    probabilities, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item[0] for item in items])  # (B, 3, S, S)
        logits, _ = model(images)  # (B, C)
        probabilities.append(logits.float().softmax(1).numpy())
        labels.extend(item[1] for item in items)
    return fairness.Predictions(
        labels=np.asarray(labels, dtype=np.int64),
        probabilities=np.concatenate(probabilities).astype(np.float64),
        groups=np.asarray([s.group for s in dataset.samples], dtype=object),
        classes=tuple(classes),
    )


def validation_score(predictions: fairness.Predictions, select_on: str, min_positives: int) -> tuple[float, str]:
    """The selection score and its name; balanced accuracy where AUROC is undefined."""
    if select_on == "macro_auroc":
        value = fairness.macro_auroc(predictions, min_positives=min_positives, min_negatives=min_positives)
        if value is not None:
            return float(value), "macro_auroc"
    return float(fairness.balanced_accuracy(predictions)), "balanced_accuracy"


def validation_loss(predictions: fairness.Predictions) -> float:
    """Mean cross-entropy of the validation predictions: breaks ties of the selection score (on a
    small validation split macro AUROC reaches 1.0 within a few epochs, and the first epoch that
    reaches it is rarely the best model)."""
    rows = np.arange(len(predictions.labels))
    return float(-np.log(np.clip(predictions.probabilities[rows, predictions.labels], 1e-12, None)).mean())


def improves(score: float, val_loss: float, best_score: float, best_loss: float) -> bool:
    """Whether an epoch beats the best so far: a higher selection score, or the same score and a
    lower validation loss."""
    return score > best_score or (score == best_score and val_loss < best_loss)


#: Makes synthetic training images for the hybrid arm: (cells as (label, group), images per
#: cell, round index) -> new samples. See :func:`fairsynth.generation.hybrid.recipe_generator`.
CellGenerator = Callable[[list[tuple[str, str]], int, int], list[Sample]]


def cell_losses(predictions: fairness.Predictions, min_images: int) -> dict[tuple[str, str], float]:
    """Mean cross-entropy of each (class, group) cell with at least ``min_images`` images."""
    rows = np.arange(len(predictions.labels))
    nll = -np.log(np.clip(predictions.probabilities[rows, predictions.labels], 1e-12, None))  # (N,)
    cells: dict[tuple[str, str], list[float]] = {}
    for label, group, loss in zip(predictions.labels, predictions.groups, nll):
        if group != fairness.UNKNOWN:
            cells.setdefault((predictions.classes[label], str(group)), []).append(float(loss))
    return {cell: float(np.mean(v)) for cell, v in cells.items() if len(v) >= min_images}


def _batches(dataset: ImageSet, sampler: MixedBatchSampler, active: Sequence[int]):
    for positions in sampler:
        indices = [active[p] for p in positions]
        items = [dataset[i] for i in indices]
        images = torch.stack([item[0] for item in items])  # (B, 3, S, S)
        targets = torch.tensor([item[1] for item in items])  # (B,)
        synthetic = torch.tensor([float(dataset.samples[i].synthetic) for i in indices])  # (B,)
        yield images, targets, synthetic


def train_run(
    sets: Sets, config: DownstreamConfig, arm: str, seed: int, progress: Any = None,
    generate_cells: CellGenerator | None = None,
) -> dict[str, Any]:
    """Train and evaluate one classifier; returns its record (history, metrics, weights, predictions).

    The hybrid arm needs ``generate_cells``: every ``hybrid.every`` epochs it is asked for
    images of the cells with the highest validation loss, which join the training set.
    """
    if arm == "hybrid" and generate_cells is None:
        raise ValueError("the hybrid arm needs a generator of new images (a recipe with a trained model)")
    torch.manual_seed(seed)
    started = time.perf_counter()
    chosen: list[Sample] = []
    account: dict[str, Any] = {}
    if arm in MIXING_ARMS:
        if arm == "oracle" and not sets.oracle:
            raise ValueError("the oracle arm needs true world images of the synthetic set's cells (downstream.oracle)")
        mixed_in = sets.oracle if arm == "oracle" else sets.synthetic
        chosen, account = mix_training_set(sets.train, mixed_in, config.mix.shares(), seed)
    elif arm == "synthetic":
        chosen = list(sets.synthetic)
    real = list(sets.train) if arm != "synthetic" else []
    pool = ImageSet(real + chosen, sets.classes, config.image_size, augment=config.augment)
    val = ImageSet(sets.val, sets.classes, config.image_size)
    test = ImageSet(sets.test, sets.classes, config.image_size)
    adversarial = config.domain_adversarial > 0 and arm in MIXING_ARMS
    model = build_classifier(config.backbone, len(sets.classes), config.pretrained, adversarial=adversarial)

    history: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    best = {"score": -math.inf, "val_loss": math.inf, "state": copy.deepcopy(model.state_dict()), "epoch": -1, "phase": None}
    for phase in phases_of(arm, config):
        optimizer = torch.optim.AdamW(model.parameters(), lr=phase.learning_rate, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(((len(real) if phase.real else 0) + len(chosen)) / config.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, phase.epochs * steps_per_epoch))
        stale = 0
        for epoch in range(phase.epochs):
            curriculum = config.mix.curriculum_epochs if arm in MIXING_ARMS and phase.real else 0
            synthetic_now = curriculum_prefix(chosen, epoch, curriculum)
            n_real = len(real) if phase.real else 0
            offset = {id(s): len(real) + i for i, s in enumerate(chosen)}
            active = list(range(n_real)) + [offset[id(s)] for s in synthetic_now]
            if not active:
                raise ValueError(f"arm {arm!r}, phase {phase.name}: no training images")
            sampler = MixedBatchSampler(
                [pool.samples[i].label for i in active], n_real, config.batch_size,
                class_balanced=config.class_balanced, min_real_share=config.mix.min_real_share if phase.real else 0.0,
                seed=seed,
            )
            sampler.set_epoch(len(history))
            model.train()
            losses = []
            for images, targets, synthetic in _batches(pool, sampler, active):
                logits, domain = model(images, reverse_weight=config.domain_adversarial)  # (B, C), (B,)
                loss = F.cross_entropy(logits, targets)
                if domain is not None:
                    loss = loss + F.binary_cross_entropy_with_logits(domain, synthetic)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
            val_predictions = predict(model, val, sets.classes)
            score, score_name = validation_score(val_predictions, config.select_on, config.min_positives)
            val_loss = validation_loss(val_predictions)
            if arm == "hybrid" and phase.real and (epoch + 1) % config.hybrid.every == 0 and len(rounds) < config.hybrid.rounds:
                losses_by_cell = cell_losses(val_predictions, config.hybrid.min_val_images)
                worst = sorted(losses_by_cell, key=lambda c: (-losses_by_cell[c], c))[: config.hybrid.worst_cells]
                new = generate_cells(worst, config.hybrid.images_per_cell, len(rounds)) if worst else []
                pool.samples.extend(new)
                chosen.extend(new)
                rounds.append({
                    "round": len(rounds), "after_epoch": len(history),
                    "cells": [{"label": c[0], "group": c[1], "val_loss": round(losses_by_cell[c], 4)} for c in worst],
                    "images": len(new),
                })
            history.append({
                "phase": phase.name, "epoch": epoch, "loss": float(np.mean(losses)), "val_score": score,
                "val_metric": score_name, "val_loss": val_loss, "real_images": n_real, "synthetic_images": len(synthetic_now),
            })
            if progress is not None:
                progress(history[-1])
            if improves(score, val_loss, best["score"], best["val_loss"]):
                best = {"score": score, "val_loss": val_loss, "state": copy.deepcopy(model.state_dict()),
                        "epoch": len(history) - 1, "phase": phase.name}
                stale = 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    model.load_state_dict(best["state"])
    predictions = predict(model, test, sets.classes)
    metrics = evaluate_predictions(predictions, config, seed)
    external = {}
    for name, samples in sets.external.items():
        tested = predict(model, ImageSet(samples, sets.classes, config.image_size), sets.classes)
        external[name] = {"predictions": tested, "ids": [s.id for s in samples],
                          "metrics": evaluate_predictions(tested, config, seed)}
    return {
        "arm": arm, "seed": seed, "history": history, "backbone": config.backbone, "classes": list(sets.classes),
        "image_size": config.image_size, "adversarial": adversarial, "selected_epoch": best["epoch"], "selected_phase": best["phase"],
        "val_score": best["score"], "val_loss": best["val_loss"], "metrics": metrics, "mix": account, "hybrid_rounds": rounds,
        "train_images": {"real": len(real), "synthetic": len(chosen)},
        "seconds": round(time.perf_counter() - started, 2),
        "state": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        "predictions": predictions, "test_ids": [s.id for s in sets.test],
        "external": {name: part["metrics"] for name, part in external.items()}, "_external": external,
    }


def evaluate_predictions(predictions: fairness.Predictions, config: DownstreamConfig, seed: int) -> dict[str, Any]:
    """Every number of the comparison, per Fitzpatrick type and per DDI group, with intervals."""
    common = dict(
        high_risk=config.high_risk, resamples=config.bootstrap_resamples, seed=seed,
        min_positives=config.min_positives, min_negatives=config.min_positives,
    )
    metrics = {"per_type": fairness.report(predictions, **common)}
    if config.group_by == "fst":
        metrics["per_ddi_group"] = fairness.report(predictions, group_of=fairness.ddi_group, **common)
    return metrics


def _write_predictions(path: Path, predictions: fairness.Predictions, ids: Sequence[str]) -> None:
    frame = pd.DataFrame(predictions.probabilities, columns=[f"p_{c}" for c in predictions.classes])
    frame.insert(0, "group", predictions.groups)
    frame.insert(0, "label", [predictions.classes[i] for i in predictions.labels])
    frame.insert(0, "id", list(ids))
    with atomic_open(path, "w") as handle:
        frame.to_csv(handle, index=False)


def read_predictions(path: str | Path) -> fairness.Predictions:
    """A run's ``predictions.csv`` (or ``predictions-<test set>.csv``) as :class:`~fairsynth.downstream.fairness.Predictions`."""
    frame = pd.read_csv(path, dtype={"group": str, "label": str, "id": str}, keep_default_na=False)
    columns = [c for c in frame.columns if c.startswith("p_")]
    classes = tuple(c.removeprefix("p_") for c in columns)
    index = {name: i for i, name in enumerate(classes)}
    return fairness.Predictions(
        labels=np.asarray([index[label] for label in frame["label"]], dtype=np.int64),
        probabilities=frame[columns].to_numpy(dtype=np.float64),
        groups=np.asarray(frame["group"].astype(str), dtype=object), classes=classes,
    )


def load_run_model(folder: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """The classifier a :func:`save_run` folder holds, in eval mode, and its ``classifier.json``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    info = json.loads((folder / "classifier.json").read_text())
    model = build_classifier(info["backbone"], len(info["classes"]), "", adversarial=info.get("adversarial", False))
    saved = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k if k.startswith("domain_head.") else f"backbone.{k}": v for k, v in saved.items()})
    return model.eval(), info


def predict_saved_run(folder: Path, record: dict[str, Any], sets: Sets, config: DownstreamConfig) -> dict[str, Any]:
    """Add the external test sets a finished run lacks, by testing its saved model (no retraining).

    Writes each ``predictions-<name>.csv`` and then ``metrics.json`` again, atomically; returns the
    updated record.
    """
    missing = [name for name in sets.external if name not in (record.get("external") or {})]
    if not missing:
        return record
    model, info = load_run_model(folder)
    classes = tuple(info["classes"])
    record = {**record, "external": dict(record.get("external") or {})}
    for name in missing:
        samples = sets.external[name]
        tested = predict(model, ImageSet(samples, classes, int(info["image_size"])), classes)
        _write_predictions(folder / f"predictions-{name}.csv", tested, [s.id for s in samples])
        record["external"][name] = evaluate_predictions(tested, config, int(record["seed"]))
    atomic_write_text(folder / "metrics.json", json.dumps(record, indent=1, default=float) + "\n")
    return record


def save_run(record: dict[str, Any], folder: Path) -> None:
    """Write a run's files atomically; ``metrics.json`` last, so its presence means complete."""
    folder.mkdir(parents=True, exist_ok=True)
    described = {k: record[k] for k in ("backbone", "classes", "image_size", "adversarial")}
    atomic_write_text(folder / "classifier.json", json.dumps(described, indent=1) + "\n")
    # The backbone's tensors under timm's own names, so that the file also serves as
    # `evaluate.weights.classifier` / the filters' `classifier` extractor (arch = backbone).
    state = {k.removeprefix("backbone."): v for k, v in record["state"].items()}
    weights = save(state, metadata={"arm": record["arm"], "seed": str(record["seed"])})
    atomic_write_bytes(folder / "model.safetensors", canonical_safetensors(weights))
    predictions: fairness.Predictions = record["predictions"]
    _write_predictions(folder / "predictions.csv", predictions, record["test_ids"])
    for name, part in record.get("_external", {}).items():
        _write_predictions(folder / f"predictions-{name}.csv", part["predictions"], part["ids"])
    atomic_write_text(folder / "history.json", json.dumps(record["history"], indent=1) + "\n")
    public = {
        k: v for k, v in record.items() if k not in ("state", "predictions", "test_ids", "history", "classes", "_external")
    }
    atomic_write_text(folder / "metrics.json", json.dumps(public, indent=1, default=float) + "\n")
