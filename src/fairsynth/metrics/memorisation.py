"""Memorisation shell: each synthetic image's nearest training image."""

from __future__ import annotations

import torch
from torch import Tensor

from fairsynth.metrics import METRICS
from fairsynth.metrics.base import Metric
from fairsynth.metrics.functional.memorisation import (
    memorisation_threshold,
    memorised_share,
    nearest_neighbours,
    normalise,
    self_nearest_distances,
)


@METRICS.register(
    "memorisation",
    help="nearest training image of every synthetic image; share closer than the training set's 5th-percentile NN distance",
)
class Memorisation(Metric):
    """Share of synthetic images closer to a training image than training images are to each other.

    ``update(train, real=True)`` gives the training images, ``update(synthetic)`` the synthetic
    ones. After :meth:`prepare`, :attr:`nn_distances` and :attr:`nn_indices` hold every synthetic
    image's nearest training image.

    Args:
        percentile: percentile of the training set's own NN distances used as the threshold.
    """

    name = "memorisation"
    display = "Memorisation"
    higher_is_better = {"memorised_share": False, "median_nn_distance": None}
    ranges = {"memorised_share": (0.0, 1.0), "median_nn_distance": (0.0, 2.0)}
    default_extractor = "dinov2"
    needs_real_rows = False
    uses_training_images = True

    def __init__(self, percentile: float = 5.0) -> None:
        super().__init__()
        self.percentile = percentile
        self.threshold: float | None = None
        self.n_train = 0
        self.nn_distances: Tensor | None = None
        self.nn_indices: Tensor | None = None
        self.formula = (
            f"share of synthetic images whose nearest training image (Euclidean on L2-normalised features) is closer "
            f"than the {percentile:g}th percentile of training-to-training nearest-neighbour distances"
        )

    def prepare(self, real, synthetic, prompts=None):
        if real is None or real.shape[0] < 2:
            raise ValueError("memorisation needs at least 2 training images")
        train = normalise(real)
        self.n_train = train.shape[0]
        self.threshold = memorisation_threshold(self_nearest_distances(train), self.percentile)
        self.nn_distances, self.nn_indices = nearest_neighbours(normalise(synthetic), train)
        return None, self.nn_distances[:, None]  # (N, 1)

    def statistic(self, real: Tensor | None, synthetic: Tensor) -> dict[str, float]:
        if self.threshold is None:
            raise RuntimeError("memorisation: prepare() must run first")
        distances = synthetic[:, 0]
        return {
            "memorised_share": memorised_share(distances, self.threshold),
            "median_nn_distance": float(torch.median(distances)),
        }

    def details(self) -> dict:
        return {"threshold": self.threshold, "percentile": self.percentile, "n_training_images": self.n_train}

    @classmethod
    def from_config(cls, cfg) -> "Memorisation":
        return cls(percentile=cfg.memorisation_percentile)
