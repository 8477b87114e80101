"""`fairsynth generate` as users run it: a real process killed with SIGKILL and run again, and
two processes under `accelerate launch` whose union equals a one-process run image for image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fairsynth.generation.run import generate
from fairsynth.recipe import load_recipe
from tests.generation.conftest import overrides
from tests.helpers import SUBPROCESS_ENV


def _env() -> dict[str, str]:
    return {**os.environ, **SUBPROCESS_ENV}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _journal_rows(output: Path) -> int:
    return sum(p.read_text(errors="replace").count('"kind": "image"') for p in (output / ".fairsynth").glob("journal-*.jsonl"))


def _check_consistent(output: Path, per_cell: int, cells: int) -> pd.DataFrame:
    frame = pd.read_json(output / "metadata.jsonl", lines=True)
    on_disk = {p.relative_to(output).as_posix() for p in output.glob("*/*/*.png")}
    assert len(frame) == per_cell * cells and frame["id"].is_unique
    assert set(frame["cell"].value_counts()) == {per_cell}
    assert set(frame["file_name"]) == on_disk  # nothing missing, nothing extra
    candidates = pd.read_json(output / "candidates.jsonl", lines=True)
    assert set(candidates["file_name"]) == on_disk and candidates["id"].is_unique
    for name in on_disk:
        with Image.open(output / name) as image:
            image.load()  # a truncated PNG would fail here
    assert not list(output.rglob("*.tmp"))
    return frame


def test_kill_9_mid_generation_then_the_same_command_finishes_exactly(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    args = overrides(tmp_path / "w", tiny_base, real_manifest, lora_output, **{"plan.total": 16, "steps": 4, "plan.by": "[]"})
    command = [sys.executable, "-m", "fairsynth.cli", "generate", *args]
    output = tmp_path / "w" / "generated"

    with open(tmp_path / "first.log", "wb") as log:
        process = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.monotonic() + 240
        while (not output.is_dir() or _journal_rows(output) < 5) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed_at = _journal_rows(output)
    assert 5 <= killed_at < 16 and not (output / "metadata.jsonl").exists()

    again = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing" in again.stdout
    resumed = _check_consistent(output, per_cell=8, cells=2)
    report = json.loads((output / "report.json").read_text())
    assert report["delivered"] == 16 and report["generated_this_run"] <= 16 - killed_at + 1

    # The killed-and-resumed set is the set a run never killed delivers: the same images of the
    # same cells, indices and seeds, byte for byte (not only as many).
    straight = overrides(tmp_path / "straight", tiny_base, real_manifest, lora_output, **{"plan.total": 16, "steps": 4, "plan.by": "[]"})
    generate(load_recipe(None, straight), progress=False, log=lambda m: None)
    reference = _check_consistent(tmp_path / "straight" / "generated", per_cell=8, cells=2)
    key = ["cell", "index", "seed", "sha256"]
    assert sorted(map(tuple, resumed[key].values.tolist())) == sorted(map(tuple, reference[key].values.tolist()))
    for name in resumed["file_name"]:
        assert (output / name).read_bytes() == (tmp_path / "straight" / "generated" / name).read_bytes()


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_two_processes_equal_one_image_for_image(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    """Without a GPU, `--multi_gpu` makes accelerate start the processes with torchrun and they
    join one CPU (gloo) group (accelerate's `--cpu` alone starts a single process)."""
    settings = {"plan.total": 6, "batch_size": 2}
    one = overrides(tmp_path / "one", tiny_base, real_manifest, lora_output, **settings)
    two = overrides(tmp_path / "two", tiny_base, real_manifest, lora_output, **settings)
    generate(load_recipe(None, one), progress=False, log=lambda m: None)  # in this process, one thread
    launch = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "fairsynth.cli", "generate", *two,
    ]
    double = subprocess.run(launch, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    out_one, out_two = tmp_path / "one" / "generated", tmp_path / "two" / "generated"
    journals = sorted(p.name for p in (out_two / ".fairsynth").glob("journal-*.jsonl"))
    assert journals == ["journal-0.jsonl", "journal-1.jsonl"]  # both processes generated
    assert json.loads((out_two / "report.json").read_text())["processes"] == 2
    a, b = _check_consistent(out_one, 1, 6), _check_consistent(out_two, 1, 6)
    assert dict(zip(a["file_name"], a["sha256"])) == dict(zip(b["file_name"], b["sha256"]))  # image for image
    assert double.stdout.count("images delivered") == 1  # process 0 alone reports
