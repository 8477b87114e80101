"""Base models: loading (hub id, diffusers folder, single file), architectures, tokenizer.

- :mod:`fairsynth.models.loading` — :func:`~fairsynth.models.loading.load_base`,
  :func:`~fairsynth.models.loading.model_hash`, :class:`~fairsynth.models.loading.BaseModelConfig`
- :mod:`fairsynth.models.architectures` — SD 1.5 / SDXL configs, tiny seeded components,
  :func:`~fairsynth.models.architectures.build_pipeline`
- :mod:`fairsynth.models.single_file` — original-layout (A1111/ComfyUI) checkpoints: read safely,
  write, config folders for ``from_single_file``
- :mod:`fairsynth.models.tokenizer` — the CLIP tokenizer built offline

Import the submodules directly; this package imports nothing so that ``import fairsynth``
stays fast.
"""
