"""A tiny convolutional network with seeded random weights — for tests and benchmarks only.

Its features carry some image statistics (colour, coarse texture), enough for metrics to
tell a set from a shifted one in tests, and nothing about image quality. Every result
computed from it carries a RANDOM WEIGHTS warning (``test_only``).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from fairsynth.metrics.extractors import EXTRACTORS
from fairsynth.metrics.extractors.base import Extractor


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32) / 127.5 - 1.0  # (B, 3, 32, 32)
        x = torch.relu(self.conv1(x))  # (B, 16, 16, 16)
        x = torch.relu(self.conv2(x))  # (B, 32, 8, 8)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 64)


@EXTRACTORS.register("random", help="TESTS ONLY: tiny network with seeded random weights (32 px, 64-d); labelled in every output")
class RandomExtractor(Extractor):
    """Tiny seeded random network; its numbers mean nothing."""

    name = "random"
    input_size = (32, 32)
    feature_dim = 64
    test_only = True
    implementation = "fairsynth tiny random CNN (2 conv layers, mean+max pooled, seed 0) — not a real feature extractor"

    def __init__(self, weights: str | None = None, device: str = "cpu", download: bool = True, seed: int = 0) -> None:
        super().__init__(weights=None, device=device, download=download)
        if weights:
            raise TypeError("the random extractor takes no weights file")
        self.seed = seed

    def options(self) -> dict:
        return {"seed": self.seed}

    def build(self, weights_path: str | None) -> nn.Module:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            net = _TinyNet()
        finally:
            torch.random.set_rng_state(generator_state)
        return net

    def embed(self, model: nn.Module, images: Tensor) -> Tensor:
        return model(images)

    def encode_text(self, prompts: list[str], batch_size: int = 64) -> Tensor:
        """A pseudo-embedding ``(N, 64)`` per prompt, seeded by its text (exercises the CLIP-score path)."""
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:7], "little")
            rows.append(torch.randn(self.feature_dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows) if rows else torch.zeros(0, self.feature_dim)
