"""Precision, recall, density and coverage shell."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.prdc import pairwise_distances, prdc, prdc_from_distances


@METRICS.register("prdc", help="precision & density (fidelity), recall & coverage (diversity) from k-NN balls (k = 3)")
class PrecisionRecallDensityCoverage(Metric):
    """Naeem et al. 2020's four k-NN manifold values.

    Args:
        k: neighbourhood size of the balls.
    """

    name = "prdc"
    display = "PRDC"
    higher_is_better = {"precision": True, "recall": True, "density": True, "coverage": True}
    ranges = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, float("inf")), "coverage": (0.0, 1.0)}
    default_extractor = "inception"

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.formula = (
            f"k-NN balls with k = {k} (k-th nearest other image), Euclidean, strict '<' (prdc package convention)"
        )

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return prdc(real, synthetic, self.k)

    def replicate_state(self, real: Tensor | None, synthetic: Tensor) -> Any:
        return (
            pairwise_distances(real, real).float(),
            pairwise_distances(synthetic, synthetic).float(),
            pairwise_distances(real, synthetic).float(),
        )

    def statistic_from_resample(self, state, real, synthetic, real_index, synthetic_index) -> dict[str, float]:
        d_rr, d_ss, d_rs = state
        r, s = real_index, synthetic_index
        return prdc_from_distances(d_rr[r][:, r], d_ss[s][:, s], d_rs[r][:, s], self.k)

    def min_images(self, min_group_size: int) -> int:
        return max(min_group_size, self.k + 1)

    @classmethod
    def from_config(cls, cfg) -> "PrecisionRecallDensityCoverage":
        return cls(k=cfg.prdc_k)
