"""Kernel Inception Distance shell."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.bootstrap import index_counts
from fairsynth.metrics.functional.kid import kernel_inception_distance, mmd2_unbiased_counts, polynomial_kernel


@METRICS.register("kid", help="Kernel Inception Distance (cubic polynomial kernel, unbiased MMD², mean over subsets); lower is better")
class KernelDistance(Metric):
    """KID: mean unbiased MMD² over random subsets.

    Args:
        subsets: number of random subsets.
        subset_size: largest subset size; the size used is ``min(subset_size, n_real, n_synthetic)``,
            so small groups are measured on all their images (and the size used is recorded).
        seed: seed of the subset draws.
    """

    name = "kid"
    display = "KID"
    higher_is_better = {"kid": False, "kid_subset_std": None, "kid_subset_size": None}
    default_extractor = "inception"
    formula = (
        "mean over subsets of unbiased MMD^2 with k(x,y) = (x.y/d + 1)^3; subset size = min(subset_size, n_real, "
        "n_synthetic); interval from bootstrap replicates of the full-sample unbiased MMD^2"
    )

    def __init__(self, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        size = min(self.subset_size, real.shape[0], synthetic.shape[0])
        mean, std = kernel_inception_distance(
            real, synthetic, subsets=self.subsets, subset_size=size,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return {"kid": mean, "kid_subset_std": std, "kid_subset_size": float(size)}

    def display_name(self, extractor: str) -> str:
        return "KID" if extractor == "inception" else f"KID ({extractor})"

    def replicate_state(self, real: Tensor | None, synthetic: Tensor) -> Any:
        return (
            polynomial_kernel(real, real),
            polynomial_kernel(synthetic, synthetic),
            polynomial_kernel(real, synthetic),
        )

    def statistic_from_resample(self, state, real, synthetic, real_index, synthetic_index) -> dict[str, float]:
        k_rr, k_ss, k_rs = state
        return {
            "kid": mmd2_unbiased_counts(
                k_rr, k_ss, k_rs, index_counts(real_index, k_rr.shape[0]), index_counts(synthetic_index, k_ss.shape[0])
            )
        }

    @classmethod
    def from_config(cls, cfg) -> "KernelDistance":
        return cls(subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed or 0)
