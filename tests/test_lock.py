"""One writer per study: a second writer stops naming the first; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairsynth import lock
from fairsynth.cli import EXIT_LOCKED, app
from fairsynth.lock import LOCK_NAME, StudyLocked, acquire, hold, release
from tests.helpers import SUBPROCESS_ENV

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

HOLDER = """
import sys, time
from fairsynth.lock import acquire
acquire(sys.argv[1], name=sys.argv[2], command="fairsynth run recipes/derm.yaml")
print("held", flush=True)
time.sleep(120)
"""


def _env() -> dict[str, str]:
    return {**os.environ, **SUBPROCESS_ENV, "PYTHONPATH": str(REPO / "src")}


@contextmanager
def held_elsewhere(folder: Path, name: str = LOCK_NAME):
    """Another process holding ``folder``'s lock while the block runs; yields its pid."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name], stdout=subprocess.PIPE, text=True,
                               env=_env())
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_names_its_holder_and_is_gone_when_released(tmp_path):
    path = acquire(tmp_path / "study", command="fairsynth prepare --config r.yaml")
    try:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "fairsynth prepare --config r.yaml" and holder["started"]
        assert acquire(tmp_path / "study") == path  # re-entrant within the process
        release(path)
        assert path.exists()  # still held by the outer acquisition
    finally:
        release(path)
    assert not path.exists()


def test_a_second_writer_stops_naming_the_first(tmp_path):
    study = tmp_path / "study"
    with held_elsewhere(study) as holder:
        with pytest.raises(StudyLocked) as caught:
            acquire(study)
        message = str(caught.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "`fairsynth run recipes/derm.yaml`" in message and str(study / LOCK_NAME) in message
        assert caught.value.holder.pid == holder.pid
    with hold(study) as path:  # free again once the holder has gone
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_dead_holders_lock_is_taken_over_and_says_so(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    pid = dead_pid()
    (study / LOCK_NAME).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "command": "fairsynth train -c r.yaml", "started": "2025-01-01T00:00:00"}
    ))
    said: list[str] = []
    with hold(study, log=said.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"pid {pid}" in said[0] and "no longer running" in said[0]
    assert "`fairsynth train -c r.yaml`" in said[0]


def test_a_holder_killed_with_sigkill_leaves_a_lock_that_is_taken_over(tmp_path):
    study = tmp_path / "study"
    with held_elsewhere(study) as holder:
        pid = holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((study / LOCK_NAME).read_text())["pid"] == pid  # the file outlived its holder
    said: list[str] = []
    with hold(study, log=said.append):
        pass
    assert said and f"pid {pid}" in said[0]


def test_a_reused_pid_does_not_keep_a_dead_holders_lock(tmp_path):
    """The pid in the file now belongs to another process (ours here): its start time tells them apart."""
    if lock._start_ticks(os.getppid()) is None:
        pytest.skip("no /proc: process start times cannot be read on this system")
    study = tmp_path / "study"
    study.mkdir()
    parent = os.getppid()
    (study / LOCK_NAME).write_text(json.dumps({
        "pid": parent, "host": socket.gethostname(), "command": "fairsynth run r.yaml", "started": "?",
        "start_ticks": lock._start_ticks(parent) + 1,
    }))
    said: list[str] = []
    with hold(study, log=said.append):
        pass
    assert said and f"pid {parent}" in said[0]
    (study / LOCK_NAME).write_text(json.dumps({  # the same process still running: its lock holds
        "pid": parent, "host": socket.gethostname(), "command": "fairsynth run r.yaml", "started": "?",
        "start_ticks": lock._start_ticks(parent),
    }))
    with pytest.raises(StudyLocked, match=f"pid {parent}"):
        acquire(study)


def test_a_lock_from_another_host_is_not_taken(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / LOCK_NAME).write_text(json.dumps({"pid": 1234, "host": "elsewhere", "command": "fairsynth run r.yaml",
                                               "started": "?"}))
    with pytest.raises(StudyLocked, match="on host elsewhere.*another host.*delete the lock file"):
        acquire(study)


def test_processes_other_than_the_first_of_a_launch_never_touch_the_lock(tmp_path, monkeypatch):
    study = tmp_path / "study"
    with held_elsewhere(study):
        monkeypatch.setenv("RANK", "1")
        assert acquire(study) is None
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(StudyLocked):
            acquire(study)


def test_writers_starting_together_have_one_winner(tmp_path):
    study = tmp_path / "study"
    racer = (
        "import sys, time\nfrom fairsynth.lock import acquire, StudyLocked\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "try:\n    acquire(sys.argv[1]); print('won', flush=True); time.sleep(3)\n"
        "except StudyLocked:\n    print('lost', flush=True)\n"
    )
    start = time.time() + 2.0
    racers = [subprocess.Popen([sys.executable, "-c", racer, str(study), str(start)], stdout=subprocess.PIPE, text=True,
                               env=_env()) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert outcomes == ["lost", "lost", "lost", "won"]


def _recipe(tmp_path: Path, **sections) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "locked", "workdir": str(tmp_path / "study"), **sections}))
    return recipe


def test_a_second_fairsynth_command_on_a_busy_study_exits_naming_the_holder(tmp_path):
    recipe = _recipe(tmp_path, data={"reader": "imagefolder", "path": str(tmp_path / "nowhere")})
    with held_elsewhere(tmp_path / "study") as holder:
        for command in (["prepare", "--config", str(recipe)], ["run", str(recipe)],
                        ["train", "--config", str(recipe)], ["downstream", "compare", "--config", str(recipe)],
                        ["generate", "--config", str(recipe)], ["evaluate", "--config", str(recipe)],
                        ["filter", "--config", str(recipe)], ["report", str(tmp_path / "study")],
                        ["downstream", "curve", "--config", str(recipe)], ["downstream", "ablate", "--config", str(recipe)]):
            result = runner.invoke(app, command)
            assert result.exit_code == EXIT_LOCKED, (command, result.output)
            assert f"pid {holder.pid}" in result.output and "fairsynth run recipes/derm.yaml" in result.output
        assert not (tmp_path / "study" / "prepared").exists()
        dry = runner.invoke(app, ["run", str(recipe), "--dry-run"])  # reads only: no lock needed
        assert "being written" not in dry.output


def test_the_commands_lock_is_released_when_it_ends(tmp_path):
    recipe = _recipe(tmp_path, data={"reader": "imagefolder", "path": str(tmp_path / "nowhere")})
    result = runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert result.exit_code != 0 and "does not exist" in result.output  # it failed, after taking the lock
    assert (tmp_path / "study").is_dir() and not (tmp_path / "study" / LOCK_NAME).exists()
    assert lock._held == {}


def test_a_command_writing_outside_the_workdir_does_not_create_it(tmp_path):
    recipe = _recipe(tmp_path, data={"reader": "imagefolder", "path": str(tmp_path / "nowhere")},
                     prepare={"output": str(tmp_path / "elsewhere")})
    runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert not (tmp_path / "study").exists()


def test_training_holds_its_output_folder(tmp_path):
    """`fairsynth train` alone, or two recipes sharing a train.output: the folder's own lock."""
    from fairsynth.recipe import load_recipe
    from fairsynth.training.loop import train

    output = tmp_path / "shared-train"
    recipe = load_recipe(None, [f"workdir={tmp_path / 'other-study'}", f"train.output={output}"])
    with held_elsewhere(output) as holder:
        with pytest.raises(StudyLocked, match=f"pid {holder.pid}"):
            train(recipe)
    assert not (output / "checkpoints").exists()


def test_generation_holds_its_output_folder(tmp_path):
    from fairsynth.generation.writer import LOCK_FILE, STATE, OutputFolder

    folder = OutputFolder(tmp_path / "generated")
    with held_elsewhere(folder.state, LOCK_FILE) as holder:
        with pytest.raises(StudyLocked, match=f"pid {holder.pid}"):
            folder.open({"seed": 0})
    assert folder.open({"seed": 0}) is False
    assert (tmp_path / "generated" / STATE / LOCK_FILE).is_file()
    folder.release()
    assert not (tmp_path / "generated" / STATE / LOCK_FILE).exists()
