"""Quality filters: one check per module, each registered in :data:`FILTERS`.

``fairsynth ls filters`` lists them; a recipe names the checks to run in ``filter.checks``
and sets their thresholds in ``filter.options`` (validated against each check's ``Config``
when the recipe is parsed). Every check records its *values* per image in the manifest
(``brightness_mean``, ``realism_nn_distance``, ...) and a verdict column ``<check>_ok``; the
verdict is a pure function of the values and the thresholds, so ``fairsynth filter`` can
re-threshold a generated set without generating or even measuring again.

===============  ===========================================================================
resolution       image size at least the size asked for
brightness       mean luminance in [0.1, 0.9]
sharpness        variance of the Laplacian (blur detection)
skin_type        ITA of the skin region within ±1 Fitzpatrick type of the requested one
realism          nearest-neighbour feature distance and LPIPS to real images of the same group
memorisation     too close to a training image (reported with the image it copies)
near_duplicates  feature cosine to an earlier kept image of the same cell (keep one)
===============  ===========================================================================

The contract is in :mod:`.base`; :mod:`.apply` measures, judges and selects.
"""

from __future__ import annotations

from fairsynth.filters.base import Filter, FilterError
from fairsynth.registry import Registry

FILTERS: Registry[type[Filter]] = Registry("filters", package="fairsynth.filters")

__all__ = ["FILTERS", "Filter", "FilterError"]
