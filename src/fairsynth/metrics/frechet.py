"""Fréchet distance shell: FID on Inception features, FD-DINOv2 on DINOv2 features."""

from __future__ import annotations

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.frechet import frechet_distance


@METRICS.register("fd", help="Fréchet distance (FID with inception, FD-DINOv2 with dinov2); lower is better")
class FrechetDistance(Metric):
    """Fréchet distance between Gaussians fitted to real and synthetic features."""

    name = "fd"
    higher_is_better = {"fd": False}
    ranges = {"fd": (0.0, float("inf"))}
    default_extractor = "inception"
    formula = "|mu_r - mu_s|^2 + tr(S_r + S_s - 2 (S_r S_s)^1/2), trace term from eigenvalues, float64, clamped at 0"

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {"fd": frechet_distance(real, synthetic)}

    def display_name(self, extractor: str) -> str:
        return {"inception": "FID", "dinov2": "FD-DINOv2"}.get(extractor, f"FD ({extractor})")
