"""Images from tiny pipelines, to check that an export loads back into a fresh one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fairsynth.methods.base import Components
from fairsynth.models.architectures import build_pipeline, tiny_sd_components, tiny_sdxl_components

PROMPT = "a photo of melanoma"


def images(pipe: Any) -> np.ndarray:
    """Two denoising steps at 16 px from a fixed generator: (1, 16, 16, 3) in [0, 1]."""
    return pipe(
        PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
        output_type="np", height=16, width=16,
    ).images


def fresh_pipeline(kind: str) -> Any:
    """The untouched tiny base (same seed as the components training started from)."""
    return build_pipeline(tiny_sd_components(0) if kind == "sd" else tiny_sdxl_components(0))


def trained_pipeline(components: Components, raw: dict[str, Any]) -> Any:
    """The pipeline of the trained components, adapters active, in eval mode."""
    for module in components.modules().values():
        module.eval()
    return build_pipeline(raw)


@pytest.fixture
def one_thread():
    """Run tiny models on one intra-op thread: for 8x8 feature maps the OpenMP hand-off costs
    more than it saves (about 7x per convolution on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
