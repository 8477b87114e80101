"""Fixtures of the world tests."""

from __future__ import annotations

import pytest
import torch

from fairsynth.world.judge import JudgeConfig, train_judge


@pytest.fixture(scope="session")
def small_judge():
    """A judge trained on 480 images (about 8 s of one core); one thread so a busy machine doesn't thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return train_judge(JudgeConfig(n_train=480, n_held_out=120, epochs=6, batch_size=32, seed=0))
    finally:
        torch.set_num_threads(threads)
