"""`fairsynth evaluate`: every metric, overall and per group, with intervals and provenance.

Steps:

1. read the real, synthetic (and training) manifests; image paths are resolved inside each
   manifest's folder (:func:`fairsynth.io.resolve_inside`); missing files are one error;
2. build the groups: ``overall``, every value of every ``by`` field (``class`` is the label),
   and with ``cross`` every combination; group names are compared across the two manifests and
   a synthetic group without real images is an error (usually a naming mismatch);
3. features once per image and extractor, from the cache where possible (:mod:`.features`);
4. per metric: :meth:`~fairsynth.metrics.base.Metric.prepare` on all rows, then per group the
   value — or ``undefined (n = …)`` below the minimum size — and a bootstrap interval;
5. write ``evaluation.json`` (everything, with the provenance of every number),
   ``evaluation.csv`` (one row per value), ``memorisation_<extractor>.csv`` (every synthetic
   image's nearest training image) and ``config.yaml``, each atomically.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from fairsynth import __version__
from fairsynth.config import ConfigError, save_resolved, to_dict
from fairsynth.data.records import Record, read_manifest
from fairsynth.io import atomic_write_text, resolve_inside, sha256_file
from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.config import EvaluateConfig
from fairsynth.metrics.extractors import IMAGE_SIZE_POLICY, WeightsNotFound, create_extractor
from fairsynth.metrics.extractors.base import Extractor
from fairsynth.metrics.features import FeatureCache, extract_features
from fairsynth.metrics.functional.bootstrap import bootstrap_intervals

#: Group-by names that mean the record's label.
LABEL_FIELDS = ("class", "label")
MISSING = "(missing)"
OVERALL = "overall"


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated as asked (the message says why and what to do)."""


@dataclass
class ImageSet:
    """The images of one manifest (rows kept in order)."""

    role: str
    manifest: Path
    records: list[Record]
    paths: list[Path]


@dataclass
class Group:
    """Rows of the real and synthetic sets that belong to one group."""

    by: str
    value: str
    real: Tensor  # (n_real,) row indices into the real set
    synthetic: Tensor  # (n_synthetic,) row indices into the synthetic set


@dataclass
class EvaluationResult:
    output: Path
    results: list[dict[str, Any]]
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# 1. inputs
# --------------------------------------------------------------------------------------


def load_image_set(manifest: str | Path, role: str, split: str | None = None) -> ImageSet:
    """Rows of ``manifest`` (of ``split`` only when given) with their image paths resolved."""
    path = Path(manifest)
    if not str(manifest):
        raise EvaluationError(f"no {role} manifest given (evaluate.{role} / --{role})")
    try:
        records = read_manifest(path)
    except FileNotFoundError:
        raise EvaluationError(f"{role} manifest {path} does not exist") from None
    if split is not None:
        records = [r for r in records if r.split == split]
        if not records:
            raise EvaluationError(f"{role} manifest {path} has no rows of split {split!r}")
    if not records:
        raise EvaluationError(f"{role} manifest {path} has no rows")
    root = path.parent
    paths, missing = [], []
    for record in records:
        resolved = resolve_inside(root, record.image)
        if not resolved.is_file():
            missing.append(record.image)
        paths.append(resolved)
    if missing:
        raise EvaluationError(
            f"{len(missing)} image(s) of the {role} manifest {path} do not exist under {root}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return ImageSet(role, path, records, paths)


def training_set(cfg: EvaluateConfig, real_manifest: Path) -> tuple[ImageSet, str]:
    """The images the generator was trained on, and how they were chosen."""
    if cfg.train:
        return load_image_set(cfg.train, "train"), f"manifest {cfg.train}"
    records = read_manifest(real_manifest)
    if any(r.split == cfg.train_split for r in records):
        return load_image_set(real_manifest, "train", cfg.train_split), f"rows of split {cfg.train_split!r} of {real_manifest}"
    return load_image_set(real_manifest, "train"), f"every row of {real_manifest} (it has no {cfg.train_split!r} split)"


# --------------------------------------------------------------------------------------
# 2. groups
# --------------------------------------------------------------------------------------


def group_value(record: Record, by: str) -> str:
    """The record's value of field ``by`` as a group name (``class``: the label)."""
    value: Any = record.label if by in LABEL_FIELDS else record.attributes.get(by)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 from a CSV column with gaps is the same group as 5
    return str(value)


def _check_field_present(images: ImageSet, by: str) -> None:
    if all(group_value(r, by) == MISSING for r in images.records):
        fields = sorted({k for r in images.records for k in r.attributes} | {"class"})
        raise EvaluationError(
            f"--by {by}: the {images.role} manifest {images.manifest} has no {by!r} values; its fields: {', '.join(fields)}"
        )


def build_groups(by: list[str], cross: bool, real: ImageSet, synthetic: ImageSet, allow_unmatched: bool) -> tuple[list[Group], list[str]]:
    """``overall`` plus one group per value of each field (and of their combination).

    Returns the groups and notes. A synthetic value that no real image has is an error unless
    ``allow_unmatched`` (then the group is reported as undefined).
    """
    for images in (real, synthetic):
        for name in by:
            _check_field_present(images, name)
    keys: list[tuple[str, list[str]]] = [(name, [name]) for name in by]
    if cross and len(by) > 1:
        keys.append((" x ".join(by), list(by)))
    groups = [Group(OVERALL, "all", torch.arange(len(real.records)), torch.arange(len(synthetic.records)))]
    notes: list[str] = []
    for label, fields in keys:
        def name_of(record: Record) -> str:
            return " | ".join(group_value(record, f) for f in fields)

        real_names = [name_of(r) for r in real.records]
        synthetic_names = [name_of(r) for r in synthetic.records]
        unmatched = sorted(set(synthetic_names) - set(real_names))
        if unmatched and len(fields) == 1:
            hints = []
            for value in unmatched[:5]:
                close = difflib.get_close_matches(value, sorted(set(real_names)), n=1, cutoff=0.6)
                hints.append(f"{value!r}" + (f" (real has {close[0]!r})" if close else ""))
            message = (
                f"--by {label}: synthetic group(s) {', '.join(hints)} have no real images; real groups: "
                f"{', '.join(sorted(set(real_names)))}"
            )
            if not allow_unmatched:
                raise EvaluationError(
                    message + ". Names must match exactly; fix the manifests, or set evaluate.allow_unmatched_groups=true "
                    "to report these groups as undefined"
                )
            notes.append(message + " (reported as undefined)")
        only_real = sorted(set(real_names) - set(synthetic_names))
        if only_real and len(fields) == 1:
            notes.append(f"--by {label}: real group(s) without synthetic images: {', '.join(only_real)}")
        for value in sorted(set(real_names) | set(synthetic_names), key=_natural):
            groups.append(
                Group(
                    label, value,
                    torch.tensor([i for i, n in enumerate(real_names) if n == value], dtype=torch.long),
                    torch.tensor([i for i, n in enumerate(synthetic_names) if n == value], dtype=torch.long),
                )
            )
    return groups, notes


def _natural(value: str) -> tuple:
    """Sort "2" before "10" and names alphabetically."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in value.replace(" | ", "|").split("|"))


# --------------------------------------------------------------------------------------
# 4. values, intervals
# --------------------------------------------------------------------------------------


def _seed_for(seed: int, *parts: str) -> int:
    digest = hashlib.sha256("|".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _value_rows(
    metric: Metric,
    values: dict[str, float] | None,
    undefined: str | None,
    intervals: dict,
    ci_note: str | None,
    base: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for value_name, better in metric.higher_is_better.items():
        value = None if values is None else values.get(value_name)
        if values is not None and value is None:
            continue  # a value this metric does not give here
        row = dict(base, value_name=value_name, higher_is_better=better)
        if value is not None and not math.isfinite(value):
            row.update(value=None, undefined=f"undefined (the computation gave {value})")
        else:
            row.update(value=value, undefined=None if value is not None else undefined)
        interval = intervals.get(value_name)
        if interval is not None and row["value"] is not None:
            row.update(ci_low=interval.low, ci_high=interval.high, se=interval.se, ci_level=interval.level,
                       ci_method=interval.method, resamples=interval.resamples)
        elif row["value"] is not None and better is not None:
            row.update(ci_note=ci_note or "no interval")
        rows.append(row)
    return rows


def evaluate_metric(
    metric: Metric,
    cfg: EvaluateConfig,
    groups: list[Group],
    real_rows: Tensor | None,
    synthetic_rows: Tensor,
    on: str,
    base: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """Rows for one metric on every group; ``on`` says which sets (``real vs synthetic``, ``synthetic``...)."""
    pair = metric.kind == "pair" and metric.needs_real_rows
    minimum = metric.min_images(cfg.min_group_size)
    rows: list[dict[str, Any]] = []
    for group in groups:
        subset_real = real_rows[group.real] if pair else None
        if metric.kind == "set" and on == "real":
            subset = real_rows[group.real]  # a set metric on the real images of the group
            sizes = {"n_real": len(group.real), "n_synthetic": None}
        else:
            subset = synthetic_rows[group.synthetic]
            sizes = {"n_real": len(group.real) if pair else None, "n_synthetic": len(group.synthetic)}
        where = dict(base, group_by=group.by, group=group.value, on=on, **sizes)
        if min(n for n in sizes.values() if n is not None) < minimum:
            parts = [f"{k[2:]} {v}" for k, v in sizes.items() if v is not None]
            reason = f"undefined (n = {', '.join(parts)}; fewer than {minimum} images)"
            rows += _value_rows(metric, None, reason, {}, None, where)
            continue
        try:
            values = metric.statistic(subset_real, subset)
        except (ValueError, RuntimeError, torch.linalg.LinAlgError) as err:
            rows += _value_rows(metric, None, f"undefined ({err})", {}, None, where)
            continue
        intervals, note = {}, None
        set_sizes = [len(subset)] if subset_real is None else [len(subset_real), len(subset)]
        if cfg.bootstrap > 0 and max(set_sizes) <= cfg.bootstrap_max_n:
            state = metric.replicate_state(subset_real, subset)

            def replicate(indices: list[Tensor]) -> dict[str, float]:
                try:
                    if subset_real is None:
                        return metric.statistic_from_resample(state, None, subset, None, indices[0])
                    return metric.statistic_from_resample(state, subset_real, subset, indices[0], indices[1])
                except (ValueError, RuntimeError, torch.linalg.LinAlgError):
                    return {}

            estimate = {k: v for k, v in values.items() if metric.higher_is_better.get(k) is not None}
            intervals = bootstrap_intervals(
                estimate, replicate, set_sizes, resamples=cfg.bootstrap, level=cfg.confidence,
                method=cfg.ci_method, ranges=metric.ranges,
                generator=torch.Generator().manual_seed(_seed_for(seed, metric.name, on, group.by, group.value)),
            )
        elif cfg.bootstrap > 0:
            note = f"no interval: a set has more than evaluate.bootstrap_max_n = {cfg.bootstrap_max_n} images"
        else:
            note = "no interval: evaluate.bootstrap = 0"
        rows += _value_rows(metric, values, None, intervals, note, where)
    return rows


# --------------------------------------------------------------------------------------
# the whole evaluation
# --------------------------------------------------------------------------------------


def _size_summary(sizes: list[tuple[int, int]]) -> dict[str, int]:
    return dict(Counter(f"{w}x{h}" for w, h in sizes).most_common())


def evaluate(cfg: EvaluateConfig, progress: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run the evaluation described by ``cfg`` and write its outputs to ``cfg.output``."""
    say = progress or (lambda message: None)
    seed = cfg.seed or 0
    specs = cfg.metric_specs()
    shells = {spec: METRICS.get(spec[0]).from_config(cfg) for spec in specs}

    # 1. inputs
    real = load_image_set(cfg.real, "real", cfg.real_split)
    synthetic = load_image_set(cfg.synthetic, "synthetic")
    train, train_source = (None, None)
    if any(shell.uses_training_images for shell in shells.values()):
        train, train_source = training_set(cfg, real.manifest)

    # 2. groups
    groups, notes = build_groups(list(cfg.by), cfg.cross, real, synthetic, cfg.allow_unmatched_groups)

    # 3. features
    extractors: dict[str, Extractor] = {}
    for _, name in specs:
        if name not in extractors:
            try:
                extractors[name] = create_extractor(
                    name, weights=cfg.weights.get(name), device=cfg.device, download=cfg.download,
                    **cfg.extractor_options.get(name, {}),
                )
            except TypeError as err:
                raise ConfigError(str(err)) from None
    missing_weights = []
    for extractor in extractors.values():
        try:
            extractor.weights_identity()  # finds (or downloads) the weights before any work is done
        except WeightsNotFound as err:
            missing_weights.append(str(err))
    if len(missing_weights) == 1:
        raise WeightsNotFound(missing_weights[0])
    if missing_weights:
        raise WeightsNotFound(
            f"{len(missing_weights)} extractors need weights that are not on this machine:\n- " + "\n- ".join(missing_weights)
        )
    all_paths = real.paths + synthetic.paths + (train.paths if train else [])
    tables, original_sizes = extract_features(
        all_paths, list(extractors.values()), FeatureCache(cfg.cache_dir or None), batch_size=cfg.batch_size, progress=say,
    )
    n_real, n_synthetic = len(real.paths), len(synthetic.paths)

    def rows_of(name: str, which: str) -> Tensor:
        features = tables[name].features
        if which == "real":
            return features[:n_real]
        if which == "synthetic":
            return features[n_real : n_real + n_synthetic]
        return features[n_real + n_synthetic :]

    warnings: list[str] = []
    for extractor in extractors.values():
        provenance = tables[extractor.name].provenance
        if provenance.get("warning"):
            warnings.append(f"{extractor.name}: {provenance['warning']}")

    sizes_by_set = {
        "real": _size_summary([original_sizes[p] for p in real.paths]),
        "synthetic": _size_summary([original_sizes[p] for p in synthetic.paths]),
    }
    all_sizes = set(sizes_by_set["real"]) | set(sizes_by_set["synthetic"])
    inputs = {e.name: f"{e.input_size[0]}x{e.input_size[1]}" for e in extractors.values()}
    if len(all_sizes) > 1:
        notes.append(
            f"images come in {len(all_sizes)} sizes (real: {sizes_by_set['real']}; synthetic: {sizes_by_set['synthetic']}); "
            f"every image is resized to each extractor's input size ({', '.join(f'{k} {v}' for k, v in inputs.items())}) "
            f"by one policy: {IMAGE_SIZE_POLICY}"
        )
    else:
        notes.append(
            f"all images are {next(iter(all_sizes))}; each is resized to its extractor's input size "
            f"({', '.join(f'{k} {v}' for k, v in inputs.items())}) by one policy: {IMAGE_SIZE_POLICY}"
        )
    non_square = sum(1 for p in real.paths + synthetic.paths if original_sizes[p][0] != original_sizes[p][1])
    if non_square:
        notes.append(f"{non_square} non-square image(s) change aspect ratio under the resize policy (no crop)")

    # 4. metrics
    results: list[dict[str, Any]] = []
    metric_info: dict[str, Any] = {}
    memorisation_tables: dict[str, list[dict[str, Any]]] = {}
    worst_cases: dict[str, list[dict[str, Any]]] = {}
    for (metric_name, extractor_name), metric in shells.items():
        extractor = extractors[extractor_name]
        key = f"{metric_name}@{extractor_name}"
        provenance = tables[extractor_name].provenance
        say(f"computing {key}")
        base = {
            "metric": metric_name,
            "display": metric.display_name(extractor_name),
            "extractor": extractor_name,
            "weights_sha256": provenance["weights_sha256"],
            "image_size_policy": provenance["image_size_policy_id"],
            "implementation": f"{type(metric).__module__}.{type(metric).__name__} on {provenance['implementation']}",
            "test_only": extractor.test_only,
            "warning": provenance.get("warning"),
        }
        synthetic_rows = rows_of(extractor_name, "synthetic")
        if metric.kind == "pair":
            reference = rows_of(extractor_name, "train" if metric.uses_training_images else "real")
            real_rows, prepared = metric.prepare(reference, synthetic_rows)
            on = "synthetic vs training" if metric.uses_training_images else "real vs synthetic"
            if not metric.needs_real_rows:  # a fixed reference: groups cut synthetic rows only
                real_rows = None
            results += evaluate_metric(metric, cfg, groups, real_rows, prepared, on, base, seed)
        else:
            for which in metric.default_sets:
                features = rows_of(extractor_name, which)
                records = real.records if which == "real" else synthetic.records
                prompts = None
                if metric.needs_prompts:
                    missing = sum(1 for r in records if not r.caption)
                    if missing:
                        reason = f"undefined ({missing} of {len(records)} {which} images have no caption to use as prompt)"
                        for group in groups:
                            where = dict(base, group_by=group.by, group=group.value, on=which,
                                         n_real=len(group.real) if which == "real" else None,
                                         n_synthetic=len(group.synthetic) if which == "synthetic" else None)
                            results += _value_rows(metric, None, reason, {}, None, where)
                        continue
                    if not hasattr(extractor, "encode_text"):
                        raise ConfigError(f"{key}: the {extractor_name} extractor cannot embed prompts; use clip or clip-b32")
                    prompts = extractor.encode_text([r.caption for r in records])
                _, prepared = metric.prepare(None, features, prompts)
                if which == "real":
                    results += evaluate_metric(metric, cfg, groups, prepared, prepared, "real", base, seed)
                else:
                    results += evaluate_metric(metric, cfg, groups, None, prepared, "synthetic", base, seed)
        metric_info[key] = {
            "metric": metric_name,
            "display": metric.display_name(extractor_name),
            "implementation": f"{type(metric).__module__}.{type(metric).__name__}",
            "formula": metric.formula,
            "higher_is_better": metric.higher_is_better,
            "extractor": extractor_name,
            **metric.details(),
        }
        if metric_name == "memorisation" and train is not None:
            table, worst = _memorisation_table(metric, synthetic, train, cfg.memorisation_worst)
            memorisation_tables[extractor_name] = table
            worst_cases[key] = worst

    # 5. outputs
    output = Path(cfg.output or "evaluation")
    report = {
        "fairsynth_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "warnings": warnings,
        "notes": notes,
        "inputs": {
            "real": _set_record(real, cfg.real_split),
            "synthetic": _set_record(synthetic, None),
            **({"train": {**_set_record(train, None), "chosen_as": train_source}} if train else {}),
        },
        "image_sizes": sizes_by_set,
        "extractors": {
            name: {**tables[name].provenance, "features_from_cache": tables[name].from_cache,
                   "features_extracted": tables[name].extracted}
            for name in extractors
        },
        "metrics": metric_info,
        "groups": [
            {"by": g.by, "group": g.value, "n_real": len(g.real), "n_synthetic": len(g.synthetic)} for g in groups
        ],
        "min_group_size": cfg.min_group_size,
        "bootstrap": {"resamples": cfg.bootstrap, "level": cfg.confidence, "method": cfg.ci_method,
                      "max_n": cfg.bootstrap_max_n, "seed": seed,
                      "scheme": "images resampled with replacement, each set independently"},
        "results": results,
        "memorisation_worst": worst_cases,
        "config": to_dict(cfg),
    }
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "evaluation.json", json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False))
    atomic_write_text(output / "evaluation.csv", _results_csv(results))
    for extractor_name, table in memorisation_tables.items():
        atomic_write_text(output / f"memorisation_{extractor_name}.csv", _csv(table))
    save_resolved(cfg, output)
    return EvaluationResult(output=output, results=results, report=report, warnings=warnings, notes=notes)


def _set_record(images: ImageSet, split: str | None) -> dict[str, Any]:
    return {
        "manifest": str(images.manifest),
        "manifest_sha256": sha256_file(images.manifest),
        "split": split,
        "n_images": len(images.paths),
    }


def _memorisation_table(metric: Metric, synthetic: ImageSet, train: ImageSet, worst: int) -> tuple[list[dict], list[dict]]:
    distances, indices = metric.nn_distances, metric.nn_indices  # type: ignore[attr-defined]
    threshold = metric.threshold  # type: ignore[attr-defined]
    rows = []
    for i in torch.argsort(distances).tolist():
        j = int(indices[i])
        rows.append({
            "synthetic_image": synthetic.records[i].image,
            "synthetic_id": synthetic.records[i].id,
            "nearest_training_image": train.records[j].image,
            "nearest_training_id": train.records[j].id,
            "distance": float(distances[i]),
            "memorised": bool(distances[i] < threshold),
        })
    return rows, rows[:worst]


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them, and a reader must not
    mistake one for a number."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


RESULT_COLUMNS = [
    "group_by", "group", "display", "value_name", "on", "value", "ci_low", "ci_high", "undefined", "n_real",
    "n_synthetic", "higher_is_better", "metric", "extractor", "weights_sha256", "image_size_policy", "test_only",
    "se", "ci_level", "ci_method", "resamples", "ci_note", "warning", "implementation",
]


def _results_csv(results: list[dict[str, Any]]) -> str:
    return _csv([{k: r.get(k) for k in RESULT_COLUMNS} for r in results], RESULT_COLUMNS)


def _csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    buffer = io.StringIO()
    columns = columns or (list(rows[0]) if rows else [])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


__all__ = ["EvaluationError", "EvaluationResult", "build_groups", "evaluate", "load_image_set"]
