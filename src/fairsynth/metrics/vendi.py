"""Vendi score shell."""

from __future__ import annotations

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.vendi import vendi_score


@METRICS.register("vendi", help="Vendi score: effective number of distinct images in a set (cosine kernel); higher = more varied")
class VendiScore(Metric):
    """exp of the order-q entropy of the eigenvalues of K/n.

    Args:
        q: order of the Rényi entropy (1: Shannon).
    """

    name = "vendi"
    display = "Vendi"
    kind = "set"
    higher_is_better = {"vendi": True}
    ranges = {"vendi": (1.0, float("inf"))}
    default_extractor = "dinov2"
    needs_real_rows = False

    def __init__(self, q: float = 1.0) -> None:
        super().__init__()
        self.q = q
        self.formula = f"exp(H_q(eigenvalues of K/n)), q = {q}, K = cosine similarity of features; grows with n"

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {"vendi": vendi_score(synthetic, q=self.q)}

    def min_images(self, min_group_size: int) -> int:
        return max(min_group_size, 2)

    @classmethod
    def from_config(cls, cfg) -> "VendiScore":
        return cls(q=cfg.vendi_q)
