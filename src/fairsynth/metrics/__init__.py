"""Measuring synthetic images: how close, how varied, how faithful and how original.

Every metric is computed from cached ``[N, d]`` feature arrays (:mod:`.features`), one
registered shell per metric (:data:`METRICS`, ``fairsynth ls metrics``) over a pure core in
:mod:`.functional`; feature extractors are a registry too (:mod:`.extractors`). A metric is
named with its extractor, ``metric@extractor``:

==========================  =================================================================
fd@dinov2                   FD-DINOv2 (Stein et al. 2023); fd@inception: FID
cmmd@clip-l14-336           CMMD (Jayasumana et al. 2024): RBF-kernel MMD on normalised CLIP embeddings
kid@inception               KID, subset size set from the data
prdc@inception              precision, recall, density, coverage (k = 3)
vendi@dinov2                Vendi score of each set
intra_class_diversity@clip  mean pairwise cosine distance of CLIP embeddings (FairSkin: > 0.3)
lpips_diversity@lpips       mean pairwise LPIPS of each set
clip_score@clip             prompt-image alignment
memorisation@dinov2         nearest training image of every synthetic image
==========================  =================================================================

``fairsynth evaluate`` (:mod:`.evaluate`) computes them overall and per group with bootstrap
intervals and records, with every number, the extractor, its weights' hash, the image-size
policy and the implementation.
"""

from __future__ import annotations

from fairsynth.metrics.base import Metric
from fairsynth.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metrics", package="fairsynth.metrics")

__all__ = ["METRICS", "Metric"]
