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
