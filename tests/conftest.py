"""Shared fixtures: small datasets made in the test, and the real metadata files in ../shared/data.

Tests marked ``slow`` run with ``FAIRSYNTH_RUN_SLOW=1 python3 -m pytest -m slow`` (as `.ci/run`
does); without it they are skipped, and say how to run them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import fitz_rows, make_image

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items) -> None:
    if os.environ.get("FAIRSYNTH_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow (minutes of CPU): FAIRSYNTH_RUN_SLOW=1 python3 -m pytest -m slow runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


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
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real dataset metadata folder {path} is absent in this checkout")
    return path


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
