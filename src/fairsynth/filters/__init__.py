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

This module declares only the registry and the error, and imports nothing of the package:
the contract (:mod:`.base`), the shared context (:mod:`.context`) and the config that names
the checks (:mod:`.config`) all read them, and none of those reads another in a circle.
"""

from __future__ import annotations

from fairsynth.registry import Registry


class FilterError(ValueError):
    """A filter configuration or reference set that cannot work; the message says what to do."""


#: Quality checks by name, each a subclass of :class:`fairsynth.filters.base.Filter`.
FILTERS: Registry[type] = Registry("filters", package="fairsynth.filters")

__all__ = ["FILTERS", "FilterError"]
