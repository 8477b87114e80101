"""`fairsynth train`: the fine-tuning loop the methods of :mod:`fairsynth.methods` plug into.

One module per concern:

- :mod:`.config` — :class:`TrainConfig`, the ``train:`` section of a recipe;
- :mod:`.losses` — pure functions: targets, Min-SNR-γ weights, x̂0, the class-diversity term;
- :mod:`.data` — prepared records, images, resolution buckets, balanced per-step batches;
- :mod:`.randomness` — every per-step random number, from generators seeded by (seed, step);
- :mod:`.caching` — VAE latent distributions and text embeddings cached on disk;
- :mod:`.ema` — the exponential moving average of the trainable parameters;
- :mod:`.checkpoint` — atomic checkpoints without pickle, and resume;
- :mod:`.validation` — the class x skin-type prompt grid and the validation loss;
- :mod:`.loop` — :func:`~fairsynth.training.loop.train`, the loop itself.

Only the config is imported here, so that parsing a recipe stays light; import
:func:`fairsynth.training.loop.train` where training runs.
"""

from fairsynth.training.config import ClassDiversityConfig, EMAConfig, FidConfig, TrainConfig, ValidationConfig

__all__ = ["ClassDiversityConfig", "EMAConfig", "FidConfig", "TrainConfig", "ValidationConfig"]
