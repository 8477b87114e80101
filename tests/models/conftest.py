"""Tiny seeded pipelines shared by the model tests (built once per session, a second each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fairsynth.models.architectures import build_pipeline, tiny_sd_components, tiny_sdxl_components

PROMPT = "a dermoscopic photo of a nevus"


def _generate(pipe, seed: int = 0) -> np.ndarray:
    """Two denoising steps at 32x32 with a fixed generator; (1, 32, 32, 3) floats in [0, 1]."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared CPU two spinning OpenMP threads
    per process make these tests several times slower; restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def generate():
    """``generate(pipe, seed=0)``: two denoising steps at 32x32 with a fixed generator."""
    return _generate


@pytest.fixture(scope="session")
def tiny_sd():
    return build_pipeline(tiny_sd_components(seed=0))


@pytest.fixture(scope="session")
def tiny_sdxl():
    return build_pipeline(tiny_sdxl_components(seed=0))


@pytest.fixture(scope="session")
def tiny_sd_folder(tiny_sd, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sd") / "pipeline"
    tiny_sd.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl_folder(tiny_sdxl, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sdxl") / "pipeline"
    tiny_sdxl.save_pretrained(folder)
    return folder
