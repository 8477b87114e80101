"""Every random number of a training step, from generators seeded by (run seed, step).

A step never reads a generator that outlives it: batch indices, caption dropout, the latent
sample, timesteps, noise and the method's own draws each come from a fresh
``torch.Generator`` seeded from ``(seed, step, micro-batch, process, stream)``. The data
position of a run is therefore just its step number, and a run resumed at step ``s`` draws
exactly what an uninterrupted run draws at step ``s``. The global torch RNG (which dropout
layers use) is reseeded the same way at the start of every step.

Streams are independent: turning caching on or off, or a method drawing more numbers,
never shifts the noise of the step.
"""

from __future__ import annotations

import hashlib

import torch

STREAMS = ("batch", "dropout", "latents", "timesteps", "noise", "offset", "method", "global")


def derived_seed(seed: int, step: int, stream: str, micro: int = 0, process: int = 0) -> int:
    """A 63-bit seed for one stream of one micro-batch of one step on one process."""
    key = f"fairsynth/{seed}/{step}/{micro}/{process}/{stream}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


class StepRandom:
    """The generators of one micro-batch: ``StepRandom(seed, step).generator("noise")``."""

    def __init__(self, seed: int, step: int, micro: int = 0, process: int = 0) -> None:
        self.seed, self.step, self.micro, self.process = seed, step, micro, process

    def generator(self, stream: str) -> torch.Generator:
        """A fresh CPU generator for ``stream`` (draw on the CPU, then move: same numbers on any device)."""
        if stream not in STREAMS:
            raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
        return torch.Generator().manual_seed(derived_seed(self.seed, self.step, stream, self.micro, self.process))

    def seed_global(self) -> None:
        """Reseed torch's global RNG (dropout, anything a library draws without a generator)."""
        torch.manual_seed(derived_seed(self.seed, self.step, "global", self.micro, self.process))
