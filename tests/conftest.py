"""Shared fixtures: small datasets made in the test, and the real metadata files in ../shared/data.

Two switches, both set by `.ci/run`:

* ``FAIRSYNTH_RUN_SLOW=1`` (or ``-m slow``) runs the tests marked ``slow``; otherwise they are
  skipped, and say how to run them;
* ``FAIRSYNTH_REQUIRE_SHARED_DATA=1`` makes the tests on ``../shared/data`` fail, not skip,
  when the folder is absent, and the session fail when every one of them was skipped.

The session ends with one line saying how many tests read the real metadata and how many
were skipped, and why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import fitz_rows, make_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: node id -> outcome ("passed", "failed", "skipped") of every test that reads ../shared/data.
_shared_data_tests: dict[str, str] = {}


def pytest_collection_modifyitems(config, items) -> None:
    expression = config.getoption("markexpr") or ""
    run_slow = os.environ.get("FAIRSYNTH_RUN_SLOW") == "1" or ("slow" in expression and "not slow" not in expression)
    skip_slow = pytest.mark.skip(reason="slow (minutes of CPU): python3 -m pytest -m slow runs it")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "shared_data" in getattr(item, "fixturenames", ()):
            _shared_data_tests[item.nodeid] = "not run"


def pytest_runtest_logreport(report) -> None:
    if report.nodeid not in _shared_data_tests:
        return
    if report.skipped or report.failed or report.when == "call":
        if _shared_data_tests[report.nodeid] in ("not run", "passed"):
            _shared_data_tests[report.nodeid] = report.outcome


def _shared_data_summary() -> tuple[str, bool]:
    """(one line on the tests of the real metadata, whether the session must fail for them)."""
    outcomes = [o for o in _shared_data_tests.values() if o != "not run"]
    if not outcomes:
        return "", False
    skipped = outcomes.count("skipped")
    why = "" if SHARED_DATA.is_dir() else f": the folder {SHARED_DATA} is absent"
    line = f"real dataset metadata ({SHARED_DATA}): {len(outcomes) - skipped} test(s) read it, {skipped} skipped{why}"
    required = os.environ.get("FAIRSYNTH_REQUIRE_SHARED_DATA") == "1"
    return line, required and skipped == len(outcomes)


def pytest_terminal_summary(terminalreporter) -> None:
    line, failing = _shared_data_summary()
    if line:
        terminalreporter.write_line(line, red=failing, yellow=not failing and "0 test(s) read" in line)
    if failing:
        terminalreporter.write_line("FAIRSYNTH_REQUIRE_SHARED_DATA=1: every test of the real metadata was skipped", red=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _shared_data_summary()[1] and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny models: one intra-op thread beats the OpenMP hand-off on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout: real public metadata files (no images)."""
    if not SHARED_DATA.is_dir():
        message = f"real dataset metadata folder {SHARED_DATA} is absent in this checkout"
        if os.environ.get("FAIRSYNTH_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{message}, and FAIRSYNTH_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def tiny_fitz(tmp_path: Path):
    """A 12-row Fitzpatrick17k-format dataset with valid 96 px JPEGs: (csv path, images dir, frame)."""
    frame = fitz_rows(12)
    images = tmp_path / "images"
    for i, md5 in enumerate(frame.md5hash):
        make_image(images / f"{md5}.jpg", seed=i)
    csv = tmp_path / "fitzpatrick17k.csv"
    frame.to_csv(csv, index=False)
    return csv, images, frame


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny SD-1.5-shaped pipeline (diffusers' dummy sizes, seed 0) saved once as a diffusers folder."""
    from fairsynth.models.architectures import build_pipeline, tiny_sd_components

    folder = tmp_path_factory.mktemp("tiny-sd")
    build_pipeline(tiny_sd_components(seed=0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl_base(tmp_path_factory) -> Path:
    """The tiny SDXL-shaped pipeline (two text encoders, text_time conditioning) saved once."""
    from fairsynth.models.architectures import build_pipeline, tiny_sdxl_components

    folder = tmp_path_factory.mktemp("tiny-sdxl")
    build_pipeline(tiny_sdxl_components(seed=0)).save_pretrained(folder)
    return folder
