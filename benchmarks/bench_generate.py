"""Benchmark of `fairsynth generate`: batching, overhead outside the networks, sampler cost.

    python benchmarks/bench_generate.py                  # a few minutes on 2 CPU cores
    python benchmarks/bench_generate.py --images 16      # a quick look

Everything runs offline on the tiny SD-1.5-shaped pipeline with random weights
(:func:`fairsynth.models.architectures.tiny_sd_components`, seed 0), on one torch thread, so
that the numbers measure fairsynth's machinery; on a real base the UNet dominates even more.
Ratios, each measured in this one run:

1. batching: images/s of whole `generate` runs with batch_size 8 over batch_size 1 (target >= 2x),
   at 16 px (8x8 latents: per-call overhead dominates) and at --size (32 px: 16x16 latents, where
   the tiny UNet's attention is already compute-bound on a CPU and batching gains less);
2. overhead (at --size): the share of the generation wall time spent outside the UNet and VAE forward
   passes — planning, checks (resolution, brightness, sharpness), PNG encoding, hashing,
   journal and manifests, text encoding — with batch_size 8 (target <= 10 %); model loading
   is reported separately;
3. sampler cost: UNet evaluations per image (rows through the UNet, counted by a hook) for
   DPM-Solver++ at 20 steps vs DDIM at 50, and the Fréchet distance of each set to a reference
   set — pending: FID needs Inception weights (`fairsynth weights fetch inception`) and a base
   that has learned something (the embedded base, `scripts/build_embedded_base.py`); neither is
   on this machine, so no quality number is printed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


class NetworkTimer:
    """Wall time inside the UNet forward passes and the VAE decoder, and UNet rows evaluated."""

    def __init__(self, pipe) -> None:
        self.seconds = 0.0
        self.unet_rows = 0
        self._start = 0.0
        pipe.unet.register_forward_pre_hook(self._enter)
        pipe.unet.register_forward_hook(self._leave_unet)
        decode = pipe.vae.decode

        def timed_decode(*args, **kwargs):
            start = time.perf_counter()
            try:
                return decode(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        pipe.vae.decode = timed_decode

    def _enter(self, module, args) -> None:
        self._start = time.perf_counter()
        self.unet_rows += args[0].shape[0]

    def _leave_unet(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start


def run(base: Path, workdir: Path, images: int, batch_size: int, scheduler: str, steps: int, size: int) -> dict:
    import fairsynth.generation.run as run_module
    from fairsynth.generation.pipeline import load_sampler as real_load
    from fairsynth.recipe import load_recipe

    recipe = load_recipe(None, [
        f"workdir={workdir}", f"train.base.source={base}", "generate.adapters=[]", "prepare.resolution=[64]",
        f"generate.plan.classes=[a, b]", "generate.plan.by=[]", f"generate.plan.total={images}",
        f"generate.batch_size={batch_size}", f"generate.scheduler={scheduler}", f"generate.steps={steps}",
        f"generate.resolution=[{size}]", "generate.guidance_scale=7.5", "generate.real=none.jsonl",
        "filter.checks=[resolution, brightness, sharpness]", "filter.options={sharpness: {min_variance: 0}}",
    ])
    timers: list[NetworkTimer] = []
    loading = {}

    def load_and_time(*args, **kwargs):
        start = time.perf_counter()
        sampler = real_load(*args, **kwargs)
        loading["seconds"] = time.perf_counter() - start
        timers.append(NetworkTimer(sampler.pipe))
        return sampler

    import fairsynth.generation.pipeline as pipeline_module

    original = pipeline_module.load_sampler
    pipeline_module.load_sampler = load_and_time
    try:
        start = time.perf_counter()
        result = run_module.generate(recipe, progress=False, log=lambda m: None)
        wall = time.perf_counter() - start
    finally:
        pipeline_module.load_sampler = original
    assert sum(c.selected for c in result.cells) == images
    generation = wall - loading["seconds"]
    return {
        "wall": wall, "loading": loading["seconds"], "generation": generation,
        "networks": timers[0].seconds, "unet_rows_per_image": timers[0].unet_rows / images,
        "images_per_second": images / generation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="images per run")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (the tiny base: 32, 16x16 latents)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the batching / overhead runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from fairsynth.models.architectures import build_pipeline, tiny_sd_components

    root = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        base = root / "base"
        build_pipeline(tiny_sd_components(seed=0)).save_pretrained(base)
        print(f"tiny SD base (random weights), {args.size} px, {args.images} images, CPU, 1 thread\n")

        for side in sorted({16, args.size}):
            one = run(base, root / f"b1-{side}", args.images, 1, "dpmsolver++", args.steps, side)
            eight = run(base, root / f"b8-{side}", args.images, 8, "dpmsolver++", args.steps, side)
            ratio = eight["images_per_second"] / one["images_per_second"]
            print(f"1. batching at {side} px: batch 8 {eight['images_per_second']:.2f} img/s vs batch 1 "
                  f"{one['images_per_second']:.2f} img/s = {ratio:.2f}x  (target >= 2x) {'OK' if ratio >= 2 else 'MISSED'}")

        share = 1 - eight["networks"] / eight["generation"]
        print(f"2. outside UNet+VAE: {100 * share:.1f} % of {eight['generation']:.2f} s of generation "
              f"(target <= 10 %) {'OK' if share <= 0.10 else 'MISSED'}; model loading and checks' setup another "
              f"{eight['loading']:.2f} s ({100 * eight['loading'] / eight['wall']:.0f} % of the whole command)")

        small = max(8, args.images // 3)
        dpm = run(base, root / "dpm", small, 8, "dpmsolver++", 20, args.size)
        ddim = run(base, root / "ddim", small, 8, "ddim", 50, args.size)
        print(f"3. UNet evaluations per image (rows, guidance 7.5 doubles them): DPM-Solver++ 20 steps "
              f"{dpm['unet_rows_per_image']:.0f} vs DDIM 50 steps {ddim['unet_rows_per_image']:.0f} "
              f"= {ddim['unet_rows_per_image'] / dpm['unet_rows_per_image']:.2f}x fewer; images/s "
              f"{dpm['images_per_second']:.2f} vs {ddim['images_per_second']:.2f}")
        print("   FID of each: pending (no Inception weights and no trained embedded base on this machine)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
