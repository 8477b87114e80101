"""Balanced synthetic datasets: plan, generate, filter, resume and shard.

=============  ============================================================================
config         ``generate:`` section (:class:`GenerateConfig`: plan, sampler, adapters, img2img,
               IP-Adapter, SDXL refiner)
plan           pure: cells x targets (counts, uniform, match_real, inverse_frequency, shares,
               fairskin), oversampling, per-image seeds from (run seed, cell, index)
pipeline       the base + trained outputs (each method's ``load_for_inference``) in a diffusers
               pipeline; schedulers by name; precision and device
writer         the output folder: atomic PNGs, journal, manifests that match the files
shard          batches split across ``accelerate launch`` processes, identical for any split
run            ``fairsynth generate`` / ``fairsynth filter`` top to bottom
=============  ============================================================================

    from fairsynth.generation import generate
    result = generate(load_recipe("recipes/fairskin_derm.yaml"))
    result.shortfall        # {} when every cell met its target
"""

from __future__ import annotations

from fairsynth.generation.config import GenerateConfig, PlanConfig
from fairsynth.generation.plan import Cell, Plan, PlanError, build_plan, image_seed
from fairsynth.generation.run import GenerateResult, dry_run, generate, refilter
from fairsynth.generation.writer import DiskFullError, GenerationError

__all__ = [
    "Cell", "DiskFullError", "GenerateConfig", "GenerateResult", "GenerationError", "Plan", "PlanConfig",
    "PlanError", "build_plan", "dry_run", "generate", "image_seed", "refilter",
]
