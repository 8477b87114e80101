"""The metric contract: a thin stateful shell over a pure functional core (torchmetrics' habit).

A shell collects features with :meth:`Metric.update` and computes with :meth:`Metric.compute`,
both of which only call :mod:`fairsynth.metrics.functional`. It declares, per value it returns,
whether higher is better (``None``: a descriptive number), the value's range, the extractor it
uses unless told otherwise, and the formula in words. Evaluation uses the same shell through
three hooks, so that per-group values and bootstrap replicates go through the same code as the
overall value:

- :meth:`prepare`, once on all rows: turns features into what groups are cut from (identity for
  most metrics; per-image prompt similarity for the CLIP score, per-image nearest-training-image
  distance for memorisation);
- :meth:`statistic`, on one group's rows (or one resample);
- :meth:`replicate_state` / :meth:`statistic_from_resample`, optional: precompute what makes a
  bootstrap replicate cheap (kernel or distance matrices).

Two kinds: ``pair`` metrics compare real with synthetic rows (FID, KID, PRDC); ``set`` metrics
describe one set (Vendi, diversity, CLIP score) and are computed on each set evaluation asks for.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor



class Metric:
    """Base class of every registered metric shell."""

    #: Registry name.
    name: ClassVar[str] = ""
    #: Name shown to people.
    display: ClassVar[str] = ""
    #: ``pair``: real vs synthetic; ``set``: one set at a time.
    kind: ClassVar[Literal["pair", "set"]] = "pair"
    #: Per value: True = higher is better, False = lower is better, None = descriptive.
    higher_is_better: ClassVar[dict[str, bool | None]] = {}
    #: Per value: the range intervals are clipped to.
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    #: Extractor used unless the evaluation names another.
    default_extractor: ClassVar[str] = "inception"
    #: Whether per-group values need the group's real rows (False: real rows, if any, are a fixed reference).
    needs_real_rows: ClassVar[bool] = True
    #: Needs each image's prompt embedded by the same extractor (CLIP score).
    needs_prompts: ClassVar[bool] = False
    #: Compares synthetic images with the *training* images rather than the evaluation's real ones.
    uses_training_images: ClassVar[bool] = False
    #: The formula in words, recorded with every value.
    formula: ClassVar[str] = ""
    #: Sets a ``set`` metric is computed on by default.
    default_sets: ClassVar[tuple[str, ...]] = ("synthetic", "real")

    def __init__(self) -> None:
        self.reset()

    # -- the stateful shell ------------------------------------------------------------

    def reset(self) -> None:
        self._real: list[Tensor] = []
        self._synthetic: list[Tensor] = []
        self._prompts: list[Tensor] = []

    def update(self, features: Tensor, real: bool = False, prompts: Tensor | None = None) -> None:
        """Add features ``(B, d)`` of real (``real=True``) or synthetic images; ``set`` metrics
        use the synthetic slot. ``prompts``: matching prompt embeddings where the metric needs them."""
        if features.ndim != 2:
            raise ValueError(f"{self.name}: features must be (N, d), got {tuple(features.shape)}")
        (self._real if real else self._synthetic).append(features.detach().cpu())
        if prompts is not None:
            self._prompts.append(prompts.detach().cpu())

    def compute(self) -> dict[str, float]:
        real = torch.cat(self._real) if self._real else None
        synthetic = torch.cat(self._synthetic) if self._synthetic else None
        if synthetic is None:
            raise ValueError(f"{self.name}: no synthetic features were given")
        prompts = torch.cat(self._prompts) if self._prompts else None
        real_rows, synthetic_rows = self.prepare(real, synthetic, prompts)
        return self.statistic(real_rows, synthetic_rows)

    # -- hooks used by evaluation ----------------------------------------------------

    def prepare(self, real: Tensor | None, synthetic: Tensor, prompts: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """Rows groups are cut from, computed once on all images (default: the features)."""
        return real, synthetic

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        """Values on one group's rows."""
        raise NotImplementedError

    def replicate_state(self, real: Tensor | None, synthetic: Tensor) -> Any:
        """Anything precomputed once per group to make bootstrap replicates cheap."""
        return None

    def statistic_from_resample(
        self, state: Any, real: Tensor | None, synthetic: Tensor, real_index: Tensor | None, synthetic_index: Tensor
    ) -> dict[str, float]:
        """Values on a resample given as row indices (default: index the rows and recompute)."""
        real_rows = real[real_index] if real is not None and real_index is not None else real
        return self.statistic(real_rows, synthetic[synthetic_index])

    def min_images(self, min_group_size: int) -> int:
        """Fewest images per set for a defined value."""
        return min_group_size

    def display_name(self, extractor: str) -> str:
        return f"{self.display or self.name} ({extractor})"

    def details(self) -> dict[str, Any]:
        """Extra facts recorded once per evaluation (thresholds, reference sizes)."""
        return {}

    @classmethod
    def from_config(cls, cfg: Any) -> "Metric":
        """The shell configured from an :class:`~fairsynth.metrics.config.EvaluateConfig`."""
        return cls()
