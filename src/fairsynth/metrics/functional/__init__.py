"""Pure metric cores: functions of ``[N, d]`` feature arrays, no state, no I/O.

Each module holds one family (the torchmetrics habit): :mod:`.frechet` (FID, FD-DINOv2),
:mod:`.kid`, :mod:`.prdc`, :mod:`.vendi`, :mod:`.diversity` (mean pairwise cosine distance),
:mod:`.clip_score`, :mod:`.lpips`, :mod:`.memorisation` and :mod:`.bootstrap`. The stateful
shells in :mod:`fairsynth.metrics` only call these and say which direction is better.
"""
