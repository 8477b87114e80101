"""Bootstrap confidence intervals for any statistic of one or two image sets.

Each replicate resamples the images of every set with replacement, independently per set
(Efron & Tibshirani 1993, Ch. 6), and recomputes the statistic. Two intervals are offered:

- ``normal`` (default): estimate ± z · SE, SE = standard deviation of the replicates
  (Efron & Tibshirani Eq. 13.3-13.4). Several of our statistics depend on how many *distinct*
  images a set holds (FID's bias grows as 1/N, Vendi counts distinct images, k-NN balls shrink
  with N); a resample holds about 63 % distinct images, so replicates are shifted and a
  percentile interval can miss its own estimate. The normal interval uses only their spread.
- ``percentile``: the (α/2, 1 − α/2) quantiles of the replicates (Eq. 13.5).

Intervals are clipped to the statistic's range (e.g. [0, 1] for a share).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Literal

import torch
from torch import Tensor

CIMethod = Literal["normal", "percentile"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval and how it was made."""

    low: float
    high: float
    se: float
    level: float
    method: str
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def resample_indices(n: int, generator: torch.Generator) -> Tensor:
    """Row indices of one resample of size ``n`` with replacement ``(n,)``."""
    return torch.randint(0, n, (n,), generator=generator)


def index_counts(indices: Tensor, n: int) -> Tensor:
    """How often each of ``n`` rows occurs in ``indices`` ``(n,)`` (for statistics that take weights)."""
    return torch.bincount(indices, minlength=n)


def bootstrap_intervals(
    estimate: dict[str, float],
    replicate: Callable[[list[Tensor]], dict[str, float]],
    sizes: list[int],
    *,
    resamples: int = 100,
    level: float = 0.95,
    method: CIMethod = "normal",
    ranges: dict[str, tuple[float, float]] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Interval]:
    """Intervals for every value of ``estimate``.

    Args:
        estimate: the statistic on the full sets, ``{name: value}``.
        replicate: the statistic on one resample, given per set the resampled row indices ``(n_i,)``.
        sizes: number of images of each set.
        ranges: ``{name: (low, high)}`` the interval is clipped to.
    """
    generator = generator or torch.Generator().manual_seed(0)
    draws: dict[str, list[float]] = {name: [] for name in estimate}
    for _ in range(resamples):
        values = replicate([resample_indices(n, generator) for n in sizes])
        for name in estimate:
            value = values.get(name)
            if value is not None and math.isfinite(value):
                draws[name].append(value)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    intervals: dict[str, Interval] = {}
    for name, value in estimate.items():
        sample = torch.tensor(draws[name], dtype=torch.float64)
        if sample.numel() < 2 or not math.isfinite(value):
            continue
        se = float(sample.std(unbiased=True))
        if method == "normal":
            low, high = value - z * se, value + z * se
        elif method == "percentile":
            alpha = 1.0 - level
            low = float(torch.quantile(sample, alpha / 2))
            high = float(torch.quantile(sample, 1 - alpha / 2))
        else:
            raise ValueError(f"unknown interval method {method!r}; use normal or percentile")
        lo, hi = (ranges or {}).get(name, (-math.inf, math.inf))
        intervals[name] = Interval(
            low=max(low, lo), high=min(high, hi), se=se, level=level,
            method=f"{method} bootstrap", resamples=int(sample.numel()),
        )
    return intervals
