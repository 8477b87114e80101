"""CMMD shell: the MMD distance of Jayasumana et al. (CVPR 2024) on any extractor's embeddings."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.bootstrap import index_counts
from fairsynth.metrics.functional.cmmd import (
    CMMD_SCALE,
    CMMD_SIGMA,
    ESTIMATORS,
    cmmd,
    cmmd_from_counts,
    cmmd_kernels,
)

#: The features CMMD is defined on; on any other extractor the value is labelled with its features.
REFERENCE_EXTRACTOR = "clip-l14-336"


@METRICS.register(
    "cmmd",
    help="CMMD: MMD² with a Gaussian RBF kernel (σ = 10) on L2-normalised CLIP ViT-L/14@336 embeddings, × 1000 "
    "(Jayasumana et al. 2024; minimum-variance estimator, `unbiased` as an option); lower is better",
)
class CMMD(Metric):
    """CMMD between real and synthetic embeddings, overall and per group.

    Args:
        sigma: bandwidth of the Gaussian kernel (the paper: 10).
        estimator: ``biased`` — the reference's minimum-variance estimator, means over all pairs
            with the diagonal (≥ 0, positive bias of order 1/n); ``unbiased`` — diagonals left out
            (centred on the true value, can be < 0), reported as ``cmmd_unbiased``.
    """

    name = "cmmd"
    display = "CMMD"
    default_extractor = REFERENCE_EXTRACTOR

    def __init__(self, sigma: float = CMMD_SIGMA, estimator: str = "biased") -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown CMMD estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
        if not sigma > 0:
            raise ValueError(f"the CMMD bandwidth sigma must be > 0, got {sigma}")
        self.sigma, self.estimator = float(sigma), estimator
        self.value_name = "cmmd" if estimator == "biased" else "cmmd_unbiased"
        self.higher_is_better = {self.value_name: False}
        low = 0.0 if estimator == "biased" else float("-inf")
        self.ranges = {self.value_name: (low, float("inf"))}
        pairs = "all pairs, diagonal included (minimum-variance, biased)" if estimator == "biased" else (
            "pairs of distinct images within a set (unbiased; can be < 0)")
        self.formula = (
            f"{CMMD_SCALE:g} * MMD^2 with k(x,y) = exp(-|x-y|^2 / (2 sigma^2)), sigma = {self.sigma:g}, on L2-normalised "
            f"embeddings; kernel means over {pairs}; interval from bootstrap replicates of the same estimator"
        )

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {self.value_name: cmmd(real, synthetic, sigma=self.sigma, estimator=self.estimator)}

    def replicate_state(self, real: Tensor | None, synthetic: Tensor) -> Any:
        return cmmd_kernels(real, synthetic, self.sigma)

    def statistic_from_resample(self, state, real, synthetic, real_index, synthetic_index) -> dict[str, float]:
        k_rr, k_ss, k_rs = state
        counts_real = index_counts(real_index, k_rr.shape[0])
        counts_synthetic = index_counts(synthetic_index, k_ss.shape[0])
        return {self.value_name: cmmd_from_counts(k_rr, k_ss, k_rs, counts_real, counts_synthetic, self.estimator)}

    def min_images(self, min_group_size: int) -> int:
        return max(min_group_size, 2)

    def display_name(self, extractor: str) -> str:
        name = "CMMD" if self.estimator == "biased" else "CMMD (unbiased)"
        if extractor == REFERENCE_EXTRACTOR:
            return name
        # the same distance on other embeddings is not the paper's CMMD: the label says whose features
        return f"{name} on {extractor} features"

    def details(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma, "scale": CMMD_SCALE, "estimator": self.estimator, "embeddings": "L2-normalised",
            "reference_features": f"{REFERENCE_EXTRACTOR} (CLIP ViT-L/14@336, OpenAI weights)",
            "reference": "Jayasumana et al., Rethinking FID: Towards a Better Evaluation Metric for Image Generation, CVPR 2024",
        }

    @classmethod
    def from_config(cls, cfg) -> "CMMD":
        return cls(sigma=cfg.cmmd_sigma, estimator=cfg.cmmd_estimator)
