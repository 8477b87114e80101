"""The whole study as one run: stages, their fingerprints, and what is up to date.

``fairsynth run recipe.yaml`` goes world → prepare → train → classifier → generate →
evaluate → downstream → curve → ablate → report. Each stage has a **fingerprint**: a SHA-256 of the recipe
sections it reads, the digests of its input files where it reads files the study did not
make, and the fingerprints of the stages before it. ``<workdir>/run-state.json`` records, per
stage, the fingerprint it *started* with and the one it *finished* with:

* finished with today's fingerprint and its outputs are there → skipped;
* started with today's fingerprint but never finished (a crash, kill -9) → run again with the
  stage's own resume (training from its latest checkpoint, generation from its manifest), so
  nothing already produced is redone or lost;
* anything else with old outputs on disk → those outputs are moved aside, intact, to
  ``<workdir>/stale/<stage>-<old fingerprint>/`` and the stage runs fresh (a checkpoint of
  other settings must never be resumed).

Changing a setting changes the fingerprint of its stage and so of every stage after it, and
only those run again. The core here is pure (fingerprints, the plan); the command line runs
the stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from fairsynth.io import atomic_write_text, remove_temporaries, sha256_file

if TYPE_CHECKING:
    from fairsynth.recipe import Recipe

#: Every stage, in the order a study runs them.
STAGES: tuple[str, ...] = (
    "world", "prepare", "train", "classifier", "generate", "evaluate", "downstream", "curve", "ablate", "report",
)

#: The file that records what ran with which fingerprint.
STATE_NAME = "run-state.json"

Action = Literal["skip", "run", "resume", "rerun"]


class StudyError(RuntimeError):
    """A study cannot run as configured (a clear, user-facing message)."""


@dataclass(frozen=True)
class Stage:
    """One stage of the study.

    Attributes:
        name: the stage name, one of :data:`STAGES`.
        sections: the recipe sections whose values the stage reads.
        after: earlier stages whose results it reads (their fingerprints enter its own).
        outputs: files whose presence says the stage finished.
        folders: what the stage writes, moved aside when it is stale.
        inputs: files the study did not make that the stage reads (their bytes enter the fingerprint).
        ignore: dotted keys of those sections the stage does not read (``downstream.curve`` for the
            comparison), left out of its fingerprint so that changing them does not rerun it.
    """

    name: str
    sections: tuple[str, ...]
    after: tuple[str, ...]
    outputs: tuple[Path, ...]
    folders: tuple[Path, ...]
    inputs: tuple[Path, ...] = ()
    ignore: tuple[str, ...] = ()


def needs_classifier(recipe: "Recipe", stages: Sequence[str] = ("generate",)) -> bool:
    """The classifier_confidence filter, or evaluation with classifier features, reads the
    study's own real-data classifier (``<downstream.output>/real/seed-<first seed>``)."""
    own = Path(recipe.downstream.output) / "real" / f"seed-{recipe.downstream.seeds[0]}"
    confidence = recipe.filter.options.get("classifier_confidence")
    if "generate" in stages and "classifier_confidence" in recipe.filter.checks and confidence is not None:
        if Path(str(confidence.get("model", ""))) == own:
            return True
    return "evaluate" in stages and Path(recipe.evaluate.weights.get("classifier", "")).parent == own


#: Settings of the curve and the ablation, read by their own stages only.
PROTOCOL_SETTINGS: tuple[str, ...] = ("downstream.curve", "downstream.ablate")

#: Files the curve and ablate stages write in the downstream folder (each stage's own).
PROTOCOL_FILES: dict[str, tuple[str, ...]] = {
    "curve": ("curve", "curve.json", "curve.md", "curve.png", "curve-config.yaml"),
    "ablate": ("ablate", "ablate.json", "ablate.md", "ablate.png", "ablate-config.yaml"),
}


def default_stages(recipe: "Recipe") -> list[str]:
    """The stages a recipe runs when it names none: all that it configures (the ratio curve and
    the ablation where ``downstream.curve.enabled`` / ``downstream.ablate.enabled``)."""
    skipped = {"world", "classifier", "evaluate"}
    if not recipe.downstream.curve.enabled:
        skipped.add("curve")
    if not recipe.downstream.ablate.enabled:
        skipped.add("ablate")
    stages = [name for name in STAGES if name not in skipped]
    if recipe.world is not None:
        stages.insert(0, "world")
    if needs_classifier(recipe):
        stages.insert(stages.index("generate"), "classifier")
    return stages


def stages_of(recipe: "Recipe") -> list[Stage]:
    """The stages of ``recipe`` in order, with their sections, inputs and outputs."""
    names = list(recipe.stages) or default_stages(recipe)
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise StudyError(f"stages: unknown stage(s) {', '.join(map(repr, unknown))}; known: {', '.join(STAGES)}")
    if "classifier" not in names and needs_classifier(recipe, names):
        names.append("classifier")
    names = sorted(set(names), key=STAGES.index)
    work = Path(recipe.workdir)
    prepared = Path(recipe.prepare.output)
    train = Path(recipe.train.output)
    generated = Path(recipe.generate.output)
    downstream = Path(recipe.downstream.output)
    first_seed = recipe.downstream.seeds[0]
    data_inputs: tuple[Path, ...] = ()
    if "world" not in names:
        data_inputs = tuple(p for p in (Path(recipe.data.path), Path(recipe.data.images or "")) if str(p) not in ("", "."))
    adapter_inputs = tuple(
        Path(spec.path) for spec in (recipe.generate.adapters or []) if not Path(spec.path).is_relative_to(train)
    )
    # A base given as a local folder or file is an input like the data; a hub id or the
    # embedded base is named by the train section itself.
    base = Path(recipe.train.base.source)
    base_inputs = (base,) if recipe.train.base.source not in ("", "embedded", "embedded-sdxl") and base.exists() else ()
    # the curve and ablate stages own their files in the downstream folder: a stale comparison leaves them
    protocol_paths = {downstream / name for files in PROTOCOL_FILES.values() for name in files}
    downstream_folders: tuple[Path, ...] = (downstream,)
    if "classifier" in names:
        # the classifier stage owns real/seed-<first>: a stale comparison must not take it along
        classifier_dir = downstream / "real" / f"seed-{first_seed}"
        downstream_folders = tuple(
            path for path in [*_children(downstream), *_children(downstream / "real")]
            if path not in (downstream / "real", classifier_dir, downstream / "config.yaml")  # rewritten by both
            and path not in protocol_paths
        )
    elif protocol_paths & set(_children(downstream)):
        downstream_folders = tuple(path for path in _children(downstream) if path not in protocol_paths)
    # the world's external test world, written by the world stage and prepared by the prepare stage
    tested = recipe.world is not None and recipe.world.test_per_type > 0
    world_outputs = (recipe.world_dir / "fitzpatrick17k.csv",) + ((recipe.world_test_dir / "fitzpatrick17k.csv",) if tested else ())
    world_folders = (recipe.world_dir,) + ((recipe.world_test_dir,) if tested else ())
    prepare_outputs = (prepared / "metadata.jsonl",) + ((recipe.prepared_test_dir / "metadata.jsonl",) if tested else ())
    prepare_folders = (prepared,) + ((recipe.prepared_test_dir,) if tested else ())
    # external test sets the study did not make are inputs of the downstream stage
    test_inputs = tuple(
        Path(path) for path in recipe.downstream.test_sets.values()
        if not (tested and Path(path) == recipe.prepared_test_dir / "metadata.jsonl")
    )
    every = {
        "world": Stage("world", ("world",), (), world_outputs, world_folders),
        "prepare": Stage("prepare", ("data", "prepare"), ("world",), prepare_outputs, prepare_folders, data_inputs),
        "train": Stage(
            "train", ("train",), ("prepare",), (train / "model" / "training_info.json",), (train,), base_inputs
        ),
        "classifier": Stage(
            "classifier", ("downstream",), ("prepare",),
            (downstream / "real" / f"seed-{first_seed}" / "model.safetensors",),
            (downstream / "real" / f"seed-{first_seed}",), ignore=PROTOCOL_SETTINGS,
        ),
        "generate": Stage(
            "generate", ("generate", "filter"), ("prepare", "train", "classifier"),
            (generated / "report.json", generated / "metadata.jsonl"), (generated,), adapter_inputs,
        ),
        "evaluate": Stage(
            "evaluate", ("evaluate",), ("prepare", "classifier", "generate"),
            (Path(recipe.evaluate.output) / "evaluation.json",), (Path(recipe.evaluate.output),),
        ),
        "downstream": Stage(
            "downstream", ("downstream",), ("prepare", "generate"), (downstream / "compare.json",), downstream_folders,
            test_inputs, ignore=PROTOCOL_SETTINGS,
        ),
        "curve": Stage(
            "curve", ("downstream",), ("prepare", "generate"), (downstream / "curve.json",),
            tuple(downstream / name for name in PROTOCOL_FILES["curve"]), test_inputs,
            ignore=("downstream.ablate", "downstream.arms", "downstream.hybrid", "downstream.curve.enabled"),
        ),
        "ablate": Stage(
            "ablate", ("downstream",), ("world", "prepare", "generate"), (downstream / "ablate.json",),
            tuple(downstream / name for name in PROTOCOL_FILES["ablate"]), test_inputs,
            ignore=("downstream.curve", "downstream.arms", "downstream.hybrid", "downstream.ablate.enabled"),
        ),
        "report": Stage(
            "report", (), tuple(n for n in STAGES if n != "report"), (work / "report" / "index.html",), (work / "report",)
        ),
    }
    # A stage whose upstream stage is not part of this study (a sweep's configuration reads
    # its parent's prepared data and classifier) hashes what it reads from it instead.
    external: dict[str, list[Path]] = {name: [] for name in names}
    reads = {  # (stage, upstream stage) -> the file the stage reads from it
        ("train", "prepare"): recipe.train.data,
        ("evaluate", "prepare"): recipe.evaluate.real,
        ("downstream", "prepare"): recipe.downstream.real,
        ("evaluate", "generate"): recipe.evaluate.synthetic,
        ("downstream", "generate"): recipe.downstream.synthetic if recipe.downstream.arms != ["real"] else "",
        ("curve", "prepare"): recipe.downstream.real,
        ("curve", "generate"): recipe.downstream.synthetic,
        ("ablate", "prepare"): recipe.downstream.real,
        ("ablate", "generate"): recipe.downstream.synthetic,
    }
    for (name, upstream), path in reads.items():
        if name in names and upstream not in names and path:
            external[name].append(Path(path))
    if "classifier" not in names:
        confidence = recipe.filter.options.get("classifier_confidence")
        if "generate" in names and confidence is not None and "classifier_confidence" in recipe.filter.checks:
            external["generate"].append(Path(str(confidence.get("model", ""))) / "model.safetensors")
        if "evaluate" in names and recipe.evaluate.weights.get("classifier"):
            external["evaluate"].append(Path(recipe.evaluate.weights["classifier"]))
    return [dataclasses.replace(every[name], inputs=every[name].inputs + tuple(external[name])) for name in names]


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's listing (relative names, sizes, mtimes).

    A folder of 60,000 images is listed, not read: a changed, added or removed image changes
    the listing, and reading every byte at every run would cost minutes.
    """
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                stat = (Path(root) / name).stat()
                rel = os.path.relpath(Path(root) / name, path)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    else:
        raise StudyError(f"input {path} does not exist")
    return digest.hexdigest()


def _section_values(recipe: "Recipe", section: str, ignore: Sequence[str] = ()) -> Any:
    """The values of one recipe section, without the dotted keys in ``ignore`` (``downstream.curve.enabled``)."""
    value = getattr(recipe, section)
    values = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    for key in ignore:
        head, *path = key.split(".")
        node = values
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if head == section and path and isinstance(node, dict):
            node.pop(path[-1], None)
    return values


def fingerprints(recipe: "Recipe", stages: Sequence[Stage], digest: Callable[[Path], str] = file_digest) -> dict[str, str]:
    """``{stage: fingerprint}``: sections, input digests and the earlier stages' fingerprints."""
    out: dict[str, str] = {}
    for stage in stages:
        content = {
            "stage": stage.name,
            "seed": recipe.seed,
            "sections": {section: _section_values(recipe, section, stage.ignore) for section in stage.sections},
            "inputs": {str(path): digest(path) for path in stage.inputs},
            "after": {name: out[name] for name in stage.after if name in out},
        }
        text = json.dumps(content, sort_keys=True, default=str)
        out[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def read_state(workdir: Path) -> dict[str, dict[str, Any]]:
    path = Path(workdir) / STATE_NAME
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StudyError(f"{path} is not valid JSON ({err}); delete it to run every stage again") from err
    if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
        raise StudyError(f"{path} is not a run-state file (expected {{stage: {{...}}}}); delete it to run every stage again")
    return state


def decide(stage: Stage, fingerprint: str, record: Mapping[str, Any] | None, force: bool = False) -> Action:
    """What to do with one stage, given its fingerprint and what the state file says of it."""
    record = record or {}
    done = all(path.exists() for path in stage.outputs)
    written = any(path.exists() for path in stage.folders)
    if force:
        return "rerun" if written else "run"
    if record.get("finished") == fingerprint and done:
        return "skip"
    if record.get("started") == fingerprint:
        return "resume"
    return "rerun" if written else "run"


def plan(recipe: "Recipe", force: Sequence[str] = (), digest: Callable[[Path], str] = file_digest) -> list[tuple[Stage, str, Action]]:
    """Every stage of ``recipe`` with its fingerprint and what ``run`` will do with it.

    ``force`` names stages to run again whatever their state (``all`` for every stage); a
    forced stage makes every later stage that reads it run again too.
    """
    stages = stages_of(recipe)
    unknown = [name for name in force if name != "all" and name not in STAGES]
    if unknown:
        raise StudyError(f"--force: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    prints = fingerprints(recipe, stages, digest)
    state = read_state(Path(recipe.workdir))
    out: list[tuple[Stage, str, Action]] = []
    changed: set[str] = set()
    for stage in stages:
        forced = "all" in force or stage.name in force or bool(changed & set(stage.after))
        action = decide(stage, prints[stage.name], state.get(stage.name), forced)
        if action != "skip":
            changed.add(stage.name)
        out.append((stage, prints[stage.name], action))
    return out


# --------------------------------------------------------------------------------------
# Running (the thin shell)
# --------------------------------------------------------------------------------------


def _write_state(workdir: Path, state: Mapping[str, Any]) -> None:
    atomic_write_text(Path(workdir) / STATE_NAME, json.dumps(state, indent=1, sort_keys=True) + "\n")


def set_aside(stage: Stage, workdir: Path, old: str | None) -> list[Path]:
    """Move a stale stage's outputs to ``<workdir>/stale/<stage>-<old>[-n]/``, intact."""
    moved = []
    existing = [path for path in stage.folders if path.exists()]
    if not existing:
        return moved
    base = Path(workdir) / "stale" / f"{stage.name}-{old or 'unrecorded'}"
    target, n = base, 1
    while target.exists():
        target, n = base.with_name(f"{base.name}-{n}"), n + 1
    target.mkdir(parents=True)
    for path in existing:
        destination = target / path.name
        shutil.move(str(path), str(destination))
        moved.append(destination)
    return moved


def run_study(
    recipe: "Recipe",
    execute: Mapping[str, Callable[["Recipe", Action], None]],
    *,
    force: Sequence[str] = (),
    until: str | None = None,
    log: Callable[[str], None] = print,
) -> list[tuple[str, Action, float]]:
    """Run the stages of ``recipe`` that are not up to date; returns (stage, action, seconds).

    ``execute[name](recipe, action)`` runs one stage (``action`` is ``run``, ``resume`` or
    ``rerun``). The state file is written before a stage starts and after it finishes, so a
    crash anywhere leaves a state the next run reads correctly.
    """
    if until is not None and until not in STAGES:
        raise StudyError(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
    workdir = Path(recipe.workdir)
    remove_temporaries(workdir, recursive=False)  # the state file's write a kill interrupted
    steps = plan(recipe, force)
    state = read_state(workdir)
    done: list[tuple[str, Action, float]] = []
    for index, (stage, fingerprint, action) in enumerate(steps, 1):
        if until is not None and STAGES.index(stage.name) > STAGES.index(until):
            break
        head = f"[{index}/{len(steps)}] {stage.name}"
        if action == "skip":
            log(f"{head}: up to date ({fingerprint}), skipped")
            done.append((stage.name, action, 0.0))
            continue
        if action == "rerun":
            old = (state.get(stage.name) or {}).get("finished") or (state.get(stage.name) or {}).get("started")
            moved = set_aside(stage, workdir, old)
            log(f"{head}: settings or inputs changed; earlier outputs kept in {moved[0].parent if moved else '-'}")
        elif action == "resume":
            log(f"{head}: continuing an interrupted run ({fingerprint})")
        else:
            log(f"{head}: running ({fingerprint})")
        workdir.mkdir(parents=True, exist_ok=True)
        state[stage.name] = {"started": fingerprint, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write_state(workdir, state)
        began = time.perf_counter()
        execute[stage.name](recipe, action)
        seconds = time.perf_counter() - began
        missing = [str(path) for path in stage.outputs if not path.exists()]
        if missing:
            raise StudyError(f"stage {stage.name} finished without writing {', '.join(missing)}")
        state[stage.name].update(finished=fingerprint, seconds=round(seconds, 1),
                                 finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _write_state(workdir, state)
        done.append((stage.name, action, seconds))
    return done
