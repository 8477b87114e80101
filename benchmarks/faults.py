"""Fault campaign: kill every stage at seeded random moments, resume it, compare with a run never killed.

    OMP_NUM_THREADS=1 python benchmarks/faults.py                  # 20 kills per stage, ~45 min on 2 shared cores
    OMP_NUM_THREADS=1 python benchmarks/faults.py --points 60      # more kill points
    OMP_NUM_THREADS=1 python benchmarks/faults.py --stages train,generate --points 5 --keep /tmp/faults

A small procedural world (72 images, 32 px, two classes, six skin types) and the tiny SD-1.5-
shaped pipeline (diffusers' dummy sizes) make one study. For each of ``prepare``, ``train``
(``--resume latest``), ``generate``, ``downstream compare`` and ``run``, the real command line
(``python -m fairsynth.cli ...``, a child process) is first run once uninterrupted: its outputs
are the reference, and a trace of every crash point it passed (``FAIRSYNTH_CRASH_TRACE``, see
:mod:`fairsynth.io`) tells when it writes what. Then, trial after trial, the stage's outputs are
removed and the same command is started and SIGKILLed up to ``--chain`` times in a row (each
start resumes what the one before left), then run to the end, and the outputs are compared
with the reference. A kill is either

* a *moment*: SIGKILL from outside, whatever the process is doing, a time after its first
  write drawn uniformly over the reference's working time (its first write to its end),
  shrunk by what earlier kills of the trial already did (counted from the first write, as
  start-up time varies with the load on the machine); or
* a *write*: the process kills itself (``FAIRSYNTH_CRASH_AT=kill:<point>#<n>``) the n-th
  time it reaches a crash point of a drawn kind: a temporary file written but not renamed
  (``write``), just renamed (``rename``), a staged folder about to be swapped in (``swap``),
  an append-only log torn half-way through a line (``append``: the loss log, the generation
  journal), old checkpoints being deleted (``prune``), a generated image being moved to its
  folder (``move``). The kind is drawn uniformly among those the reference passed, then n
  among its passages (shrunk like the moments): rare points are tried as often as common ones.

A kill counts when the process died of it (one that finished first is not counted; trials go
on until ``--points`` kills happened). Compared with the reference:

* prepare: every file of the prepared folder, by SHA-256 (manifest, counts, images);
* train: every trainable tensor of the final checkpoint and of the exported model within 1e-6,
  the checkpoints kept, the step count and the loss log (``losses.csv``, every step);
* generate: the exact planned count per cell, no duplicate id, the files on disk exactly those
  the manifests name, every PNG complete, (cell, index, seed, sha256) and every image's bytes
  equal to the reference's, the manifests field by field but the seconds an image took; no
  temporary file left;
* downstream: ``compare.json``, ``compare.md`` and every run's model and predictions by
  SHA-256, every run's metrics but its ``seconds``;
* run: all of the above, and ``run-state.json`` saying every stage finished.

Then the faults that are not kills, each from the reference's outputs:

* the newest checkpoint truncated: ``train --resume latest`` names the file, resumes from the
  one before and ends equal to the reference;
* the exported adapter truncated: ``generate`` stops with an error naming it (no traceback,
  nothing delivered); ``train --resume latest`` writes it again from the final checkpoint and
  ``generate`` then delivers the reference's images;
* a delivered image truncated: ``generate`` regenerates it, byte-identical;
* a full disk (``FAIRSYNTH_CRASH_AT=enospc:<write|append>#<n>``: a seeded write fails with
  ENOSPC) in each stage: exit 3 with one message naming the file, no traceback, no temporary
  file, nothing published; the same command afterwards ends equal to the reference.

Hostile input (image bombs, path escapes, the formats that must keep working, fuzzed files) is
``benchmarks/hostile_inputs.py``'s table.

One table: stage, kill points tried (moments + at writes), survived, what differed.
``--json FILE`` writes the rows; the exit status is 1 when anything differed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

STAGES = ("prepare", "train", "generate", "downstream", "run")

#: Child processes: this checkout's source first, one thread each, offline.
CHILD_ENV = {
    "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]),
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
FAULT_VARIABLES = ("FAIRSYNTH_CRASH_AT", "FAIRSYNTH_CRASH_TRACE")

RECIPE = """\
# The fault campaign's study (benchmarks/faults.py): small enough to start and kill often.
name: faults
seed: 0
workdir: {workdir}
stages: [world, prepare, train, generate, downstream]
world: {{n: 72, seed: 0, size: 32, test_per_type: 0, fst_distribution: {{I: 1, II: 1, III: 1, IV: 1, V: 1, VI: 1}},
        class_distribution: {{melanoma: 1, psoriasis: 1}}}}
data: {{reader: fitzpatrick17k, caption_template: "a photo of {{diagnosis}} on skin type {{fst_roman}}"}}
prepare: {{resolution: [16], split: {{val: 0.2, test: 0.2, stratify: [label, fst]}}}}
train:
  base: {{source: {base}}}
  method: lora
  options: {{rank: 4}}
  steps: 12
  batch_size: 2
  learning_rate: 1.0e-3
  caption_dropout: 0.2
  min_snr_gamma: 5.0
  checkpoint_every: 2
  keep_checkpoints: 2
  log_every: 1
  report_to: none
generate:
  plan: {{total: 12, by: [fst]}}
  steps: 4
  batch_size: 2
filter: {{checks: [resolution], options: {{}}}}
downstream: {{arms: [real, mixed], seeds: [0], epochs: 3, backbone: test_resnet, image_size: 16, bootstrap_resamples: 20,
             batch_size: 8}}
"""


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One start of a command: how it ended and what it printed."""

    code: int
    seconds: float
    output: str
    killed: bool = False

    def tail(self, n: int = 400) -> str:
        return " ".join(self.output.strip().splitlines()[-3:])[-n:]


class Study:
    """The campaign's folders: the base, the recipe, the study every command writes, references."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.work = root / "study"
        self.reference = root / "reference"
        self.recipe = root / "recipe.yaml"
        self.logs = root / "logs"
        self.starts = 0

    def command(self, stage: str) -> list[str]:
        cli = [sys.executable, "-m", "fairsynth.cli"]
        return {
            "prepare": cli + ["prepare", "--config", str(self.recipe)],
            "train": cli + ["train", "--config", str(self.recipe), "--resume", "latest"],
            "generate": cli + ["generate", "--config", str(self.recipe)],
            "downstream": cli + ["downstream", "compare", "--config", str(self.recipe)],
            "run": cli + ["run", str(self.recipe)],
        }[stage]

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, kill_after: float | None = None,
              timeout: float = 900) -> Outcome:
        """Run ``argv``; with ``kill_after``, SIGKILL it that many seconds after it reached its first
        crash point (its first write: the moment is counted in its own work, not in start-up, which
        varies with the load on the machine)."""
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{self.starts:04d}.log"
        trace = self.logs / f"{self.starts:04d}.trace"
        environment = {k: v for k, v in os.environ.items() if k not in FAULT_VARIABLES}
        environment.update(CHILD_ENV)
        environment.update(env or {})
        if kill_after is not None:
            environment["FAIRSYNTH_CRASH_TRACE"] = str(trace)
        began = time.monotonic()
        anchor = None
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, env=environment, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
            while (code := process.poll()) is None:
                now = time.monotonic()
                if kill_after is not None and anchor is None and trace.is_file() and trace.stat().st_size:
                    anchor = now
                if anchor is not None and now - anchor >= kill_after:
                    os.kill(process.pid, signal.SIGKILL)  # (a process that just ended keeps its own exit status)
                    code = process.wait()
                    break
                if now - began > timeout:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    raise SystemExit(f"{' '.join(argv[2:4])} ran over {timeout:.0f} s; its output is in {log}")
                time.sleep(0.005)
        text = log.read_text(encoding="utf-8", errors="replace")
        return Outcome(code, time.monotonic() - began, text, code == -signal.SIGKILL)


# --------------------------------------------------------------------------------------
# Set-up: base, world, references
# --------------------------------------------------------------------------------------

#: The folder each stage delivers inside the study, and the folders it reads.
OUTPUT = {"prepare": "prepared", "train": "train", "generate": "generated", "downstream": "downstream"}
INPUTS = {"prepare": ["world"], "train": ["prepared"], "generate": ["prepared", "train"],
          "downstream": ["prepared", "generated"]}


def set_up(study: Study, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The tiny base, the recipe, and one uninterrupted, traced run of every stage; returns the traces."""
    from fairsynth.models.architectures import build_pipeline, tiny_sd_components

    build_pipeline(tiny_sd_components(seed=0)).save_pretrained(study.base)
    study.recipe.write_text(RECIPE.format(workdir=study.work, base=study.base), encoding="utf-8")
    world = study.start(study.command("run") + ["stages=[world]"])
    if world.code != 0:
        raise SystemExit(f"the world could not be made: {world.tail()}")
    (study.work / "run-state.json").unlink()
    shutil.copytree(study.work / "world", study.reference / "world")
    traces = {}
    for stage in STAGES:
        if stage == "run":
            clear(study.work)
        traces[stage] = reference_run(study, stage)
        log(f"reference {stage}: {traces[stage]['seconds']:.1f} s, "
            f"{len(traces[stage]['events'])} crash points passed ({', '.join(sorted(traces[stage]['kinds']))})")
        if stage == "run":
            for name in os.listdir(study.work):
                copy(study.work / name, study.reference / "run" / name)
        else:
            copy(study.work / OUTPUT[stage], study.reference / OUTPUT[stage])
    return traces


def reference_run(study: Study, stage: str) -> dict[str, Any]:
    trace = study.root / f"trace-{stage}.txt"
    began = time.time()
    done = study.start(study.command(stage), env={"FAIRSYNTH_CRASH_TRACE": str(trace)})
    if done.code != 0:
        raise SystemExit(f"the uninterrupted {stage} failed: {done.tail(2000)}")
    events = []
    for line in trace.read_text().splitlines():
        moment, point = line.split()
        events.append((float(moment) - began, point))
    return {"seconds": done.seconds, "events": events, "kinds": sorted({p for _, p in events})}


def clear(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def copy(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def restore(study: Study, stage: str) -> None:
    """The study as the stage finds it: its inputs from the references, nothing else (``run``: empty)."""
    clear(study.work)
    for name in INPUTS.get(stage, []):
        copy(study.reference / name, study.work / name)


# --------------------------------------------------------------------------------------
# Comparisons with the reference
# --------------------------------------------------------------------------------------


def digests(folder: Path, skip: Callable[[str], bool] = lambda name: False) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and not skip(name):
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def differences(ours: dict[str, str], reference: dict[str, str], what: str) -> list[str]:
    missing = sorted(set(reference) - set(ours))
    extra = sorted(set(ours) - set(reference))
    changed = sorted(k for k in set(ours) & set(reference) if ours[k] != reference[k])
    out = []
    for label, names in (("missing", missing), ("extra", extra), ("differs", changed)):
        if names:
            out.append(f"{what}: {len(names)} {label} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})")
    return out


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name.endswith(".tmp"))


def check_prepare(work: Path, reference: Path) -> list[str]:
    return differences(digests(work / "prepared"), digests(reference / "prepared"), "prepared")


def _tensor_difference(ours: Path, reference: Path) -> str | None:
    from safetensors.torch import load_file

    if not ours.is_file():
        return f"{ours.name} missing"
    a, b = load_file(ours), load_file(reference)
    if a.keys() != b.keys():
        return f"{ours.name}: other tensors"
    worst = max((float((a[k].double() - b[k].double()).abs().max()) for k in a), default=0.0)
    return f"{ours.name}: tensors differ by {worst:.2e}" if worst > 1e-6 else None


def check_train(work: Path, reference: Path) -> list[str]:
    out = []
    train, ref = work / "train", reference / "train"
    kept = sorted(p.name for p in (train / "checkpoints").glob("step-*"))
    expected = sorted(p.name for p in (ref / "checkpoints").glob("step-*"))
    if kept != expected:
        out.append(f"checkpoints {kept} instead of {expected}")
    for name in expected:
        if (problem := _tensor_difference(train / "checkpoints" / name / "trainable.safetensors",
                                          ref / "checkpoints" / name / "trainable.safetensors")):
            out.append(f"{name}/{problem}")
    for path in sorted((ref / "model").glob("*.safetensors")):
        if (problem := _tensor_difference(train / "model" / path.name, path)):
            out.append(f"model/{problem}")
    info = train / "model" / "training_info.json"
    steps = json.loads(info.read_text())["steps"] if info.is_file() else None
    if steps != json.loads((ref / "model" / "training_info.json").read_text())["steps"]:
        out.append(f"step count {steps}")
    log, ref_log = train / "losses.csv", (ref / "losses.csv").read_text()
    if not log.is_file() or log.read_text() != ref_log:
        ours = log.read_text().splitlines() if log.is_file() else []
        out.append(f"loss log: {len(ours) - 1} rows, first difference at row "
                   f"{next((i for i, (x, y) in enumerate(zip(ours, ref_log.splitlines())) if x != y), min(len(ours), len(ref_log.splitlines())))}")
    return out


def check_generate(work: Path, reference: Path) -> list[str]:
    out = []
    folder, ref = work / "generated", reference / "generated"
    manifest = folder / "metadata.jsonl"
    if not manifest.is_file():
        return ["generated: no metadata.jsonl"]
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    ref_rows = [json.loads(line) for line in (ref / "metadata.jsonl").read_text().splitlines() if line.strip()]
    plan = json.loads((ref / "plan.json").read_text())
    targets = {c["cell"]: c["target"] for c in plan["cells"] if c["target"] > 0} if "cells" in plan else None
    counts = Counter(r["cell"] for r in rows)
    if targets is not None and dict(counts) != targets:
        out.append(f"counts per cell {dict(counts)} instead of the plan's {targets}")
    if len({r["id"] for r in rows}) != len(rows):
        out.append("duplicate ids")
    key = lambda r: (r["cell"], r["index"], r["seed"], r["sha256"])  # noqa: E731
    if sorted(map(key, rows)) != sorted(map(key, ref_rows)):
        out.append("(cell, index, seed, sha256) differ from the reference")
    candidates = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines() if line.strip()]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.glob("*/*/*") if p.is_file()}
    named = {r["file_name"] for r in candidates}
    if on_disk != named:
        out.append(f"files on disk vs candidates.jsonl: {len(on_disk - named)} orphan, {len(named - on_disk)} missing")
    from PIL import Image

    for name in sorted(on_disk & named):
        try:
            with Image.open(folder / name) as image:
                image.load()
        except OSError:
            out.append(f"truncated image {name}")
    files = lambda name: name.split("/")[0] in ("images", "not_selected") or name in ("plan.json", "config.yaml")  # noqa: E731
    out += differences(digests(folder, lambda n: not files(n)), digests(ref, lambda n: not files(n)), "generated")
    for name in ("metadata.jsonl", "candidates.jsonl"):  # every field but the seconds an image took
        ours, theirs = _rows(folder / name), _rows(ref / name)
        if ours != theirs:
            changed = sorted({k for a, b in zip(ours, theirs) for k in set(a) | set(b) if a.get(k) != b.get(k)})
            out.append(f"{name}: {len(ours)} rows vs {len(theirs)}, fields differ: {', '.join(changed[:5])}")
    if (left := temporary_files(folder)):
        out.append(f"temporary files left: {left[:3]}")
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    for row in rows:
        row.pop("seconds", None)
    return rows


def check_downstream(work: Path, reference: Path) -> list[str]:
    """Every file of the comparison by SHA-256 (compare.json, compare.md, each run's model and
    predictions), each run's metrics.json but for its wall time."""

    def readable(folder: Path) -> dict[str, str]:
        found = digests(folder, lambda name: name.endswith("metrics.json"))
        for path in sorted(folder.rglob("metrics.json")):
            metrics = json.loads(path.read_text())
            metrics.pop("seconds", None)  # wall time: the one number a kill may change
            found[path.relative_to(folder).as_posix()] = hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()
        return found

    return differences(readable(work / "downstream"), readable(reference / "downstream"), "downstream")


def check_run(work: Path, reference: Path) -> list[str]:
    out = check_prepare(work, reference) + check_train(work, reference) + check_generate(work, reference)
    out += check_downstream(work, reference)
    out += differences(digests(work / "world"), digests(reference / "world"), "world")
    state = json.loads((work / "run-state.json").read_text()) if (work / "run-state.json").is_file() else {}
    unfinished = [name for name in ("world", "prepare", "train", "generate", "downstream")
                  if state.get(name, {}).get("finished") != state.get(name, {}).get("started") or name not in state]
    if unfinished:
        out.append(f"run-state.json: {', '.join(unfinished)} not finished")
    return out


CHECKS = {"prepare": check_prepare, "train": check_train, "generate": check_generate,
          "downstream": check_downstream, "run": check_run}


# --------------------------------------------------------------------------------------
# Kills
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    stage: str
    tried: int = 0
    survived: int = 0
    moments: int = 0
    at_points: Counter = field(default_factory=Counter)
    differed: list[str] = field(default_factory=list)
    note: str = ""

    def kills(self) -> str:
        if not self.tried:
            return self.note or "-"
        points = ", ".join(f"{k} {v}" for k, v in sorted(self.at_points.items()))
        return f"{self.tried} ({self.moments} moments; at writes: {points or 'none'})"


def kill_campaign(study: Study, stage: str, trace: dict[str, Any], points: int, chain: int, rng: random.Random,
                  log: Callable[[str], None]) -> Row:
    """Trials of up to ``chain`` kills each, then a run to the end, until ``points`` kills happened."""
    row = Row(stage)
    events = trace["events"]
    first = min((t for t, _ in events), default=0.0)
    work = max(trace["seconds"] - first, 0.1)  # from the first write to the end
    kinds = trace["kinds"]
    trials = 0
    while row.tried < points and trials < 4 * points:
        trials += 1
        restore(study, stage)
        remaining, fired, problems, finished = 1.0, [], [], False
        for _ in range(min(chain, points - row.tried)):
            if rng.random() < 0.5 or not kinds:
                delay = rng.uniform(0, work * remaining)
                outcome = study.start(study.command(stage), kill_after=delay)
                what, done_share = ("moment", None), delay / work
            else:
                point = rng.choice(kinds)
                passages = [t for t, p in events if p == point]
                nth = rng.randint(1, max(1, round(len(passages) * remaining)))
                outcome = study.start(study.command(stage), env={"FAIRSYNTH_CRASH_AT": f"kill:{point}#{nth}"})
                what, done_share = ("point", point), max(0.0, passages[min(nth, len(passages)) - 1] - first) / work
            if outcome.killed:
                fired.append(what)
                remaining *= max(0.05, 1 - min(1.0, done_share / max(remaining, 1e-6)))
                continue
            if outcome.code != 0:
                problems.append(f"a start after {len(fired)} kill(s) failed (exit {outcome.code}): {outcome.tail()}")
            finished = True  # it ran to the end: it is the trial's last run
            break
        if not problems and not finished:
            final = study.start(study.command(stage))
            if final.code != 0:
                problems.append(f"the run to the end failed (exit {final.code}): {final.tail()}")
        if not problems:
            problems = CHECKS[stage](study.work, study.reference / ("run" if stage == "run" else ""))
        row.tried += len(fired)
        row.moments += sum(1 for kind, _ in fired if kind == "moment")
        row.at_points.update(point for kind, point in fired if kind == "point")
        if problems:
            row.differed += [f"trial {trials} ({', '.join(p or 'moment' for _, p in fired)}): {problems[0]}", *problems[1:3]]
        else:
            row.survived += len(fired)
        log(f"{stage} trial {trials}: {len(fired)} kill(s) ({', '.join(p or 'moment' for _, p in fired) or '-'})"
            f" -> {'same as the reference' if not problems else problems[0]}")
    return row


# --------------------------------------------------------------------------------------
# Faults that are not kills
# --------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_checkpoint(study: Study) -> Row:
    row = Row("train: newest checkpoint truncated")
    restore(study, "train")
    copy(study.reference / "train", study.work / "train")
    newest = sorted((study.work / "train" / "checkpoints").glob("step-*"))[-1]
    broken = newest / "trainable.safetensors"
    truncate(broken)
    shutil.rmtree(study.work / "train" / "model")
    done = study.start(study.command("train"))
    problems = []
    if done.code != 0:
        problems.append(f"exit {done.code}: {done.tail()}")
    else:
        if str(broken) not in done.output:
            problems.append("the output does not name the truncated file")
        problems += check_train(study.work, study.reference)
    return _one(row, problems, "resumed from the checkpoint before, named the broken file")


def truncated_adapter(study: Study) -> Row:
    row = Row("generate: exported adapter truncated")
    restore(study, "generate")
    adapter = next((study.work / "train" / "model").glob("*.safetensors"))
    truncate(adapter)
    failed = study.start(study.command("generate"))
    problems = []
    if failed.code == 0 or "Traceback" in failed.output or str(adapter) not in failed.output:
        problems.append(f"generate: exit {failed.code}, {'a traceback' if 'Traceback' in failed.output else failed.tail()}")
    if (study.work / "generated" / "metadata.jsonl").exists():
        problems.append("a manifest was delivered")
    again = study.start(study.command("train"))
    if again.code != 0:
        problems.append(f"train --resume latest: exit {again.code}: {again.tail()}")
    done = study.start(study.command("generate"))
    if done.code != 0:
        problems.append(f"generate after it: exit {done.code}: {done.tail()}")
    else:
        problems += check_generate(study.work, study.reference)
    return _one(row, problems, "clear error naming it; rewritten from the final checkpoint; images equal")


def truncated_image(study: Study) -> Row:
    row = Row("generate: delivered image truncated")
    restore(study, "generate")
    copy(study.reference / "generated", study.work / "generated")
    image = sorted((study.work / "generated" / "images").rglob("*.png"))[0]
    truncate(image)
    done = study.start(study.command("generate"))
    problems = [f"exit {done.code}: {done.tail()}"] if done.code != 0 else check_generate(study.work, study.reference)
    return _one(row, problems, "regenerated, byte-identical")


def full_disk(study: Study, traces: dict[str, dict[str, Any]], rng: random.Random) -> Row:
    """One full disk per stage; one row."""
    row = Row("disk full in prepare, train, generate, downstream")
    named = []
    for stage in ("prepare", "train", "generate", "downstream"):
        problems, where = _full_disk(study, stage, traces[stage], rng)
        row.tried += 1
        row.survived += not problems
        row.differed += [f"{stage}: {problem}" for problem in problems]
        named.append(where)
    row.note = f"exit 3 naming the file: {', '.join(named)}" if not row.differed else ""
    return row


def _full_disk(study: Study, stage: str, trace: dict[str, Any], rng: random.Random) -> tuple[list[str], str]:
    restore(study, stage)
    writes = [p for _, p in trace["events"] if p in ("write", "append")]
    point = rng.choice(writes) if writes else "write"  # a write drawn among all of them, then its rank in its kind
    nth = rng.randint(1, max(1, writes.count(point)))
    failed = study.start(study.command(stage), env={"FAIRSYNTH_CRASH_AT": f"enospc:{point}#{nth}"})
    problems = []
    message = next((line for line in failed.output.splitlines() if "error:" in line and " full" in line), "")
    named = re.search(r"while writing (\S+?)(?: \(|:)", message)
    if failed.code != 3 or "Traceback" in failed.output or named is None or str(study.work) not in named.group(1):
        problems.append(f"exit {failed.code}: {'a traceback' if 'Traceback' in failed.output else message or failed.tail()}")
    if (left := temporary_files(study.work)):
        problems.append(f"temporary files left: {left[:3]}")
    published = {"prepare": "prepared/metadata.jsonl", "train": "train/model/training_info.json",
                 "generate": "generated/metadata.jsonl", "downstream": "downstream/compare.json"}[stage]
    if (study.work / published).exists():
        problems.append(f"{published} was written")
    done = study.start(study.command(stage))
    if done.code != 0:
        problems.append(f"the same command afterwards: exit {done.code}: {done.tail()}")
    else:
        problems += CHECKS[stage](study.work, study.reference)
    return problems, Path(named.group(1)).name if named else "nothing"


def _one(row: Row, problems: list[str], ok: str) -> Row:
    row.tried, row.survived = 1, 0 if problems else 1
    row.differed = problems
    row.note = ok if not problems else ""
    return row


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    lines = ["| stage | kill points tried | survived | what differed |", "|---|---|---|---|"]
    for row in rows:
        differed = "; ".join(row.differed) if row.differed else ("nothing" if not row.note else f"nothing ({row.note})")
        kills = row.kills() if row.stage in STAGES else f"{row.tried} case{'s' if row.tried > 1 else ''}"
        lines.append(f"| {row.stage} | {kills} | {row.survived} of {row.tried} | {differed.replace('|', '/')} |")
    return "\n".join(lines)


def campaign(root: Path, *, points: int = 20, chain: int = 4, seed: int = 0, stages: tuple[str, ...] = STAGES,
             extras: bool = True, log: Callable[[str], None] = print) -> list[Row]:
    """Set up in ``root``, run every kill trial and fault case; returns the table's rows."""
    rng = random.Random(seed)
    study = Study(root)
    began = time.monotonic()
    traces = set_up(study, log)
    rows = []
    for stage in stages:
        rows.append(kill_campaign(study, stage, traces[stage], points, chain, rng, log))
    if extras:
        rows.append(truncated_checkpoint(study))
        rows.append(truncated_adapter(study))
        rows.append(truncated_image(study))
        rows.append(full_disk(study, traces, rng))
    for row in rows[len(stages):]:
        log(f"{row.stage}: {'survived' if row.survived else '; '.join(row.differed)}")
    log(f"{study.starts} command starts in {time.monotonic() - began:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20, help="kills per stage (default 20)")
    parser.add_argument("--chain", type=int, default=4, help="kills in a row before a trial runs to the end (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--no-extras", action="store_true", help="kills only: no truncated files, full disk or input cases")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    if args.keep is not None:
        clear(args.keep)
        root = args.keep
    else:
        root = Path(tempfile.mkdtemp(prefix="fairsynth-faults-"))
    try:
        rows = campaign(root, points=args.points, chain=args.chain, seed=args.seed, stages=stages,
                        extras=not args.no_extras, log=lambda m: print(m, flush=True))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"python benchmarks/faults.py --points {args.points} --chain {args.chain} --seed {args.seed}"
          + (f" --stages {','.join(stages)}" if stages != STAGES else "") + (" --no-extras" if args.no_extras else ""))
    print(render(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([row.__dict__ | {"at_points": dict(row.at_points)} for row in rows], indent=1))
    return 1 if any(row.differed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
