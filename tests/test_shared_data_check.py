"""The tests of the real metadata in ../shared/data say how many ran and skipped, and fail CI
(FAIRSYNTH_REQUIRE_SHARED_DATA=1) when the folder is absent or every one of them skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READING = '''
def test_reads(shared_data):
    assert shared_data.name == "data"
'''
SKIPPING = '''
import pytest

def test_reads(shared_data):
    pytest.skip("nothing to read here")
'''


def _session(root: Path, test: str, require: bool) -> subprocess.CompletedProcess:
    """A pytest session in a copy of the test package at ``root/repo`` (so ``root/shared`` is its ../shared)."""
    tests = root / "repo" / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "conftest.py", "helpers.py"):
        shutil.copy(REPO / "tests" / name, tests / name)
    (tests / "test_one.py").write_text(test)
    env = {k: v for k, v in os.environ.items() if k != "FAIRSYNTH_REQUIRE_SHARED_DATA"}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "repo"), str(REPO / "src")])
    if require:
        env["FAIRSYNTH_REQUIRE_SHARED_DATA"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root / "repo",
                          env=env, capture_output=True, text=True, timeout=300)


def test_absent_folder_is_said_and_fails_where_required(tmp_path):
    quiet = _session(tmp_path, READING, require=False)
    assert quiet.returncode == 0, quiet.stdout[-2000:]
    assert f"real dataset metadata ({tmp_path / 'shared' / 'data'}): 0 test(s) read it, 1 skipped: the folder" in quiet.stdout
    required = _session(tmp_path, READING, require=True)
    assert required.returncode == 1 and "FAIRSYNTH_REQUIRE_SHARED_DATA=1 requires it" in required.stdout


def test_present_folder_counts_and_every_test_skipped_fails_where_required(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    read = _session(tmp_path, READING, require=True)
    assert read.returncode == 0 and "1 test(s) read it, 0 skipped" in read.stdout, read.stdout[-2000:]
    skipped = _session(tmp_path, SKIPPING, require=True)
    assert skipped.returncode == 1, skipped.stdout[-2000:]
    assert "0 test(s) read it, 1 skipped" in skipped.stdout and "every test of the real metadata was skipped" in skipped.stdout
