"""CLIP score shell: images against the prompts that made them."""

from __future__ import annotations

from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.clip_score import FORMULAS, clip_score_from_cosine, cosine_similarity


@METRICS.register("clip_score", help="CLIP score of each image against its caption (the prompt); formula recorded")
class CLIPScore(Metric):
    """CLIP score with a recorded formula.

    Args:
        formula: ``torchmetrics`` (max(100·mean cos, 0)) or ``hessel`` (mean 2.5·max(cos, 0)).
    """

    name = "clip_score"
    display = "CLIP score"
    kind = "set"
    higher_is_better = {"clip_score": True}
    ranges = {"clip_score": (0.0, 100.0)}
    default_extractor = "clip"
    needs_real_rows = False
    needs_prompts = True
    default_sets = ("synthetic",)

    def __init__(self, formula: str = "torchmetrics") -> None:
        super().__init__()
        if formula not in FORMULAS:
            raise ValueError(f"unknown CLIP score formula {formula!r}; use one of {', '.join(FORMULAS)}")
        self.clip_formula = formula
        self.formula = FORMULAS[formula]

    def prepare(self, real, synthetic, prompts=None):
        if prompts is None:
            raise ValueError("the CLIP score needs each image's prompt")
        return real, cosine_similarity(synthetic, prompts)[:, None]  # (N, 1): per-image cos

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        return {"clip_score": clip_score_from_cosine(synthetic[:, 0], self.clip_formula)}

    @classmethod
    def from_config(cls, cfg) -> "CLIPScore":
        return cls(formula=cfg.clip_score_formula)
