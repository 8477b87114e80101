from __future__ import annotations

import os

import pytest

from fairsynth.io import UnsafePathError, atomic_write_text, resolve_inside, staged_dir


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    class Boom(Exception):
        pass

    from fairsynth.io import atomic_open

    with pytest.raises(Boom):
        with atomic_open(target) as handle:
            handle.write("half")
            raise Boom
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_staged_dir_swaps_in_only_when_complete(tmp_path):
    target = tmp_path / "out"
    with staged_dir(target) as stage:
        (stage / "x").write_text("1")
        assert not target.exists()
    assert (target / "x").read_text() == "1"
    with pytest.raises(RuntimeError):
        with staged_dir(target) as stage:
            (stage / "y").write_text("2")
            raise RuntimeError
    assert sorted(os.listdir(target)) == ["x"]  # the previous complete version stands


def test_resumable_staged_dir_keeps_finished_work(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(target, resume=True) as stage:
            (stage / "done").write_text("1")
            raise RuntimeError
    with staged_dir(target, resume=True) as stage:
        assert (stage / "done").exists()
    assert (target / "done").exists()


def test_resolve_inside(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    for bad in ("../x.png", "/etc/passwd", "a/../../x"):
        with pytest.raises(UnsafePathError):
            resolve_inside(tmp_path, bad)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    """mkstemp makes owner-only files; outputs others read (a report, a manifest) must not be."""
    import fairsynth.io
    from fairsynth.io import atomic_write_text

    atomic_write_text(tmp_path / "shared.txt", "x")
    (tmp_path / "plain.txt").write_text("x")  # open() under the same umask
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o666 & ~fairsynth.io._UMASK


def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    from fairsynth import io

    target = tmp_path / "a.txt"
    target.write_text("old")
    real_fsync = os.fsync

    def full(fd):  # the disk fills when the data is flushed to it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, "new")
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    message = io.disk_full_message(caught.value)
    assert str(target) in message and "MiB free" in message and "run the same command again" in message


def test_a_full_disk_stops_any_command_with_one_message_and_exit_3(tmp_path, tiny_fitz):
    """The crash point makes the third write of `fairsynth prepare` fail as on a full disk."""
    import json
    import subprocess
    import sys

    from tests.helpers import SUBPROCESS_ENV

    csv, images, _ = tiny_fitz
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "data": {"reader": "fitzpatrick17k", "path": str(csv), "images": str(images)},
        "prepare": {"output": str(tmp_path / "prepared"), "resolution": [32], "estimate_fst": False,
                    "split": {"stratify": []}},
    }))
    env = {**os.environ, **SUBPROCESS_ENV, "FAIRSYNTH_CRASH_AT": "enospc:write#3"}
    done = subprocess.run([sys.executable, "-m", "fairsynth.cli", "prepare", "--config", str(recipe)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "error: the disk is full while writing" in done.stderr
    partial = tmp_path / ".prepared.partial"
    assert str(partial / "images") in done.stderr
    assert not (tmp_path / "prepared").exists()  # nothing published
    assert len(list((partial / "images").iterdir())) == 2  # the two finished images, no temporary file


def test_safetensors_metadata_comes_out_in_one_order_whatever_process_wrote_it(tmp_path):
    """safetensors writes its metadata from a hash map, in another order in every process: the
    canonical form gives one sha256 for the same tensors and metadata, and still loads."""
    import subprocess
    import sys

    from safetensors import safe_open
    from safetensors.torch import load_file

    from tests.helpers import SUBPROCESS_ENV

    script = (
        "import hashlib, sys, torch\n"
        "from safetensors.torch import save\n"
        "from fairsynth.io import canonical_safetensors\n"
        "data = save({'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(2)},"
        " metadata={'arm': 'mixed', 'seed': '0', 'format': 'pt', 'note': 'ü'})\n"
        "sys.stdout.buffer.write(canonical_safetensors(data))\n"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, **SUBPROCESS_ENV}, capture_output=True,
                       check=True, timeout=120).stdout
        for _ in range(4)
    }
    assert len(outputs) == 1
    path = tmp_path / "w.safetensors"
    path.write_bytes(outputs.pop())
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"arm": "mixed", "format": "pt", "note": "ü", "seed": "0"}
    tensors = load_file(path)
    assert tensors["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and tensors["b"].tolist() == [1.0, 1.0]


def test_a_full_disk_while_appending_to_a_log_names_the_log(tmp_path):
    import errno

    from fairsynth.io import append_through

    class FullDisk:
        name = str(tmp_path / "losses.csv")

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    with pytest.raises(OSError) as caught:
        append_through(FullDisk(), "10,0.5,0.001\n")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "losses.csv")


def test_temporaries_a_kill_left_are_removed_and_nothing_else(tmp_path):
    from fairsynth.io import remove_temporaries

    (tmp_path / "run" / "seed-0").mkdir(parents=True)
    left = [tmp_path / ".compare.json.k2j4_x.tmp", tmp_path / "run" / "seed-0" / ".metrics.json.a8b.tmp"]
    kept = [tmp_path / "compare.json", tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "run" / "seed-0" / "model.safetensors"]
    for path in left + kept:
        path.write_text("x")
    assert remove_temporaries(tmp_path, recursive=False) == 1 and left[1].exists()
    assert remove_temporaries(tmp_path) == 1
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)
    assert remove_temporaries(tmp_path / "absent") == 0


def test_a_resumed_staged_dir_drops_the_writes_the_kill_interrupted(tmp_path):
    target = tmp_path / "prepared"
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(target, resume=True) as staging:
            (staging / "done.png").write_text("complete")
            (staging / ".metadata.jsonl.x1y2.tmp").write_text("half")  # as a kill leaves it
            raise KeyboardInterrupt
    with staged_dir(target, resume=True) as staging:
        assert sorted(p.name for p in staging.iterdir()) == ["done.png"]
    assert sorted(p.name for p in target.iterdir()) == ["done.png"]
