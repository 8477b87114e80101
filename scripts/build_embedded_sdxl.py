#!/usr/bin/env python
"""Build fairsynth's embedded SDXL-shaped base (two text encoders) on top of the embedded SD base.

    # the shipped build: about half an hour on one CPU thread, resumable
    nohup nice -n 19 python scripts/build_embedded_sdxl.py \\
        --out src/fairsynth/assets/base/tiny-sdxl --max-minutes 30 --resume > /tmp/build_sdxl.log 2>&1 &
    # a one-minute end-to-end check with tiny settings
    python scripts/build_embedded_sdxl.py --smoke --out /tmp/tiny-sdxl-smoke --work /tmp/tiny-sdxl-smoke-work

Why: the SDXL code paths (two text encoders, pooled text embedding, size/crop time ids, the
Euler sampler, ``StableDiffusionXLPipeline``) must run end to end offline, on a base that
draws what it is asked, as the SD paths do on ``tiny-sd``. A smaller effort than the SD base:
only the UNet is trained; everything else is reused from ``tiny-sd`` (which must be built):

- ``vae/``, ``tokenizer/`` and ``text_encoder/`` (CLIP-L's role) are byte copies of
  ``tiny-sd``'s: trained, frozen, and stored once by git.
- ``text_encoder_2/`` (OpenCLIP bigG's role, ``CLIPTextModelWithProjection``) holds the same
  text model weights plus an identity ``text_projection``: its pooled output is the trained
  encoder's final-layer-normed end-of-text state. ``tokenizer_2/`` pads with "!" as SDXL's.

Stages, checkpointed atomically in ``--work`` (``--resume`` continues; ``--max-minutes``
bounds one invocation; SIGTERM/SIGINT checkpoint before exiting):

1. **latents** — generic training images (held-out combinations excluded) encoded once by the
   reused VAE (``build_embedded_base.stage_latents``); the diffusion model sees them scaled by
   the VAE's shipped ``scaling_factor``.
2. **unet** — the SDXL-shaped UNet (:func:`fairsynth.models.embedded.embedded_sdxl_configs`)
   from scratch: epsilon prediction with Min-SNR-gamma weights (Hang et al. 2023), offset noise,
   EMA weights, conditioned as ``StableDiffusionXLPipeline`` conditions it (penultimate hidden
   states of both encoders concatenated, pooled projection of the second, and the time ids
   (original size, crop, target size) of Podell et al. 2023, sec. 2.2). Dropped captions
   (classifier-free guidance, Ho & Salimans 2022) are zeros half of the time — what the SDXL
   pipeline feeds as the unconditional input (``force_zeros_for_empty_prompt``) — and the
   encoded empty caption otherwise, what fairsynth's training-time previews feed.
3. **export** — the EMA weights as a diffusers SDXL folder (safetensors, SDXL's Euler scheduler);
   the folder is loaded back with ``StableDiffusionXLPipeline.from_pretrained`` and its prompt
   following measured (``fairsynth.world.generic.read_attributes`` on held-out and seen
   prompts); ``measurements.json`` and the model card ``README.md`` record the numbers.

Reproducibility as ``build_embedded_base.py`` (whose helpers this script imports): the same
seed, settings, machine, libraries and thread count give the same weights; every random draw is
keyed by (seed, step), so a resumed build equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_embedded_base as sd_build  # noqa: E402  (the SD base's build: shared stages and helpers)

from fairsynth.config import knob  # noqa: E402
from fairsynth.io import atomic_write_text, staged_dir  # noqa: E402
from fairsynth.methods.base import Components, encode_prompts  # noqa: E402
from fairsynth.models.architectures import scheduler_from_config, training_noise_scheduler  # noqa: E402
from fairsynth.models.embedded import (  # noqa: E402
    EMBEDDED_SDXL_TIME_IDS,
    embedded_base_path,
    embedded_sdxl_configs,
    folder_bytes,
    save_embedded_pipeline,
    weights_bytes,
)
from fairsynth.models.loading import model_hash  # noqa: E402
from fairsynth.models.tokenizer import clip_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Component folders copied byte for byte from the SD base.
REUSED = ("vae", "text_encoder", "tokenizer")


@dataclass
class BuildConfig:
    """Every setting that decides the weights (saved in <work>/config.json, checked on --resume)."""

    seed: int = knob(0, "Seed of every random draw (world, initial weights, noise, batches).")
    threads: int = knob(1, "torch/OpenCV threads; 1 keeps runs bit-reproducible and leaves a core to others.")
    precision: str = knob("fp32", "fp32, or bf16 (CPU autocast); measured at 0.37 vs 0.40 CPU s/step, so fp32.")
    images: int = knob(16000, "Generic training images encoded once (held-out combinations excluded).")
    steps: int = knob(3000, "Target UNet steps; the learning rate follows a cosine over them.")
    batch_size: int = knob(32, "Latents per UNet step.")
    learning_rate: float = knob(1e-3, "Peak AdamW learning rate of the UNet.")
    warmup_steps: int = knob(300, "Linear warm-up steps.")
    min_lr_ratio: float = knob(0.1, "Final learning rate as a share of the peak.")
    weight_decay: float = knob(1e-2, "AdamW weight decay.")
    ema_decay: float = knob(0.999, "EMA decay of the exported weights.")
    caption_dropout: float = knob(0.1, "Share of dropped captions (half zeros, half the empty caption).")
    min_snr_gamma: float = knob(5.0, "Min-SNR-gamma (Hang et al. 2023); 0 disables the weighting.")
    noise_offset: float = knob(0.3, "Offset noise std, as the SD base (see build_embedded_base.py for why).")
    eval_every: int = knob(1000, "UNet steps between prompt-following measurements.")
    eval_prompts: int = knob(48, "Prompts per measurement and split (held-out, seen).")
    eval_inference_steps: int = knob(25, "DDIM steps per measured image.")
    guidance_scale: float = knob(4.0, "Classifier-free guidance scale of measured images.")
    log_every: int = knob(50, "Steps between loss rows in the CSV.")

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        for name in ("threads", "batch_size", "images", "steps", "eval_every", "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


#: Settings of ``--smoke``: seconds per stage, to check the script end to end.
SMOKE = dict(images=256, steps=40, warmup_steps=10, eval_every=20, eval_prompts=4, eval_inference_steps=5, log_every=10)


# --------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------


def reused_components(base: Path) -> dict[str, Any]:
    """VAE, tokenizers and both text encoders from the SD base folder ``base`` (frozen)."""
    configs = embedded_sdxl_configs()
    vae = AutoencoderKL.from_pretrained(base / "vae")
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
    # SDXL's second encoder: the same text model plus a projection of its pooled output.
    # Identity, so the pooled embedding is the trained encoder's own summary of the caption.
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    # (transformers 5 flattens CLIPTextModel's text_model into the model itself; 4 nests it)
    text_encoder_2.text_model.load_state_dict(getattr(text_encoder, "text_model", text_encoder).state_dict())
    with torch.no_grad():
        text_encoder_2.text_projection.weight.copy_(torch.eye(configs["text_encoder_2"]["projection_dim"]))
    for module in (vae, text_encoder, text_encoder_2):
        module.requires_grad_(False).eval()
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": clip_tokenizer(**configs["tokenizer"]),
        "tokenizer_2": clip_tokenizer(**configs["tokenizer_2"]),
        "scheduler": scheduler_from_config(configs["scheduler"]),
    }


def new_unet(seed: int) -> UNet2DConditionModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**embedded_sdxl_configs()["unet"])


# --------------------------------------------------------------------------------------
# Stage 2: the UNet
# --------------------------------------------------------------------------------------


def stage_unet(
    config: BuildConfig, work: Path, log: Any, budget: Any, frozen: dict[str, Any], cache: dict[str, torch.Tensor], state: dict
) -> dict[str, Any]:
    """Train the SDXL-shaped UNet; returns the components with the EMA UNet (also when stopped early)."""
    path = work / "unet_stage.pt"
    unet = new_unet(config.seed).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    ema_unet = copy.deepcopy(unet).eval()
    step = 0
    if path.exists():
        checkpoint = sd_build.load_checkpoint(path)
        unet.load_state_dict(checkpoint["unet"])
        ema_unet.load_state_dict(checkpoint["ema_unet"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = int(checkpoint["step"])
        log.truncate_after("unet", step)
    exported = {**frozen, "unet": ema_unet}
    components = Components(
        unet=unet, vae=frozen["vae"], text_encoders=[frozen["text_encoder"], frozen["text_encoder_2"]],
        tokenizers=[frozen["tokenizer"], frozen["tokenizer_2"]], noise_scheduler=None, kind="sdxl",
    )
    noise_scheduler = training_noise_scheduler(embedded_sdxl_configs()["scheduler"])
    alphas_cumprod = noise_scheduler.alphas_cumprod  # (1000,)
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    scaling = float(frozen["vae"].config.scaling_factor)
    n_images = len(cache["mean"])
    tokenizer = frozen["tokenizer"]
    captions_of = lambda ids: tokenizer.batch_decode(ids, skip_special_tokens=True)  # noqa: E731
    time_ids = torch.tensor([EMBEDDED_SDXL_TIME_IDS], dtype=torch.float32)  # (1, 6)
    with torch.no_grad():
        empty = encode_prompts(components, [""], time_ids)
    prompts = sd_build.eval_prompts(config)
    if "reader_ceiling" not in state:
        state["reader_ceiling"] = sd_build.reader_ceiling(config, prompts)
        log.write("unet", step, {f"ceiling_{k}": v for k, v in state["reader_ceiling"].items()})
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16")

    def checkpoint() -> None:
        sd_build.save_checkpoint(path, {
            "unet": unet.state_dict(), "ema_unet": ema_unet.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        })
        state["unet_step"] = step
        atomic_write_text(work / "state.json", json.dumps(state, indent=1) + "\n")

    def measure() -> None:
        scores = sd_build.measure_prompt_following(config, exported, prompts)
        state["prompt_following"] = {"step": step, **scores}
        log.write("unet", step, scores)

    if step == 0:
        measure()  # the untrained UNet: the floor the trained one is compared with
    unet.train()
    totals: dict[str, float] = {}
    timer, last_save = time.perf_counter(), time.perf_counter()
    while step < config.steps and not budget.over():
        generator = sd_build.step_generator(config.seed, 3, step)
        # 1. a batch: an epoch is a permutation keyed by (seed, epoch), so batches depend on the step only
        epoch, offset = divmod(step * config.batch_size, n_images)
        order = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7, epoch))).permutation(n_images)
        index = torch.from_numpy(np.resize(np.roll(order, -offset), config.batch_size))
        mean, std = cache["mean"][index].float(), cache["std"][index].float()
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling  # (B, 4, 16, 16)
        batch_time_ids = time_ids.expand(len(index), 6)  # (B, 6)
        with torch.no_grad():
            cond = encode_prompts(components, captions_of(cache["input_ids"][index].long()), batch_time_ids)
        states, pooled = cond.encoder_hidden_states.clone(), cond.added_cond_kwargs["text_embeds"].clone()  # (B, 77, 64), (B, 32)
        # 2. caption dropout: zeros (the SDXL pipeline's unconditional input) or the empty caption
        drop = torch.rand(len(index), generator=generator)
        zeroed, emptied = drop < config.caption_dropout / 2, (drop >= config.caption_dropout / 2) & (drop < config.caption_dropout)
        states[zeroed], pooled[zeroed] = 0.0, 0.0
        states[emptied], pooled[emptied] = empty.encoder_hidden_states[0], empty.added_cond_kwargs["text_embeds"][0]
        # 3. forward diffusion q(x_t | x_0) (DDPM, Ho et al. 2020, eq. 4)
        noise = torch.randn(latents.shape, generator=generator)
        if config.noise_offset:
            noise = noise + config.noise_offset * torch.randn(len(index), 4, 1, 1, generator=generator)  # (B, 4, 1, 1)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        lr = sd_build.lr_at(step, config.learning_rate, config.warmup_steps, config.steps, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            added = {"text_embeds": pooled, "time_ids": batch_time_ids}
            prediction = unet(noisy, timesteps, states, added_cond_kwargs=added).sample  # (B, 4, 16, 16)
        mse = ((prediction.float() - noise) ** 2).mean(dim=(1, 2, 3))  # (B,)
        # 4. Min-SNR-gamma for epsilon prediction: w_t = min(SNR_t, gamma) / SNR_t (Hang et al. 2023)
        if config.min_snr_gamma > 0:
            snr_t = snr[timesteps]
            weights = torch.clamp(snr_t, max=config.min_snr_gamma) / snr_t
        else:
            weights = torch.ones_like(mse)
        loss = (weights * mse).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        step += 1
        sd_build.ema_update(ema_unet, unet, min(config.ema_decay, (1 + step) / (10 + step)))
        for name, value in (("loss", loss), ("mse", mse.mean()), ("grad_norm", grad_norm)):
            totals[name] = totals.get(name, 0.0) + float(value.detach())
        if step % config.log_every == 0:
            seconds = (time.perf_counter() - timer) / config.log_every
            log.write("unet", step, {**{k: v / config.log_every for k, v in totals.items()}, "lr": lr, "seconds_per_step": seconds})
            state["last_losses"] = {"step": step, **{k: v / config.log_every for k, v in totals.items()}, "seconds_per_step": seconds}
            totals, timer = {}, time.perf_counter()
        if step % config.eval_every == 0 or step == config.steps:
            measure()
            unet.train()
            timer = time.perf_counter()
        if time.perf_counter() - last_save > 300:
            checkpoint()
            last_save = time.perf_counter()
    checkpoint()
    return exported


# --------------------------------------------------------------------------------------
# Stage 3: export, measured through StableDiffusionXLPipeline.from_pretrained
# --------------------------------------------------------------------------------------


def model_card(config: BuildConfig, measurements: dict[str, Any]) -> str:
    """The README.md of the shipped folder, rendered from ``measurements.json``."""
    follows, reader, chance = measurements["prompt_following"], measurements["reader_ceiling"], measurements["chance"]
    rows = "\n".join(
        f"| {split} | {name} | {follows[f'{split}_{name}']:.3f} | {reader[f'{split}_{name}']:.3f} | {chance[name]:.3f} |"
        for split in ("held_out", "seen") for name in ("background", "colour", "size", "all")
    )
    sizes = measurements["sizes"]
    settings = "\n".join(f"| `{k}` | {v} |" for k, v in dataclasses.asdict(config).items())
    step = measurements["unet_step"]
    commands = measurements.get("commands", [])
    invocations = (
        f"\nBuilt in {len(commands)} invocations (a resumed build equals an uninterrupted one):\n\n"
        + "\n".join(f"1. `{c}`" for c in commands) + "\n"
    ) if len(commands) > 1 else ""
    status = "complete" if step >= config.steps else f"snapshot at UNet step {step} of {config.steps} (resume the build to continue)"
    return f"""# fairsynth embedded SDXL-shaped base (tiny-sdxl)

A tiny SDXL-shaped pipeline (diffusers `StableDiffusionXLPipeline` format, float32
safetensors) for testing fairsynth's SDXL paths offline: two text encoders, pooled text
embedding, size/crop micro-conditioning, SDXL's Euler sampler. Built on the embedded SD base
(`tiny-sd`): its VAE, tokenizer and text encoder are reused, frozen (`vae/`, `tokenizer/`,
`text_encoder/` are byte copies); `text_encoder_2` is the same text model with an identity
`text_projection`; only the UNet (SDXL block order, `addition_embed_type="text_time"`,
cross-attention on 32 + 32 dims) was trained, on the generic world
(`fairsynth.world.generic`) with time ids {list(EMBEDDED_SDXL_TIME_IDS)}. It has never seen a
lesion, skin, or a medical word.

Load: `StableDiffusionXLPipeline.from_pretrained(fairsynth.models.embedded.embedded_sdxl_base_path())`,
or `train.base.source: embedded-sdxl`. Draw at 64 x 64 px.
Prompts look like: `a small smooth brown round blob on a beige background`.

**Status: {status}.** A smaller effort than `tiny-sd`: only the UNet was trained, with the text
encoder it conditions on already trained; compare its numbers with `tiny-sd`'s model card.

## Build

```
{measurements['command']}
```
{invocations}
- seed: {config.seed}; threads: {config.threads}; precision: {config.precision}
- UNet steps: {step}; build wall time: {measurements['elapsed_seconds'] / 60:.1f} min on {measurements['machine']}
- SD base weights (sha256 of its folder's weight files): `{measurements['sd_base_hash']}`
- libraries: {", ".join(f"{k} {v}" for k, v in measurements['libraries'].items())}
- reproducible: same seed, settings, SD base, machine, libraries and thread count give the same
  weights; every random draw is keyed by (seed, step), so resumed builds equal uninterrupted ones.

## Size

| component | parameters | safetensors bytes |
|---|---|---|
{chr(10).join(f"| {name} | {sizes['parameters'][name]:,} | {sizes['bytes'][name]:,} |" for name in sizes['parameters'])}

Weights: {sizes['weights_bytes']:,} bytes; whole folder: {sizes['folder_bytes']:,} bytes. Most of it is the
two copies of the text model's 49408-token embedding table (CLIP's whole vocabulary, so SD's token
ids work unchanged).

## Measurements

Prompt following of the exported folder loaded with `StableDiffusionXLPipeline.from_pretrained`
(EMA weights, DDIM {config.eval_inference_steps} steps, guidance {config.guidance_scale}, 64 px,
{config.eval_prompts} prompts per split; "held_out" = (colour, shape, background) combinations never
seen in training; read from pixels by `fairsynth.world.generic.read_attributes`; "reader on real" =
the same reader on real world images of the same prompts, the best a model can score; every number
is in `measurements.json`):

| split | attribute | base | reader on real | chance |
|---|---|---|---|---|
{rows}

Last training losses (mean of the last {config.log_every} steps): {json.dumps(measurements['last_losses'])}

## Settings

| setting | value |
|---|---|
{settings}
"""


def stage_export(config: BuildConfig, out: Path, base: Path, components: dict[str, Any], state: dict, command: str, elapsed: float) -> dict[str, Any]:
    """Write the folder, load it back with StableDiffusionXLPipeline, measure it, write the card."""
    with staged_dir(out) as staging:
        save_embedded_pipeline(components, staging)
        for name in REUSED:  # byte copies: the same weights, stored once by git
            shutil.rmtree(staging / name)
            shutil.copytree(base / name, staging / name)
        pipeline = StableDiffusionXLPipeline.from_pretrained(staging)
        follows = sd_build.measure_prompt_following(config, pipeline.components, sd_build.eval_prompts(config))
        modules = ("unet", "vae", "text_encoder", "text_encoder_2")
        sizes = {
            "parameters": {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in modules},
            "bytes": {name: weights_bytes(staging / name) for name in modules},
            "weights_bytes": weights_bytes(staging),
            "folder_bytes": folder_bytes(staging),  # before the card and measurements: a few kB
        }
        libraries = {name: __import__(name).__version__ for name in ("torch", "diffusers", "transformers", "numpy")}
        libraries["opencv"] = cv2.__version__
        measurements = {
            "command": command,
            "commands": state.get("commands", [command]),
            "unet_step": state.get("unet_step", 0),
            "elapsed_seconds": round(elapsed, 1),
            "machine": f"{platform.processor() or platform.machine()} ({platform.platform()})",
            "libraries": libraries,
            "sd_base_hash": model_hash(base),
            "prompt_following": follows,
            "prompt_following_during_training": state.get("prompt_following", {}),
            "reader_ceiling": state["reader_ceiling"],
            "chance": sd_build.chance_levels(),
            "last_losses": state.get("last_losses", {}),
            "sizes": sizes,
            "settings": dataclasses.asdict(config),
        }
        atomic_write_text(staging / "measurements.json", json.dumps(measurements, indent=1) + "\n")
        atomic_write_text(staging / "README.md", model_card(config, measurements))
    return measurements


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: Iterable[str] | None = None) -> tuple[argparse.Namespace, BuildConfig]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: nohup nice -n 19 python scripts/build_embedded_sdxl.py --out src/fairsynth/assets/base/tiny-sdxl "
        "--max-minutes 30 --resume > /tmp/build_sdxl.log 2>&1 &",
    )
    parser.add_argument("--out", type=Path, default=REPO / "src/fairsynth/assets/base/tiny-sdxl", help="Folder the diffusers SDXL pipeline is written to.")
    parser.add_argument("--base", type=Path, default=None, help="The SD base folder whose VAE, tokenizer and text encoder are reused (default: the shipped tiny-sd).")
    parser.add_argument("--work", type=Path, default=None, help="Checkpoints and log.csv (default: runs/embedded-sdxl, or runs/embedded-sdxl-smoke with --smoke).")
    parser.add_argument("--resume", action="store_true", help="Continue from the checkpoints in --work (settings must match).")
    parser.add_argument("--max-minutes", type=float, default=None, help="Stop training (checkpoint, export, measure) after this many minutes.")
    parser.add_argument("--smoke", action="store_true", help="Tiny settings: every stage for seconds (end-to-end check).")
    for field in dataclasses.fields(BuildConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=None, help=f"{field.metadata['help']} (default {field.default})".replace('%', '%%'))
    args = parser.parse_args(list(argv) if argv is not None else None)
    values = dict(SMOKE) if args.smoke else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig) if getattr(args, f.name) is not None})
    args.work = args.work or REPO / ("runs/embedded-sdxl-smoke" if args.smoke else "runs/embedded-sdxl")
    return args, BuildConfig(**values)


def main(argv: Iterable[str] | None = None) -> int:
    args, config = parse_args(argv)
    torch.set_num_threads(config.threads)
    cv2.setNumThreads(config.threads)
    base: Path = args.base or embedded_base_path()  # raises EmbeddedBaseMissing, naming its build command
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    config_path, state_path = work / "config.json", work / "state.json"
    saved = json.loads(config_path.read_text()) if config_path.exists() else None
    if saved is not None and not args.resume:
        print(f"error: {work} holds a build; pass --resume to continue it, or choose another --work", file=sys.stderr)
        return 2
    if saved is not None:
        defaults = dataclasses.asdict(BuildConfig())
        current = dataclasses.asdict(config)
        # images decides the latents; every other setting the UNet (or only its measurement)
        started = {"images": (work / "latents.pt").exists()}
        changed = sorted(
            k for k in current
            if saved.get(k, defaults[k]) != current[k] and started.get(k, (work / "unet_stage.pt").exists())
        )
        if changed:
            print(f"error: settings differ from the build in {work}: {', '.join(changed)}", file=sys.stderr)
            return 2
    atomic_write_text(config_path, json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    budget = sd_build.Budget(args.max_minutes)
    log = sd_build.Log(work / "log.csv", float(state.get("elapsed_seconds", 0.0)))
    command = "python scripts/build_embedded_sdxl.py " + " ".join(sys.argv[1:]) if argv is None else "build_embedded_sdxl.main(...)"

    def save_state() -> None:
        state["elapsed_seconds"] = log.elapsed()
        atomic_write_text(state_path, json.dumps(state, indent=1) + "\n")

    state.setdefault("commands", []).append(command)
    print(f"building the embedded SDXL base: base {base}, work {work}, out {args.out}, settings {json.dumps(dataclasses.asdict(config))}", flush=True)
    frozen = reused_components(base)
    shipped_scaling = float(frozen["vae"].config.scaling_factor)
    cache = sd_build.stage_latents(config, work, log, frozen["vae"])  # type: ignore[arg-type]
    frozen["vae"].register_to_config(scaling_factor=shipped_scaling)  # the reused VAE stays as shipped
    components = stage_unet(config, work, log, budget, frozen, cache, state)
    save_state()
    measurements = stage_export(config, args.out, base, components, state, command, log.elapsed())
    state["exported_prompt_following"] = measurements["prompt_following"]
    save_state()
    follows = measurements["prompt_following"]
    print(
        f"{'finished' if state.get('unet_step', 0) >= config.steps else 'stopped (budget)'} at UNet step {state.get('unet_step')}; "
        f"wrote {args.out} ({measurements['sizes']['folder_bytes']:,} bytes); prompt following "
        + " ".join(f"{k}={v:.3f}" for k, v in follows.items()),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
