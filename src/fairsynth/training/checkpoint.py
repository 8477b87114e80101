"""Checkpoints: atomic folders of safetensors and JSON, never pickle.

``<output>/checkpoints/step-000500/``:

- ``trainable.safetensors`` — :meth:`Method.trainable_state`, exactly what the method trains;
- ``optimizer.safetensors`` + ``optimizer.json`` — the optimiser's state: its tensors, and
  the structure around them (param groups, step counts) as JSON (:func:`flatten_state`);
- ``scheduler.json`` — the learning-rate scheduler's state; ``scaler.json`` for fp16;
- ``ema.safetensors`` + in ``state.json`` — the EMA averages by parameter name;
- ``extra.safetensors`` — loop state such as the class-diversity pool;
- ``rng.safetensors`` + ``rng.json`` — torch / CUDA / numpy / Python RNG states;
- ``state.json`` — step, phase, last loss, training seconds so far, the resolved config.

A folder is built as ``.step-000500.partial`` and renamed into place when complete
(:func:`fairsynth.io.staged_dir`), so every ``step-*`` folder is whole; a kill at any moment
leaves the previous ones untouched.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fairsynth.io import atomic_write_bytes, atomic_write_text, crash_point, staged_dir

_STEP_DIR = re.compile(r"^step-(\d+)$")


# --------------------------------------------------------------------------------------
# Nested state <-> (tensors, JSON)
# --------------------------------------------------------------------------------------


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "t") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, numbers, tensors) into JSON and tensors.

    Tensors are replaced by ``{"__tensor__": key}``; dicts become ``{"__dict__": [[k, v], ...]}``
    so that integer keys (optimiser state is keyed by parameter index) survive JSON, and tuples
    ``{"__tuple__": [...]}``. :func:`unflatten_state` inverts it exactly.
    """
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}, tensors
    if isinstance(obj, dict):
        items = []
        for i, (k, v) in enumerate(obj.items()):
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"state key {k!r} is neither str nor int")
            items.append([k, flatten_state(v, tensors, f"{prefix}.{i}")[0]])
        return {"__dict__": items}, tensors
    if isinstance(obj, (list, tuple)):
        values = [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)]
        return ({"__tuple__": values} if isinstance(obj, tuple) else values), tensors
    if isinstance(obj, np.ndarray):
        return flatten_state(torch.from_numpy(obj.copy()), tensors, prefix)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} without pickle")


def unflatten_state(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(structure, dict):
        if "__tensor__" in structure:
            return tensors[structure["__tensor__"]]
        if "__dict__" in structure:
            return {k: unflatten_state(v, tensors) for k, v in structure["__dict__"]}
        if "__tuple__" in structure:
            return tuple(unflatten_state(v, tensors) for v in structure["__tuple__"])
        raise ValueError(f"unexpected checkpoint structure {sorted(structure)}")
    if isinstance(structure, list):
        return [unflatten_state(v, tensors) for v in structure]
    return structure


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, allow_nan=True) + "\n")


def save_nested(folder: Path, name: str, state: Any) -> None:
    """``<name>.json`` (+ ``<name>.safetensors`` when there are tensors)."""
    structure, tensors = flatten_state(state)
    if tensors:
        _write_tensors(folder / f"{name}.safetensors", tensors)
    _write_json(folder / f"{name}.json", structure)


def load_nested(folder: Path, name: str) -> Any:
    structure = _read(folder / f"{name}.json", lambda file: json.loads(file.read_text(encoding="utf-8")))
    tensor_file = folder / f"{name}.safetensors"
    tensors = _read(tensor_file, load_file) if tensor_file.exists() else {}
    return unflatten_state(structure, tensors)


# --------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG state: torch (CPU and CUDA), numpy, Python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys.numpy() if torch.is_tensor(keys) else keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --------------------------------------------------------------------------------------
# Checkpoint folders
# --------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, loaded."""

    path: Path
    step: int
    phase: int
    state: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None = None
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, Any] | None = None


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    phase: int,
    state: dict[str, Any],
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    scaler: dict[str, Any] | None = None,
    ema: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    keep: int | None = None,
) -> Path:
    """Write ``<root>/step-NNNNNN`` atomically, then delete all but the newest ``keep``."""
    target = step_dir(root, step)
    with staged_dir(target) as folder:
        _write_tensors(folder / "trainable.safetensors", trainable)
        save_nested(folder, "optimizer", optimizer)
        save_nested(folder, "scheduler", scheduler)
        if scaler is not None:
            save_nested(folder, "scaler", scaler)
        if ema:
            _write_tensors(folder / "ema.safetensors", ema)
        if extra:
            _write_tensors(folder / "extra.safetensors", extra)
        save_nested(folder, "rng", rng_state())
        _write_json(folder / "state.json", {**state, "step": step, "phase": phase})
    prune_checkpoints(root, keep)
    return target


def prune_checkpoints(root: str | Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoint folders (None: keep every one)."""
    if keep is None:
        return
    for old in list_checkpoints(root)[:-keep]:
        crash_point("prune")
        shutil.rmtree(old, ignore_errors=True)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read; the message names the file and why."""


def _read(path: Path, reader: Any) -> Any:
    """``reader(path)``, any failure to read it turned into a :class:`CheckpointError` naming it."""
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip("'\"")
        raise CheckpointError(f"{path} cannot be read ({reason}): the checkpoint is damaged or was cut short") from err


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Every file of a checkpoint folder; :class:`CheckpointError` naming the first that is unreadable."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no state.json)")
    read_json = lambda file: json.loads(file.read_text(encoding="utf-8"))  # noqa: E731
    state = _read(path / "state.json", read_json)
    optional = lambda name: _read(path / name, load_file) if (path / name).exists() else {}  # noqa: E731
    nested = lambda name: load_nested(path, name)  # noqa: E731
    try:
        step, phase = int(state["step"]), int(state["phase"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path / 'state.json'} cannot be read (no step or phase: {err})") from err
    return Checkpoint(
        path=path,
        step=step,
        phase=phase,
        state=state,
        trainable=_read(path / "trainable.safetensors", load_file),
        optimizer=nested("optimizer"),
        scheduler=nested("scheduler"),
        scaler=nested("scaler") if (path / "scaler.json").exists() else None,
        ema=optional("ema.safetensors"),
        extra=optional("extra.safetensors"),
        rng=nested("rng"),
    )


def load_latest_readable(root: str | Path, warn: Any = None) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that reads whole, or None when there is none.

    A damaged newest checkpoint (a disk error, a copy cut short) is passed over for the one
    before it, and ``warn`` is told which file was unreadable; when every one is damaged the
    error names them all.
    """
    found = list_checkpoints(root)
    broken: list[str] = []
    for path in reversed(found):
        try:
            checkpoint = load_checkpoint(path)
        except (CheckpointError, FileNotFoundError) as err:
            broken.append(str(err))
            continue
        if broken and warn is not None:
            warn(f"{'; '.join(broken)}. Resuming from the newest readable checkpoint, {path}")
        return checkpoint
    if broken:
        raise CheckpointError(
            f"no checkpoint under {root} can be read: {'; '.join(broken)}. Delete them (or the whole "
            "output folder) to train from the start"
        )
    return None


def resolve_resume(resume: str | Path | None, root: str | Path) -> Path | None:
    """``"latest"`` -> the newest checkpoint under ``root`` (None when there is none yet);
    a path -> that checkpoint folder (an error when it is not one)."""
    if resume is None:
        return None
    if str(resume) == "latest":
        return latest_checkpoint(root)
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (expected {path / 'state.json'})")
    return path
