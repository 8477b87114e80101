"""Within-set diversity shells: CLIP intra-class diversity and LPIPS diversity."""

from __future__ import annotations

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.diversity import mean_pairwise_cosine_distance, mean_pairwise_squared_distance


@METRICS.register(
    "intra_class_diversity",
    help="mean pairwise cosine distance of CLIP image embeddings per group (FairSkin wants > 0.3 per class x skin type)",
)
class IntraClassDiversity(Metric):
    """1 − mean cosine similarity over pairs of distinct images of a set.

    Args:
        target: the value a (class, group) cell should exceed; recorded with each value.
    """

    name = "intra_class_diversity"
    display = "Intra-class diversity"
    kind = "set"
    higher_is_better = {"intra_class_diversity": True}
    ranges = {"intra_class_diversity": (0.0, 2.0)}
    default_extractor = "clip"
    needs_real_rows = False
    formula = "1 - mean_{i != j} cos(e_i, e_j) over the set's image embeddings"

    def __init__(self, target: float | None = 0.3) -> None:
        super().__init__()
        self.target = target

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {"intra_class_diversity": mean_pairwise_cosine_distance(synthetic)}

    def details(self) -> dict:
        return {"target": self.target, "target_rule": "value > target"}

    @classmethod
    def from_config(cls, cfg) -> "IntraClassDiversity":
        return cls(target=cfg.diversity_target)


@METRICS.register("lpips_diversity", help="mean pairwise LPIPS within a set (needs the lpips extractor); higher = more varied")
class LPIPSDiversity(Metric):
    """Mean LPIPS over all pairs of distinct images of a set, exact, from LPIPS embeddings."""

    name = "lpips_diversity"
    display = "LPIPS diversity"
    kind = "set"
    higher_is_better = {"lpips_diversity": True}
    ranges = {"lpips_diversity": (0.0, float("inf"))}
    default_extractor = "lpips"
    needs_real_rows = False
    formula = "mean_{i != j} LPIPS(x_i, x_j) = 2/(n-1) sum_i |phi_i - mean phi|^2 over LPIPS embeddings phi"

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {"lpips_diversity": mean_pairwise_squared_distance(synthetic)}
