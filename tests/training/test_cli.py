"""`fairsynth train` as users run it: a real process killed with SIGKILL and resumed, two
processes under `accelerate launch`, and the command's errors."""

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

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.recipe import load_recipe
from fairsynth.training.checkpoint import list_checkpoints
from fairsynth.training.loop import train
from tests.helpers import SUBPROCESS_ENV
from tests.training.conftest import make_prepared

REPO = Path(__file__).resolve().parents[2]


def _write_recipe(path: Path, workdir: Path, base: Path, manifest: Path, **train_settings) -> Path:
    """A recipe as a user writes it: LoRA on the tiny base, 16 px."""
    recipe = {
        "name": "tiny",
        "workdir": str(workdir),
        "prepare": {"resolution": [16]},
        "train": {
            "base": {"source": str(base)},
            "method": "lora",
            "options": {"rank": 4},
            "data": str(manifest),
            "batch_size": 2,
            "learning_rate": 1e-3,
            "report_to": "none",
            **train_settings,
        },
    }
    path.write_text("# fairsynth train --config " + path.name + "\n" + yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, **SUBPROCESS_ENV}


def _free_port() -> int:
    with socket.socket() as probe:  # other test sessions may share this machine
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_kill_9_then_resume_latest_equals_an_uninterrupted_run(tmp_path, tiny_base):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    settings = dict(steps=30, checkpoint_every=2, keep_checkpoints=2, caption_dropout=0.2, min_snr_gamma=5.0)
    recipe_path = _write_recipe(tmp_path / "recipe.yaml", tmp_path / "killed", tiny_base, manifest, **settings)
    command = [sys.executable, "-m", "fairsynth.cli", "train", "--config", str(recipe_path)]
    checkpoints = tmp_path / "killed" / "train" / "checkpoints"

    # 1. A real training process, killed with SIGKILL once a checkpoint exists.
    with open(tmp_path / "first.log", "wb") as log:
        process = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.monotonic() + 300
        while not list_checkpoints(checkpoints) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed_at = [p.name for p in list_checkpoints(checkpoints)]
    assert killed_at and "step-000030" not in killed_at

    # 2. The same command with --resume latest finishes the run.
    resumed = subprocess.run(command + ["--resume", "latest"], env=_env(), capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = json.loads((tmp_path / "killed" / "train" / "model" / "training_info.json").read_text())
    assert info["steps"] == 30 and info["resumed_from_step"] >= 2

    # 3. An uninterrupted run of the same recipe ends with the same weights.
    straight = load_recipe(recipe_path, [f"workdir={tmp_path / 'straight'}"])
    train(straight, progress=False)
    final = checkpoints / "step-000030" / "trainable.safetensors"
    reference = tmp_path / "straight" / "train" / "checkpoints" / "step-000030" / "trainable.safetensors"
    assert _max_difference(load_file(final), load_file(reference)) <= 1e-6
    exported = "pytorch_lora_weights.safetensors"
    assert _max_difference(
        load_file(tmp_path / "killed" / "train" / "model" / exported),
        load_file(tmp_path / "straight" / "train" / "model" / exported),
    ) <= 1e-6
    # 4. The loss log tells one run's story: the killed run's rows after its checkpoint are gone.
    killed_log = (tmp_path / "killed" / "train" / "losses.csv").read_text().splitlines()
    straight_log = (tmp_path / "straight" / "train" / "losses.csv").read_text().splitlines()
    assert killed_log[0] == "step,loss,lr" and [row.split(",")[0] for row in killed_log[1:]] == ["10", "20", "30"]
    for ours, reference in zip(killed_log[1:], straight_log[1:], strict=True):
        assert float(ours.split(",")[1]) == pytest.approx(float(reference.split(",")[1]), rel=1e-4)


def test_a_truncated_newest_checkpoint_is_named_and_training_resumes_from_the_one_before(tmp_path, tiny_base, caplog):
    manifest = make_prepared(tmp_path / "prepared", size=16)
    settings = dict(steps=6, checkpoint_every=2, keep_checkpoints=2, caption_dropout=0.2)
    recipe_path = _write_recipe(tmp_path / "recipe.yaml", tmp_path / "damaged", tiny_base, manifest, **settings)
    train(load_recipe(recipe_path, []), progress=False)
    train(load_recipe(recipe_path, [f"workdir={tmp_path / 'straight'}"]), progress=False)
    checkpoints = tmp_path / "damaged" / "train" / "checkpoints"
    broken = checkpoints / "step-000006" / "trainable.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])  # a copy cut short
    shutil.rmtree(tmp_path / "damaged" / "train" / "model")

    with caplog.at_level("WARNING"):
        result = train(load_recipe(recipe_path, []), resume="latest", progress=False)
    assert str(broken) in caplog.text and str(checkpoints / "step-000004") in caplog.text
    assert result.info["resumed_from_step"] == 4 and result.steps == 6
    reference = tmp_path / "straight" / "train" / "checkpoints" / "step-000006" / "trainable.safetensors"
    assert _max_difference(load_file(broken), load_file(reference)) <= 1e-6  # written again, whole


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_two_processes_under_accelerate_launch_average_their_gradients(tmp_path, tiny_base, monkeypatch):
    """`--multi_gpu` makes accelerate start the processes with torchrun; without a GPU the
    loop joins them in one CPU (gloo) process group.

    Process ``r`` draws its batch, noise and timesteps from streams seeded by (seed, step, r).
    One process can draw process 1's batch too (its streams made to say 1), so the gradient of
    each process's batch is known: after the first step AdamW's first moment is
    ``(1 - beta1) * gradient``, and the two-process run's must be that of the mean of the two.
    """
    from fairsynth.training import loop
    from fairsynth.training.checkpoint import load_checkpoint

    manifest = make_prepared(tmp_path / "prepared", size=16)
    settings = dict(steps=2, checkpoint_every=1, max_grad_norm=0, class_diversity={"weight": 0.1})
    recipe_path = _write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", tiny_base, manifest, **settings)
    command = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "fairsynth.cli", "train", "--config", str(recipe_path),
    ]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "train" / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["num_processes"] == 2
    assert (tmp_path / "run" / "train" / "model" / "pytorch_lora_weights.safetensors").is_file()
    assert done.stdout.count("trained 2 steps") == 1  # process 0 alone reports

    # Each process's batch, trained alone in this process: process 0's streams, then process 1's.
    train(load_recipe(recipe_path, [f"workdir={tmp_path / 'rank0'}"]), progress=False)
    real_step_random = loop.StepRandom
    monkeypatch.setattr(loop, "StepRandom", lambda seed, step, micro=0, process=0: real_step_random(seed, step, micro, 1))
    train(load_recipe(recipe_path, [f"workdir={tmp_path / 'rank1'}"]), progress=False)

    def first_moments(workdir: Path) -> list[torch.Tensor]:
        optimizer = load_checkpoint(workdir / "train" / "checkpoints" / "step-000001").optimizer
        return [entry["exp_avg"] for _, entry in sorted(optimizer["state"].items())]

    both, alone0, alone1 = first_moments(tmp_path / "run"), first_moments(tmp_path / "rank0"), first_moments(tmp_path / "rank1")
    assert len(both) == len(alone0) == len(alone1) > 0
    for pair, a, b in zip(both, alone0, alone1):
        assert torch.allclose(pair, (a + b) / 2, rtol=1e-4, atol=1e-9)  # the mean gradient of both batches
    assert max(float((a - b).abs().max()) for a, b in zip(alone0, alone1)) > 1e-6  # the batches differ
    assert max(float((p - a).abs().max()) for p, a in zip(both, alone0)) > 1e-6  # not process 0's alone


def test_train_help_has_an_example():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "Example: fairsynth train --config" in result.output and "--resume" in result.output


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.resolution=[20]", "multiples of 8"),
        ("train.method=nope", "unknown method 'nope'"),
        ("train.split=test", "no records in split 'test'"),
        ("train.data=nowhere/metadata.jsonl", "run `fairsynth prepare` first"),
    ],
)
def test_bad_input_exits_2_with_one_message(tmp_path, tiny_base, override, needle):
    manifest = make_prepared(tmp_path / "prepared", n_train=2, n_val=0, size=16)
    recipe_path = _write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", tiny_base, manifest, steps=1)
    result = CliRunner().invoke(app, ["train", "--config", str(recipe_path), override])
    assert result.exit_code == 2
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "train" / "checkpoints").exists()
