"""Benchmark of `fairsynth train`: latent/text caching and gradient checkpointing (LoRA, CPU).

    python benchmarks/bench_train.py --scale tiny                    # ~4 min on 2 shared cores
    nice -n 5 python benchmarks/bench_train.py --scale sd15          # ~8 min, ~6 GiB of RAM (two processes, one at a time)
    python benchmarks/bench_train.py --scale all --steps 4 --rounds 2

Two loops train the same LoRA (fairsynth's `lora` method: rank 8 on every attention q/k/v/out)
with the same UNet, AdamW, gradient clipping and learning-rate schedule, batch 1, float32:

* cached: what `fairsynth train` does. x0 is drawn from the image's cached latent distribution
  (``mean + std · ξ`` read from the on-disk cache), the text conditioning is read from the
  cache, then the UNet forward/backward and the optimiser step;
* encode every step: the loop of diffusers' ``examples/text_to_image/train_text_to_image_lora.py``.
  Each step the image is decoded and transformed and its caption tokenised (the dataset's
  ``with_transform``, ``dataloader_num_workers=0``), the VAE encodes the pixels
  (``latent_dist.sample() * scaling_factor``), the text encoder runs on the ids, then the same
  UNet forward/backward/step.

Each with gradient checkpointing off and on, measured in three parts:

1. ``tiny train()``: fairsynth's own :func:`~fairsynth.training.loop.train` end to end on a
   prepared dataset of the tiny pipeline (32 px), ``cache_latents``/``cache_text`` true vs false
   (false is fairsynth's own encode-every-step path), same steps and seed. Step times come from
   a LoRA subclass, registered for this benchmark only, that time-stamps ``after_step``; the
   first step of every run is a warm-up and is not timed, nor is start-up or export. The one-off
   cache fill (the first ``LatentCache.fill`` / ``TextCache.fill`` of a run) is timed apart;
2. ``tiny step`` and
3. ``sd15 step``: the SD 1.5 architecture with random weights
   (:func:`~fairsynth.models.architectures.sd15_components`) at 256 px. Step level: the cached
   step is fairsynth's own ``_micro_batch_loss`` followed by ``train()``'s update (backward,
   clipping, AdamW, schedule); the encode-every-step step is the diffusers loop body, written
   out here and timed by section (data, VAE, text encoder, UNet + update).

Time: wall clock per step (steps/s) and the process's CPU time per step. Within a round the
four variants alternate and the order reverses every round (ABBA); a ratio is the median over
rounds of the ratio of the two variants' median steps in that round. Speed-up verdicts use CPU
time: with one torch thread it is the work a step does, the same as wall clock on an idle
machine, while on a shared one the wall clock also holds the time other users' processes keep
the cores (at a load average of ~4 on 2 cores, per-round wall ratios of the same pair spread
from 0.9x to 1.8x; CPU-time ratios stay within a few %). Both are printed.

Memory: peak resident memory as the kernel tracks it (``VmHWM``), reset right before a measured
block by writing ``5`` to /proc/self/clear_refs (Linux >= 4.0), after ``gc.collect()`` and
glibc's ``malloc_trim(0)``. "weights" is the resident memory at that point (weights, LoRA, AdamW
state, libraries); "activations" is peak − weights. tracemalloc does not see torch's CPU
allocations and RSS sampled from a thread misses short peaks; the high-water mark does not.
Two readings:

* "act rss": during the timed blocks, with glibc's default malloc. Its dynamic mmap threshold
  keeps freed tensors of up to 32 MiB in the heap for reuse, so this peak holds allocator slack
  (~300 MiB at SD 1.5 scale, in every variant): what a CPU user sees in `top`;
* "act live": in a child process started with ``MALLOC_MMAP_THRESHOLD_=65536`` (one warm-up and
  one measured step per variant), where every allocation of 64 KiB or more is its own mapping,
  returned the moment it is freed: RSS follows live tensor memory, the CPU counterpart of CUDA's
  ``max_memory_allocated``. It has to be set before the heap grows (``mallopt`` later still
  serves large requests from free heap chunks), hence the child. The checkpointing target is
  judged on this one.

Targets: caching >= 1.5x faster on the tiny pipeline (fairsynth train(), checkpointing off) and
>= 1.35x at SD 1.5 scale (step level, checkpointing off); gradient checkpointing lowers SD 1.5's live
activation memory (cached loop) by >= 50 %.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fairsynth.methods import METHODS
from fairsynth.methods.lora import LoRA

TARGET_TINY_CACHING = 1.5
TARGET_SD15_CACHING = 1.35
TARGET_SD15_CHECKPOINTING = 0.50  # reduction of live activation memory
#: Image side in px: the tiny VAE downsamples by 2 (16x16 latents), SD 1.5's by 8 (32x32).
SIZES = {"tiny": 32, "sd15": 256}
DEFAULT_STEPS = {"tiny": 30, "sd15": 2}
DEFAULT_ROUNDS = {"tiny": 4, "sd15": 2}
#: (loop, gradient checkpointing) of one round, in ABBA order (reversed every other round).
VARIANTS = [("cached", False), ("encode", False), ("encode", True), ("cached", True)]
#: glibc reads it at start-up: allocations >= 64 KiB are mmapped and unmapped when freed.
PINNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
MiB = 2**20
GiB = 2**30


# --------------------------------------------------------------------------------------
# Memory: the kernel's peak-RSS counter, reset per block
# --------------------------------------------------------------------------------------


def _status_bytes(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {name}")


def _libc() -> Any:
    return ctypes.CDLL("libc.so.6")


def settle() -> int:
    """Free what can be freed, hand malloc's free pages back; the resident bytes after."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)
    return _status_bytes("VmRSS")


def reset_peak() -> None:
    """Set the kernel's peak-RSS counter (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_bytes() -> int:
    return _status_bytes("VmHWM")


def check_memory_probe() -> None:
    try:
        settle()
        reset_peak()
        peak_bytes()
    except (OSError, AttributeError) as err:  # not Linux/glibc, or a kernel older than 4.0
        raise SystemExit(f"peak memory needs glibc, /proc/self/clear_refs and VmHWM (Linux >= 4.0): {err}") from None


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class Block:
    """One measured stretch of steps of one variant."""

    part: str  # "tiny train()", "tiny step", "sd15 step"
    loop: str  # "cached" | "encode"
    checkpointing: bool
    round: int  # -1: the live-memory pass
    step_seconds: list[float]  # wall clock
    cpu_seconds: list[float]  # process CPU time
    weights: int  # resident bytes before the block
    peak: int  # peak resident bytes during the block
    sections: dict[str, list[float]] = field(default_factory=dict)  # encode loop at step level

    @property
    def median(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def activations(self) -> int:
        return self.peak - self.weights


def wall(block: Block) -> float:
    return block.median


def cpu(block: Block) -> float:
    return block.cpu_median


def activations(block: Block) -> float:
    return block.activations


def median_ratio(blocks: list[Block], part: str, numerator: tuple[str, bool], denominator: tuple[str, bool],
                 value: Callable[[Block], float]) -> tuple[float, list[float]]:
    """Median over rounds of value(numerator's block) / value(denominator's block); the per-round ratios."""
    by_round: dict[int, dict[tuple[str, bool], Block]] = {}
    for block in blocks:
        if block.part == part:
            by_round.setdefault(block.round, {})[(block.loop, block.checkpointing)] = block
    ratios = [value(r[numerator]) / value(r[denominator]) for r in by_round.values()
              if numerator in r and denominator in r and value(r[denominator]) > 0]
    return (statistics.median(ratios) if ratios else float("nan")), ratios


def pick(blocks: list[Block], part: str, loop: str, checkpointing: bool) -> list[Block]:
    return [b for b in blocks if b.part == part and b.loop == loop and b.checkpointing == checkpointing]


def abba(round_index: int) -> list[tuple[str, bool]]:
    return VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]


class StepTimer:
    """Wall clock and process CPU time between calls."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last: tuple[float, float] | None = None

    def stamp(self) -> None:
        now = (time.perf_counter(), time.process_time())
        if self._last is not None:
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def write_dataset(root: Path, n: int, size: int) -> Path:
    """A prepared imagefolder of ``n`` seeded ``size``-px PNGs (train split) with captions."""
    from fairsynth.data.records import Record, write_manifest

    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (max(size // 8, 2), max(size // 8, 2), 3), dtype=np.uint8)
        image = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BILINEAR)
        name = f"images/img{i:03d}.png"
        image.save(root / name)
        label, fst = ("melanoma", "psoriasis")[i % 2], i % 6 + 1
        records.append(Record(f"r{i}", name, label, f"a dermoscopic photo of {label} on skin type {fst}",
                              {"fst": fst, "split": "train"}))
    return write_manifest(records, root / "metadata.jsonl")


# --------------------------------------------------------------------------------------
# 1. fairsynth's train() end to end, cache on vs off (tiny pipeline)
# --------------------------------------------------------------------------------------


class StepProbe:
    """Called after every optimiser step of ``train()``: step times, and the memory of the
    steps after the first (by then weights, LoRA and AdamW state are all in place)."""

    def __init__(self, total_steps: int) -> None:
        self.total = total_steps
        self.count = 0
        self.timer = StepTimer()
        self.weights = self.peak = 0

    def after_step(self) -> None:
        self.count += 1
        if self.count == self.total:
            self.peak = peak_bytes()
        if self.count == 1:
            self.weights = settle()
            reset_peak()
        self.timer.stamp()  # after the memory probe, so that it is not timed


@METHODS.register("bench_timed_lora", help="Benchmark only: LoRA that time-stamps every optimiser step")
class TimedLoRA(LoRA):
    """fairsynth's LoRA plus a probe called after every optimiser step (benchmarks/bench_train.py)."""

    probe: StepProbe | None = None

    def after_step(self, components: Any) -> None:
        super().after_step(components)
        if TimedLoRA.probe is not None:
            TimedLoRA.probe.after_step()


@contextlib.contextmanager
def startup_fill_timer(sink: dict[str, float]) -> Iterator[None]:
    """Times the first ``fill`` of each cache object: train()'s start-up fill (later calls are
    its per-step checks for a missing entry)."""
    from fairsynth.training import caching

    originals = {"latents": caching.LatentCache.fill, "text": caching.TextCache.fill}
    seen: set[int] = set()

    def timed(name: str, fill: Callable[..., int]) -> Callable[..., int]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> int:
            if id(self) in seen:
                return fill(self, *args, **kwargs)
            seen.add(id(self))
            start = time.perf_counter()
            made = fill(self, *args, **kwargs)
            sink[f"{name}_seconds"] = sink.get(f"{name}_seconds", 0.0) + time.perf_counter() - start
            sink[f"{name}_made"] = sink.get(f"{name}_made", 0) + made
            return made

        return wrapper

    caching.LatentCache.fill = timed("latents", originals["latents"])
    caching.TextCache.fill = timed("text", originals["text"])
    try:
        yield
    finally:
        caching.LatentCache.fill, caching.TextCache.fill = originals["latents"], originals["text"]


class TrainBench:
    """Runs of fairsynth's ``train()`` on the tiny pipeline, cache on or off."""

    part = "tiny train()"

    def __init__(self, workdir: Path, images: int) -> None:
        from fairsynth.models.architectures import build_pipeline, tiny_sd_components

        self.workdir = workdir
        self.base = workdir / "tiny-sd"
        build_pipeline(tiny_sd_components(seed=0)).save_pretrained(self.base)
        self.manifest = write_dataset(workdir / "prepared-tiny", images, SIZES["tiny"])
        self.cache_dir = workdir / "cache-tiny-train"
        self.images = images
        self.walls: dict[tuple[str, bool], list[float]] = {}
        # The first cached run fills the cache (timed); the second checks a full one.
        _, self.cold_fill, _ = self.run(cached=True, checkpointing=False, steps=2)
        _, self.warm_fill, _ = self.run(cached=True, checkpointing=False, steps=2)

    def run(self, *, cached: bool, checkpointing: bool, steps: int) -> tuple[StepProbe, dict[str, float], float]:
        """One ``train()`` of 1 + ``steps`` steps; the probe, the start-up fill, the call's wall time."""
        from fairsynth.recipe import load_recipe
        from fairsynth.training.loop import train

        size = SIZES["tiny"]
        train_keys = {
            "base.source": str(self.base), "method": "bench_timed_lora", "data": str(self.manifest),
            "resolution": f"[{size}]", "steps": steps + 1, "batch_size": 1, "checkpoint_every": 0,
            "report_to": "none", "cache_dir": str(self.cache_dir), "cache_latents": str(cached).lower(),
            "cache_text": str(cached).lower(), "gradient_checkpointing": str(checkpointing).lower(),
        }
        output = self.workdir / "train-run"
        overrides = [f"workdir={output}", f"prepare.resolution=[{size}]"] + [f"train.{k}={v}" for k, v in train_keys.items()]
        recipe = load_recipe(None, overrides)
        probe = StepProbe(steps + 1)
        fills: dict[str, float] = {}
        TimedLoRA.probe = probe
        start = time.perf_counter()
        try:
            with startup_fill_timer(fills):
                train(recipe, progress=False)
        finally:
            TimedLoRA.probe = None
        seconds = time.perf_counter() - start
        shutil.rmtree(output, ignore_errors=True)
        return probe, fills, seconds

    def warm_up(self) -> None:
        for loop, checkpointing in VARIANTS:
            self.run(cached=loop == "cached", checkpointing=checkpointing, steps=2)

    def block(self, loop: str, checkpointing: bool, steps: int, round_index: int) -> Block:
        probe, _, seconds = self.run(cached=loop == "cached", checkpointing=checkpointing, steps=max(steps, 1))
        if round_index >= 0:
            self.walls.setdefault((loop, checkpointing), []).append(seconds)
        return Block(self.part, loop, checkpointing, round_index, probe.timer.wall, probe.timer.cpu, probe.weights, probe.peak)

    def details(self) -> list[str]:
        cold, warm = self.cold_fill, self.warm_fill
        lines = [
            f"{self.part}: one-off cache fill {cold.get('latents_seconds', 0):.3f}s for {cold.get('latents_made', 0)} latents "
            f"+ {cold.get('text_seconds', 0):.3f}s for {cold.get('text_made', 0)} captions; with a full cache the "
            f"start-up check takes {warm.get('latents_seconds', 0) + warm.get('text_seconds', 0):.3f}s",
        ]
        if self.walls:
            lines.append(f"{self.part}: whole call (start-up, steps, export), median: " + ", ".join(
                f"{loop} ckpt {'on' if c else 'off'} {statistics.median(v):.2f}s" for (loop, c), v in self.walls.items()))
        return lines


# --------------------------------------------------------------------------------------
# 2./3. Step level: fairsynth's cached step vs diffusers' encode-every-step loop body
# --------------------------------------------------------------------------------------


class StepBench:
    """One pipeline with fairsynth's LoRA injected and one AdamW; both loops' steps run on it."""

    def __init__(self, scale: str, workdir: Path, images: int, bf16: bool) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        from fairsynth.data.sampling import sampling_weights
        from fairsynth.methods.base import Components
        from fairsynth.models.architectures import (
            build_pipeline,
            sd15_components,
            tiny_sd_components,
            training_noise_scheduler,
        )
        from fairsynth.training.caching import LatentCache, TextCache
        from fairsynth.training.config import TrainConfig
        from fairsynth.training.data import BatchSampler, load_split, make_examples
        from fairsynth.training.loop import _make_optimizer, _make_scheduler

        self.scale, self.part = scale, f"{scale} step"
        size = SIZES[scale]
        start = time.perf_counter()
        pipe = build_pipeline((sd15_components if scale == "sd15" else tiny_sd_components)(seed=0))
        self.build_seconds = time.perf_counter() - start
        self.components = components = Components.from_pipeline(pipe, training_noise_scheduler(pipe), source=f"random {scale}")
        components.freeze_all()
        self.cfg = TrainConfig(method="lora", resolution=[size], batch_size=1, report_to="none",
                               mixed_precision="bf16" if bf16 else "no")
        manifest = write_dataset(workdir / f"prepared-{scale}", images, size)
        records = load_split(manifest, "train")
        self.examples = make_examples(records, manifest.parent, self.cfg.size)
        self.sampler = BatchSampler(sampling_weights(records, self.cfg.balance), [e.size for e in self.examples])

        # As train() does: the method, its parameters trained in float32, train mode where they are.
        self.method = self.cfg.build_method()
        self.method.check(components, records)
        self.method.prepare(components)
        phase = self.method.phases(10**6)[0]
        groups = self.method.parameter_groups(components, phase, self.cfg.learning_rate)
        self.params = [p for g in groups for p in g["params"]]
        for module in components.modules().values():
            module.train(any(p.requires_grad for p in module.parameters()))
        if bf16:
            for encoder in components.text_encoders:
                encoder.to(dtype=torch.bfloat16)  # train() stores frozen text encoders in the autocast precision
        AcceleratorState._reset_state(reset_partial_state=True)  # this process may hold train()'s, of another precision
        self.accelerator = Accelerator(cpu=True, mixed_precision=self.cfg.mixed_precision)
        self.device = self.accelerator.device
        self.optimizer = self.accelerator.prepare_optimizer(_make_optimizer(self.cfg, groups))
        self.lr_scheduler = _make_scheduler(self.cfg, self.optimizer, phase)
        scheduler = components.noise_scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device)
        self.num_timesteps = scheduler.config.num_train_timesteps
        self.prediction_type = scheduler.config.prediction_type
        self.trainable = sum(p.numel() for p in self.params)

        # The caches, filled once: the one-off cost that caching trades for its speed.
        cache_dir = workdir / f"cache-{scale}"
        start = time.perf_counter()
        self.latent_cache = LatentCache(cache_dir, components.vae)
        self.text_cache = TextCache(cache_dir, components)
        self.hash_seconds = time.perf_counter() - start  # the keys hash the VAE's and text encoder's weights
        start = time.perf_counter()
        self.latents_made = self.latent_cache.fill(self.examples)
        self.latent_fill_seconds = time.perf_counter() - start
        start = time.perf_counter()
        self.captions_made = self.text_cache.fill(sorted({e.caption for e in self.examples} | {""}))
        self.text_fill_seconds = time.perf_counter() - start
        self.step_index = 0

    def set_checkpointing(self, enabled: bool) -> None:
        unet = self.components.unet
        unet.enable_gradient_checkpointing() if enabled else unet.disable_gradient_checkpointing()

    def _update(self, loss: torch.Tensor) -> float:
        """train()'s update with one process (loop steps 9b-9d), the same in both loops."""
        self.accelerator.backward(loss)
        value = float(loss.detach())
        self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value

    def step_cached(self, sections: dict[str, list[float]]) -> float:
        """fairsynth's step: ``_micro_batch_loss`` with both caches, then the update."""
        from fairsynth.training.loop import _micro_batch_loss
        from fairsynth.training.randomness import StepRandom

        random = StepRandom(0, self.step_index)
        random.seed_global()
        self.step_index += 1
        loss, _, _ = _micro_batch_loss(
            self.cfg, self.method, self.components, self.sampler, self.examples, self.latent_cache,
            lambda batch: self.text_cache.conditioning(batch, self.device), random, self.alphas_cumprod,
            self.num_timesteps, self.prediction_type, {}, self.device, self.accelerator,
        )
        return self._update(loss)

    def step_encode(self, sections: dict[str, list[float]]) -> float:
        """The loop body of diffusers' train_text_to_image_lora.py (epsilon, no SNR weighting)."""
        from fairsynth.methods.base import tokenize
        from fairsynth.training.data import load_pixels

        components = self.components
        vae, text_encoder, unet = components.vae, components.text_encoders[0], components.unet
        autocast = self.accelerator.autocast
        t0 = time.perf_counter()
        # The dataset's transform (Resize, CenterCrop, ToTensor, Normalize) and tokenize_captions.
        chosen = [self.examples[i] for i in self.sampler.draw(torch.Generator().manual_seed(self.step_index), 1)]
        self.step_index += 1
        pixel_values = torch.stack([load_pixels(e.path, e.size) for e in chosen]).float()  # (B, 3, H, W)
        input_ids = tokenize(components.tokenizers[0], [e.caption for e in chosen])  # (B, 77)
        t1 = time.perf_counter()
        with autocast():
            latents = vae.encode(pixel_values).latent_dist.sample()  # (B, 4, H/8, W/8)
        latents = latents.float() * vae.config.scaling_factor
        t2 = time.perf_counter()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.num_timesteps, (latents.shape[0],)).long()
        noisy_latents = components.noise_scheduler.add_noise(latents, noise, timesteps)
        with autocast():
            encoder_hidden_states = text_encoder(input_ids.to(self.device))[0]  # (B, 77, D)
        t3 = time.perf_counter()
        with autocast():
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample  # (B, 4, H/8, W/8)
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        value = self._update(loss)
        t4 = time.perf_counter()
        for name, seconds in (("data", t1 - t0), ("vae", t2 - t1), ("text", t3 - t2), ("unet+update", t4 - t3)):
            sections.setdefault(name, []).append(seconds)
        return value

    def warm_up(self) -> None:
        """One step of each variant (AdamW's state appears at the first)."""
        for loop, checkpointing in VARIANTS:
            self.block(loop, checkpointing, 1, -2)

    def block(self, loop: str, checkpointing: bool, steps: int, round_index: int) -> Block:
        self.set_checkpointing(checkpointing)
        step = self.step_cached if loop == "cached" else self.step_encode
        sections: dict[str, list[float]] = {}
        weights = settle()
        reset_peak()
        timer = StepTimer()
        timer.stamp()
        for _ in range(steps):
            loss = step(sections)
            timer.stamp()
            if not np.isfinite(loss):
                raise RuntimeError(f"{self.part} {loop}: loss {loss}")
        peak = peak_bytes()
        return Block(self.part, loop, checkpointing, round_index, timer.wall, timer.cpu, weights, peak, sections)

    def details(self) -> list[str]:
        made = max(self.latents_made, 1)
        return [
            f"{self.part}: model built in {self.build_seconds:.1f}s; LoRA {self.trainable:,} trainable parameters; "
            f"the cache keys hash the VAE + text encoder weights in {self.hash_seconds:.2f}s; one-off fill "
            f"{self.latent_fill_seconds:.2f}s for {self.latents_made} latents ({self.latent_fill_seconds / made:.3f}s each) "
            f"+ {self.text_fill_seconds:.2f}s for {self.captions_made} captions"
        ]


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def print_table(blocks: list[Block], live: list[Block]) -> None:
    print()
    print(f"{'part':13s} {'loop':7s} {'ckpt':4s} {'steps/s':>8s} {'s/step':>8s} {'cpu s/step':>10s} {'weights':>8s} "
          f"{'peak rss':>9s} {'act rss':>9s} {'act live':>9s}")
    for part in dict.fromkeys(b.part for b in blocks):
        for loop, checkpointing in [("cached", False), ("encode", False), ("cached", True), ("encode", True)]:
            chosen = pick(blocks, part, loop, checkpointing)
            if not chosen:
                continue
            med = lambda value: statistics.median(value(b) for b in chosen)  # noqa: E731
            seconds = med(wall)
            pinned = pick(live, part, loop, checkpointing)
            live_text = f"{pinned[0].activations / MiB:7.1f}Mi" if pinned else f"{'-':>9s}"
            print(f"{part:13s} {loop:7s} {'on' if checkpointing else 'off':4s} {1 / seconds:8.2f} {seconds:8.3f} "
                  f"{med(cpu):10.3f} {med(lambda b: b.weights) / GiB:6.2f}Gi {med(lambda b: b.peak) / GiB:7.2f}Gi "
                  f"{med(activations) / MiB:7.1f}Mi {live_text}")
    print("  (medians over rounds; weights: resident before a block; act: peak - weights; rss: default malloc, "
          "live: mmap threshold pinned, see the docstring)")


def encode_shares(blocks: list[Block], part: str, checkpointing: bool) -> dict[str, float] | None:
    """Median share of each section of the encode-every-step loop."""
    chosen = [b for b in pick(blocks, part, "encode", checkpointing) if b.sections]
    if not chosen:
        return None
    medians = {name: statistics.median(s for b in chosen for s in b.sections[name]) for name in chosen[0].sections}
    total = sum(medians.values())
    return {name: value / total for name, value in medians.items()}


def verdict(value: float, target: float) -> str:
    if not np.isfinite(value):
        return "n/a "
    return "PASS" if value >= target else "MISS"


def report(blocks: list[Block], live: list[Block], details: list[str]) -> None:
    print_table(blocks, live)
    parts = list(dict.fromkeys(b.part for b in blocks))
    print("\nDetails")
    for line in details:
        print("  " + line)
    for part in parts:
        for checkpointing in (False, True):
            shares = encode_shares(blocks, part, checkpointing)
            if shares:
                encoders = 1 - shares["unet+update"]
                print(f"  {part}: encode-every-step loop, ckpt {'on ' if checkpointing else 'off'}: "
                      + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items())
                      + f" -> caching saves at most {100 * encoders:.1f}% (at most {1 / (1 - encoders):.2f}x)")
        slow_wall, _ = median_ratio(blocks, part, ("cached", True), ("cached", False), wall)
        slow_cpu, _ = median_ratio(blocks, part, ("cached", True), ("cached", False), cpu)
        print(f"  {part}: gradient checkpointing changes the cached step's time by {100 * (slow_wall - 1):+.0f}% wall, "
              f"{100 * (slow_cpu - 1):+.0f}% cpu")

    lines: list[str] = []

    def caching(part: str, target: float | None, label: str) -> None:
        for checkpointing in (False, True):
            cpu_ratio, cpu_rounds = median_ratio(blocks, part, ("encode", checkpointing), ("cached", checkpointing), cpu)
            if not cpu_rounds:
                continue
            ratio, per_round = median_ratio(blocks, part, ("encode", checkpointing), ("cached", checkpointing), wall)
            judged = target is not None and not checkpointing
            mark = verdict(cpu_ratio, target) if judged else "info"
            text = (f"{mark}  caching speed-up, {label}, ckpt {'on ' if checkpointing else 'off'}: {cpu_ratio:.2f}x cpu "
                    f"(rounds {', '.join(f'{r:.2f}' for r in cpu_rounds)}), {ratio:.2f}x wall "
                    f"(rounds {', '.join(f'{r:.2f}' for r in per_round)})"
                    + (f"; target >= {target}x" if judged else ""))
            if judged and mark == "MISS":
                step_part = part.replace("train()", "step")
                shares = encode_shares(blocks, step_part, checkpointing)
                if shares:
                    encoders = 1 - shares["unet+update"]
                    text += (f". Why: data + VAE + text encoder are {100 * encoders:.0f}% of an encode-every-step step "
                             f"({step_part}), so no cache can give more than {1 / (1 - encoders):.2f}x")
            lines.append(text)

    def checkpointing(part: str, loop: str, target: float | None, label: str) -> None:
        off, on = pick(live, part, loop, False), pick(live, part, loop, True)
        rss_ratio, rss_rounds = median_ratio(blocks, part, (loop, True), (loop, False), activations)
        rss_text = f"; default-malloc rss: {100 * (1 - rss_ratio):.0f}%" if rss_rounds else ""
        if off and on:
            reduction = 1 - on[0].activations / off[0].activations
            mark = verdict(reduction, target) if target is not None else "info"
            text = (f"{mark}  checkpointing cuts live activation memory, {label}, {loop} loop: {100 * reduction:.0f}% "
                    f"({off[0].activations / MiB:.0f} -> {on[0].activations / MiB:.0f} MiB){rss_text}"
                    + (f"; target >= {100 * target:.0f}%" if target is not None else ""))
        elif rss_rounds:
            text = f"info  checkpointing cuts activation memory (default-malloc rss only), {label}, {loop} loop{rss_text}"
        else:
            return
        lines.append(text)

    caching("tiny train()", TARGET_TINY_CACHING, "tiny, fairsynth train() cache on vs off")
    caching("tiny step", None, "tiny, step level vs the diffusers loop")
    caching("sd15 step", TARGET_SD15_CACHING, "SD 1.5 256px, step level vs the diffusers loop")
    checkpointing("tiny train()", "cached", None, "tiny train()")
    checkpointing("tiny step", "cached", None, "tiny step")
    checkpointing("sd15 step", "cached", TARGET_SD15_CHECKPOINTING, "SD 1.5 256px")
    checkpointing("sd15 step", "encode", None, "SD 1.5 256px")
    print("\nSummary")
    for line in lines:
        print("  " + line)


def run_benches(scales: list[str], args: argparse.Namespace, workdir: Path, log: Callable[[str], None],
                 memory_pass: bool) -> tuple[list[Block], list[str]]:
    """Timing rounds (or, with ``memory_pass``, one warm-up and one measured step per variant) of
    every part of ``scales``; one model in memory at a time."""
    blocks: list[Block] = []
    details: list[str] = []
    for scale in scales:
        steps = args.steps or DEFAULT_STEPS[scale]
        rounds = args.rounds or DEFAULT_ROUNDS[scale]
        makers: list[Callable[[], Any]] = []
        if scale == "tiny":
            makers.append(lambda: TrainBench(workdir, args.images))
        makers.append(lambda: StepBench(scale, workdir, args.images, args.bf16))
        for make in makers:
            bench = make()
            if not memory_pass:
                log(f"{bench.part}: {SIZES[scale]} px, {rounds} rounds x 4 variants x {steps} steps, "
                    f"resident {settle() / GiB:.2f} GiB")
            bench.warm_up()
            for round_index in [-1] if memory_pass else range(rounds):
                for loop, checkpointing in VARIANTS if memory_pass else abba(round_index):
                    block = bench.block(loop, checkpointing, 1 if memory_pass else steps, round_index)
                    blocks.append(block)
                    if memory_pass:
                        log(f"  {block.part}: {loop:6s} ckpt {'on ' if checkpointing else 'off'} weights "
                            f"{block.weights / GiB:.2f} GiB, live activations {block.activations / MiB:7.1f} MiB")
                    else:
                        log(f"  {block.part}: round {round_index} {loop:6s} ckpt {'on ' if checkpointing else 'off'} "
                            f"{block.median:7.3f}s/step wall {block.cpu_median:7.3f}s cpu  "
                            f"act rss {block.activations / MiB:7.1f} MiB")
            details += bench.details()
            del bench
            settle()
    return blocks, details


def live_memory(args: argparse.Namespace, workdir: Path) -> list[Block]:
    """The live-memory pass, in a child process with malloc's mmap threshold pinned from its start."""
    out = workdir / "live_memory.json"
    print(f"live-memory pass: this process keeps {settle() / GiB:.2f} GiB resident meanwhile", flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--scale", args.scale, "--images", str(args.images),
               "--threads", str(args.threads), "--workdir", str(workdir), "--memory-pass", str(out)]
    command += ["--bf16"] if args.bf16 else []
    subprocess.run(command, env={**os.environ, **PINNED_MALLOC_ENV}, check=True)
    return [Block(**row) for row in json.loads(out.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python benchmarks/bench_train.py --scale tiny\n"
               "  nice -n 5 python benchmarks/bench_train.py --scale sd15 --steps 2 --rounds 2",
    )
    parser.add_argument("--scale", choices=["tiny", "sd15", "all"], default="tiny", help="which pipeline(s) (default tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default: tiny 30, sd15 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all four variants (default: tiny 4, sd15 2)")
    parser.add_argument("--images", type=int, default=8, help="training images, each cached once (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steady on a shared machine)")
    parser.add_argument("--bf16", action="store_true", help="step level only: bf16 autocast instead of float32")
    parser.add_argument("--json", type=Path, default=None, help="also write every block's numbers to this file")
    parser.add_argument("--workdir", type=Path, default=None, help="data, bases and caches (default: a temporary folder)")
    parser.add_argument("--memory-pass", type=Path, default=None, help="internal: run the live-memory pass, write it here")
    args = parser.parse_args()

    check_memory_probe()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_"))
    workdir.mkdir(parents=True, exist_ok=True)
    scales = ["tiny", "sd15"] if args.scale == "all" else [args.scale]

    def log(text: str) -> None:
        print(text, flush=True)

    if args.memory_pass is not None:
        if os.environ.get("MALLOC_MMAP_THRESHOLD_") != PINNED_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]:
            raise SystemExit(f"--memory-pass needs the environment {PINNED_MALLOC_ENV}")
        log(f"live-memory pass (child process, {PINNED_MALLOC_ENV}): one warm-up and one measured step per variant")
        live, _ = run_benches(scales, args, workdir, log, memory_pass=True)
        args.memory_pass.write_text(json.dumps([asdict(b) for b in live]))
        return

    precision = "bf16 autocast at step level" if args.bf16 else "float32"
    print(f"# bench_train: LoRA rank 8 (attention q/k/v/out), batch 1, {precision}, torch {torch.__version__}, "
          f"{args.threads} thread(s), cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, workdir {workdir}",
          flush=True)
    started = time.perf_counter()
    blocks, details = run_benches(scales, args, workdir, log, memory_pass=False)
    live = live_memory(args, workdir)
    print(f"\nmeasured in {time.perf_counter() - started:.0f}s, load average now {os.getloadavg()[0]:.2f}")
    report(blocks, live, details)
    if args.json:
        args.json.write_text(json.dumps([asdict(b) for b in blocks + live], indent=1))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
