"""The training loop: one method, one base model, one prepared dataset.

    result = train(load_recipe("recipes/fairskin_derm.yaml"), resume="latest")

Read top to bottom, :func:`train` does:

1. the accelerator (devices, precision, processes — ``accelerate launch`` works as is);
2. the records of the training split and every bad-input error before any model loads;
3. the base model and its DDPM training noise schedule;
4. the method: ``check``, ``extra_records``, ``prepare``, its phases;
5. examples, resolution buckets and the balanced batch sampler (FairSkin's skin-type mix);
6. devices and precision of the components;
7. the latent and text caches, filled once;
8. the checkpoint to resume from, if any;
9. the steps: per phase an optimiser over ``method.parameter_groups``; per step a batch,
   latents, noise, the denoising loss (Min-SNR-γ, method weights, class diversity), the
   update, ``method.after_step``, EMA, logs, checkpoints and validation;
10. the outputs: optionally the VAE's decoder adapted to the training images
    (:mod:`fairsynth.training.vae_decoder`), ``method.export``, the resolved config,
    ``training_info.json``, ``README.md``.

Every random number of step ``s`` comes from generators seeded by (seed, ``s``)
(:mod:`fairsynth.training.randomness`), so a run resumed from a checkpoint at step ``s``
continues exactly as the uninterrupted run would have.

Several processes (``accelerate launch --multi_gpu --num_processes N -m fairsynth.cli train
...``; on a machine without GPUs the processes join one CPU/gloo group): each draws its own
batches (its process index is part of the seeds), gradients are averaged over processes
before each update so every process holds the same weights, and process 0 alone writes
checkpoints, logs, validation images and outputs. A resume needs the same number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm

from fairsynth.config import ConfigError, save_resolved, to_dict
from fairsynth.data.records import Record, read_manifest
from fairsynth.data.sampling import sampling_weights
from fairsynth.io import (
    append_through,
    atomic_write_bytes,
    atomic_write_text,
    canonical_safetensors,
    crash_point,
    remove_temporaries,
    sha256_file,
)
from fairsynth.lock import hold
from fairsynth.methods.base import Batch, Components, Conditioning, Method, MethodError, Phase, trainable_count
from fairsynth.training.caching import LatentCache, TextCache, sample_latents
from fairsynth.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_latest_readable,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
    set_rng_state,
)
from fairsynth.training.config import TrainConfig
from fairsynth.training.data import BatchSampler, TrainingExample, drop_captions, load_split, make_examples
from fairsynth.training.ema import TrainableEMA
from fairsynth.training.fid import FidTracker, create_fid_extractor
from fairsynth.training.losses import (
    class_diversity_loss,
    denoise,
    min_snr_weights,
    offset_noise,
    per_sample_mse,
    predicted_x0,
    snr,
    target_for,
    update_pool,
    x0_embedding,
)
from fairsynth.training.randomness import StepRandom, derived_seed
from fairsynth.training.vae_decoder import adapt_decoder
from fairsynth.training.validation import grid_cells, sample_grid, save_grid, validation_loss


class TrainJob(Protocol):
    """What :func:`train` reads of a study: its ``train`` section (a :class:`fairsynth.recipe.Recipe`
    is one; a stage does not import the recipe that composes every stage). The whole job is saved
    beside the model as ``config.yaml``."""

    train: TrainConfig


logger = logging.getLogger(__name__)

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Train settings that may change between a checkpoint and its resume without changing what the steps
#: compute (the decoder adaptation runs after the last step, from the settings of the resumed run).
RESUMABLE_CHANGES = frozenset(
    {"output", "cache_dir", "data", "validation", "checkpoint_every", "keep_checkpoints", "report_to", "log_every",
     "cache_latents", "cache_text", "vae_decoder"}
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    model_dir: Path
    steps: int
    final_loss: float
    exports: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: Loss of every step this call ran (averaged over processes), in order.
    losses: list[float] = field(default_factory=list)
    #: Validation loss by step, where it was measured (process 0).
    val_losses: dict[int, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Small pieces of the loop
# --------------------------------------------------------------------------------------


def _check_optimizer(cfg: TrainConfig) -> None:
    """adamw8bit is refused (not silently replaced) where it cannot run."""
    if cfg.optimizer != "adamw8bit":
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("train.optimizer=adamw8bit needs bitsandbytes (pip install bitsandbytes); use adamw") from None
    if not torch.cuda.is_available():
        raise ConfigError("train.optimizer=adamw8bit needs a CUDA GPU; use adamw on this machine")


def _check_logging(cfg: TrainConfig) -> None:
    """accelerate skips a tracker it cannot import without a word; we refuse instead."""
    if cfg.report_to != "tensorboard":
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "train.report_to=tensorboard needs the tensorboard package (pip install tensorboard); "
            "or set train.report_to=none"
        ) from None


def _make_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    kwargs = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, phase: Phase) -> Any:
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        phase.lr_scheduler or cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=phase.steps,
        num_cycles=cfg.lr_num_cycles,
    )


def _phase_at(phases: list[Phase], step: int) -> tuple[int, Phase]:
    """The phase (index, phase) that step ``step`` (0-based) belongs to."""
    end = 0
    for index, phase in enumerate(phases):
        end += phase.steps
        if step < end:
            return index, phase
    return len(phases) - 1, phases[-1]


def _named_parameters(components: Components) -> dict[str, torch.nn.Parameter]:
    """Every parameter of the components by a stable name (``unet.conv_in.weight``)."""
    return {
        f"{module_name}.{name}": param
        for module_name, module in components.modules().items()
        for name, param in module.named_parameters()
    }


def _group_params(groups: list[dict[str, Any]]) -> list[torch.nn.Parameter]:
    return [p for g in groups for p in g["params"]]


def _average_gradients(params: list[torch.nn.Parameter], accelerator: Accelerator) -> None:
    """Mean of each gradient over processes (every process drew its own batch)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for param, grad in zip(params, grads):
        count = grad.numel()
        param.grad = flat[offset : offset + count].view_as(grad).to(grad.dtype).clone()
        offset += count


def _is_synthetic(record: Record) -> bool:
    value = record.attributes.get("synthetic")
    return value is True or value == 1 or str(value).strip().lower() in ("true", "yes", "1")


def _flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """Scalars of the config for TensorBoard's hyper-parameter table."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float, str, bool)):
            out[prefix.rstrip(".")] = value

    walk("", to_dict(cfg))
    return out


def _compare_configs(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        if saved.get(key) != current.get(key):
            changes.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    return changes


@contextlib.contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    """Like :func:`fairsynth.io.staged_dir`, but the folder being built already has its final
    name (``<parent>/.<name>.partial/<name>``): exports that name files after their folder
    (LoRA's ``<name>_kohya.safetensors``) come out right."""
    holder = target.parent / f".{target.name}.partial"
    if holder.exists():
        shutil.rmtree(holder)
    staging = holder / target.name
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    crash_point("swap")
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(holder, ignore_errors=True)


def _checkpoint_to_resume(
    resume: str | Path | None, root: Path, cfg: TrainConfig, world: int, is_main: bool = True
) -> Checkpoint | None:
    """The checkpoint ``--resume`` names, checked to continue this very run exactly."""
    if str(resume) == "latest":
        # a damaged newest checkpoint is passed over, loudly, for the one before it
        checkpoint = load_latest_readable(root, warn=logger.warning if is_main else None)
        if checkpoint is None:
            return None
        path = checkpoint.path
    else:
        path = resolve_resume(resume, root)
        if path is None:
            return None
        checkpoint = load_checkpoint(path)
    changes = _compare_configs(checkpoint.state.get("config", {}), to_dict(cfg))
    if changes:
        raise ConfigError(
            f"checkpoint {path} was written with other train settings ({'; '.join(changes)}); "
            "resume with the same recipe or train into a new output folder"
        )
    if checkpoint.state.get("num_processes", 1) != world:
        raise ConfigError(
            f"checkpoint {path} was written by {checkpoint.state.get('num_processes')} processes; "
            f"resume with the same number (now {world}) to continue exactly"
        )
    return checkpoint


def _size_on_disk(paths: dict[str, Path]) -> int:
    total = 0
    for path in paths.values():
        path = Path(path)
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def train(recipe: "TrainJob", *, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Fine-tune ``recipe.train.base`` with ``recipe.train.method`` on the prepared data.

    Args:
        recipe: the study; its ``train`` section says everything (folders already derived).
        resume: ``"latest"`` (the newest checkpoint in ``<output>/checkpoints``, or a fresh
            start when there is none), a checkpoint folder, or None for a fresh start.
        progress: show a progress bar (process 0 only).

    Raises:
        ConfigError, MethodError, ValueError, FileNotFoundError: bad input, before training.
        TrainingDiverged: the loss became NaN or infinite (the last good checkpoint stays).
        StudyLocked: another process is training into the same output folder.
    """
    # One writer per output folder, whether run alone or by `fairsynth run` (process 0 of a launch holds it).
    with hold(recipe.train.output):
        return _train(recipe, resume=resume, progress=progress)


def _train(recipe: "TrainJob", *, resume: str | Path | None, progress: bool) -> TrainResult:
    """:func:`train` under the output folder's lock."""
    cfg = recipe.train
    seed = cfg.run_seed
    output = Path(cfg.output)
    checkpoints_dir = output / "checkpoints"

    # 1. The accelerator: device, mixed precision, process group (`accelerate launch`).
    _check_optimizer(cfg)
    _check_logging(cfg)
    accelerator = Accelerator(
        # Without an accelerator device, processes started by `accelerate launch --multi_gpu` /
        # torchrun join one CPU process group (gloo) instead of each training alone.
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        mixed_precision=cfg.mixed_precision,
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
        project_dir=str(output / "logs"),
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:  # writes a kill interrupted (not the cache's: other runs may share it)
        remove_temporaries(output)
    accelerator.wait_for_everyone()
    # Frozen weights are stored in the autocast precision only where autocast runs: accelerate
    # runs fp16 on a CPU in float32 (no fp16 autocast there), and fp16 text embeddings would then
    # meet the float32 UNet.
    weight_dtype = WEIGHT_DTYPES[cfg.mixed_precision] if accelerator.native_amp else torch.float32
    is_main = accelerator.is_main_process

    # 2. The records of the training split: bad data fails here, before any model loads.
    method = cfg.build_method()
    records = load_split(cfg.data, cfg.split)
    dataset_root = Path(cfg.data).parent
    all_records = read_manifest(cfg.data)  # every label and skin type, for the validation grid
    val_records = [r for r in all_records if r.split == cfg.validation.split][: cfg.validation.max_records]
    buckets = [tuple(b) for b in cfg.buckets] or None
    examples = make_examples(records, dataset_root, cfg.size, buckets)  # every image file must exist
    val_examples = make_examples(val_records, dataset_root, cfg.size, buckets) if cfg.validation.every else []
    sampling_weights(records, cfg.balance)  # a batch mix the data cannot meet fails now
    checkpoint = _checkpoint_to_resume(resume, checkpoints_dir, cfg, world, is_main)
    # FID's extractor: its weights are resolved now, so a missing file fails before any model loads.
    fid = FidTracker(cfg, create_fid_extractor(cfg, device), records, dataset_root) if cfg.fid.every else None
    if fid is not None and checkpoint is not None:
        fid.load_state(checkpoint.state.get("fid"))

    # 3. The base model; DDPM with its noise schedule adds the training noise.
    from fairsynth.models.architectures import training_noise_scheduler
    from fairsynth.models.loading import load_base, model_hash

    pipe = load_base(**dataclasses.asdict(cfg.base))
    base_hash = model_hash(pipe)
    noise_scheduler = training_noise_scheduler(pipe)
    if cfg.prediction_type != "auto":
        noise_scheduler = type(noise_scheduler).from_config(noise_scheduler.config, prediction_type=cfg.prediction_type)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"the base model predicts {prediction_type!r}; training supports epsilon and v_prediction")
    components = Components.from_pipeline(pipe, noise_scheduler, source=cfg.base.source, base_hash=base_hash)
    components.freeze_all()

    # 4. The method: every method-specific error before training starts. Whatever it draws
    # while preparing (LoRA's initial A matrices) comes from the run's seed.
    set_seed(derived_seed(seed, -1, "global") % 2**32)
    method.check(components, records)
    extra = list(method.extra_records(components, records, (output / "method").resolve()))
    method.prepare(components)
    phases = method.phases(cfg.steps)
    if sum(p.steps for p in phases) != cfg.steps:
        raise MethodError(f"method {cfg.method}'s phases add up to {sum(p.steps for p in phases)} steps, not {cfg.steps}")

    if cfg.vae_decoder.steps and method.trains_vae:
        raise ConfigError(f"train.vae_decoder adapts the base's decoder, but method {cfg.method} trains the VAE itself; "
                          "set train.vae_decoder.steps: 0")

    # 5. The method's own records join the examples; the balanced sampler (FairSkin batch mix).
    user_examples, user_records = list(examples), list(records)  # the decoder adapts to these alone
    examples += make_examples(extra, dataset_root, cfg.size, buckets, trusted=True)
    records = records + extra
    sampler = BatchSampler(sampling_weights(records, cfg.balance), [e.size for e in examples])

    # 6. Devices and precision. Frozen text encoders are stored in the autocast precision; the
    # VAE stays float32 (SDXL's VAE overflows in fp16); trained parameters are made float32
    # when their phase starts.
    for module in components.modules().values():
        module.to(device)
    if not method.trains_text_encoder:
        for encoder in components.text_encoders:
            encoder.to(dtype=weight_dtype)
    if cfg.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        if method.trains_text_encoder:
            for encoder in components.text_encoders:
                encoder.gradient_checkpointing_enable()

    # 7. Caches: each process fills its share, then everyone reads.
    latent_cache = LatentCache(
        cfg.cache_dir, components.vae, enabled=cfg.cache_latents and not method.trains_vae, grad=method.trains_vae
    )
    use_text_cache = cfg.cache_text and not method.trains_text_encoder and type(method).encode is Method.encode
    if cfg.cache_text and not use_text_cache and is_main:
        logger.info("text embeddings are not cached: method %s trains or conditions the text itself", cfg.method)
    text_cache = TextCache(cfg.cache_dir, components) if use_text_cache else None
    latent_cache.fill((examples + val_examples)[rank::world])
    if text_cache is not None:
        text_cache.fill(sorted({e.caption for e in examples + val_examples} | {""})[rank::world])
    accelerator.wait_for_everyone()

    def condition(batch: Batch) -> Conditioning:
        if text_cache is not None:
            return text_cache.conditioning(batch, device)
        return method.encode(components, batch).to(device)

    # 8. Resume: the method's trained tensors now; optimiser, EMA and RNG when their phase starts.
    if checkpoint is not None:
        method.load_trainable_state(components, {k: v.to(device) for k, v in checkpoint.trainable.items()})
        if is_main:
            logger.info("resuming from %s (step %d)", checkpoint.path, checkpoint.step)
    elif resume is not None and is_main:
        logger.info("no checkpoint in %s yet: starting from step 0", checkpoints_dir)

    # 9. The steps.
    named = _named_parameters(components)
    names = {id(p): n for n, p in named.items()}
    ema = TrainableEMA(cfg.ema.decay, names) if cfg.ema.enabled else None
    pool: dict[str, torch.Tensor] = {}
    if checkpoint is not None:
        pool = {k.removeprefix("pool/"): v for k, v in checkpoint.extra.items() if k.startswith("pool/")}
    step = checkpoint.step if checkpoint else 0
    start_step = step
    previous_seconds = float(checkpoint.state.get("training_seconds", 0.0)) if checkpoint else 0.0
    last_loss = float(checkpoint.state.get("loss", math.nan)) if checkpoint else math.nan
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    num_timesteps = noise_scheduler.config.num_train_timesteps
    phase_index: int | None = None
    losses: list[float] = []
    val_losses: dict[int, float] = {}
    optimizer: Any = None
    lr_scheduler: Any = None
    params: list[torch.nn.Parameter] = []
    optimizer_parameters = 0
    if cfg.report_to != "none" and is_main:
        accelerator.init_trackers("fairsynth", config=_flat_config(cfg))
    loss_log = LossLog(output / "losses.csv", start_step) if is_main else None
    show = progress and accelerator.is_local_main_process
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not show)
    started = time.monotonic()

    def save(at_step: int) -> None:
        if is_main:
            tensors, ema_meta = ema.state_dict() if ema else ({}, None)
            save_checkpoint(
                checkpoints_dir,
                at_step,
                phase=phase_index or 0,
                state={
                    "loss": last_loss,
                    "seed": seed,
                    "num_processes": world,
                    "training_seconds": previous_seconds + time.monotonic() - started,
                    "ema": ema_meta,
                    "config": to_dict(cfg),
                    "fid": fid.state() if fid is not None else None,
                },
                trainable={k: v.detach() for k, v in method.trainable_state(components).items()},
                optimizer=optimizer.state_dict(),
                scheduler=lr_scheduler.state_dict(),
                scaler=accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                ema=tensors,
                extra={f"pool/{label}": value for label, value in pool.items()},
                keep=cfg.keep_checkpoints,
            )
        accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def evaluating():
        """Eval mode, the EMA weights swapped in and autocast; training modules restored after."""
        trained = [m for m in components.modules().values() if m.training]
        for module in trained:
            module.eval()
        swap = ema.swapped_in(named) if ema else contextlib.nullcontext()
        try:
            with swap, accelerator.autocast():
                yield
        finally:
            for module in trained:
                module.train()

    def validate(at_step: int) -> None:
        if is_main:
            with evaluating():
                logs = {}
                if cfg.validation.loss and val_examples:
                    logs["val/loss"] = val_losses[at_step] = validation_loss(
                        components, val_examples, latent_cache, condition, prediction_type,
                        cfg.batch_size, cfg.validation.seed, device,
                    )
                _, skin_types, cells = grid_cells(all_records, cfg.validation)
                grid = sample_grid(components, method, cells, len(skin_types), cfg.size, cfg.validation, device)
                save_grid(grid, cells, output / "validation", at_step, cfg.validation)
            if logs and cfg.report_to != "none":
                accelerator.log(logs, step=at_step)
        accelerator.wait_for_everyone()

    def measure_fid(at_step: int) -> bool:
        """FID at this step (process 0); True when training should stop (every process agrees)."""
        assert fid is not None
        stop = False
        if is_main:
            with evaluating():
                value = fid.measure(at_step, components, method, device)
            if cfg.report_to != "none":
                accelerator.log({"fid": value}, step=at_step)
            logger.info("step %d: FID (%s) %.4f, best %.4f at step %s", at_step, fid.extractor.name, value,
                        fid.best_fid, fid.best_step)
            stop = fid.should_stop
        if world > 1:
            flag = accelerator.reduce(torch.tensor(float(stop), device=device), reduction="sum")
            stop = bool(float(flag) > 0)
        accelerator.wait_for_everyone()
        return stop

    stopped_early = False
    try:
        while step < cfg.steps:
            # 9a. A new phase: what trains, its optimiser and learning-rate schedule.
            index, phase = _phase_at(phases, step)
            if index != phase_index:
                phase_index = index
                learning_rate = phase.learning_rate if phase.learning_rate is not None else cfg.learning_rate
                groups = method.parameter_groups(components, phase, learning_rate)
                params = _group_params(groups)
                optimizer_parameters = max(optimizer_parameters, trainable_count(groups))
                for param in params:
                    param.data = param.data.float()  # trained in float32 whatever the storage precision
                for module in components.modules().values():
                    module.train(any(p.requires_grad for p in module.parameters()))
                if optimizer is not None:
                    optimizer = lr_scheduler = None
                    accelerator.free_memory()  # the last phase's optimiser state goes
                optimizer = accelerator.prepare_optimizer(_make_optimizer(cfg, groups))
                lr_scheduler = _make_scheduler(cfg, optimizer, phase)
                resuming_here = checkpoint is not None and checkpoint.step == step
                if resuming_here and checkpoint.phase == index:
                    optimizer.load_state_dict(checkpoint.optimizer)
                    lr_scheduler.load_state_dict(checkpoint.scheduler)
                    if checkpoint.scaler is not None and accelerator.scaler is not None:
                        accelerator.scaler.load_state_dict(checkpoint.scaler)
                if ema is not None:
                    ema.track(params)
                    if resuming_here and checkpoint.state.get("ema"):
                        ema.load_state_dict(checkpoint.ema, checkpoint.state["ema"])
                if resuming_here and checkpoint.rng is not None:
                    set_rng_state(checkpoint.rng)

            # 9b. Micro-batches; each draws from generators seeded by (seed, step, micro, process).
            step_loss = 0.0
            for micro in range(cfg.gradient_accumulation):
                random = StepRandom(seed, step, micro, rank)
                random.seed_global()  # dropout layers, anything drawing from the global RNG
                loss, embeddings, labels = _micro_batch_loss(
                    cfg, method, components, sampler, examples, latent_cache, condition, random,
                    alphas_cumprod, num_timesteps, prediction_type, pool, device, accelerator,
                )
                accelerator.backward(loss / cfg.gradient_accumulation)
                step_loss += float(loss.detach()) / cfg.gradient_accumulation
                if embeddings is not None:  # the class-diversity pool sees every process's batch
                    everyone = accelerator.gather(embeddings.detach()) if world > 1 else embeddings
                    all_labels = gather_object(labels) if world > 1 else labels
                    update_pool(pool, everyone, all_labels, cfg.class_diversity.pool_size)

            # 9c. One loss for all processes; NaN or inf stops the run before any update.
            step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=device), reduction="mean"))
            if not math.isfinite(step_loss):
                kept = [p.name for p in sorted(checkpoints_dir.glob("step-*"))]
                raise TrainingDiverged(
                    f"loss is {step_loss} at step {step + 1}; training stopped before updating the weights. "
                    + (f"The last good checkpoint is {checkpoints_dir / kept[-1]} (resume with --resume latest "
                       "after lowering train.learning_rate)." if kept else "No checkpoint was written yet.")
                )
            last_loss = step_loss
            losses.append(step_loss)

            # 9d. The update: gradients averaged over processes, clipped, one optimiser step.
            if world > 1:
                _average_gradients(params, accelerator)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_step(components)
            if ema is not None:
                ema.step()
            step += 1

            # 9e. Logs, checkpoints, validation.
            lr = lr_scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                if loss_log is not None:
                    loss_log.add(step, step_loss, lr)
                if cfg.report_to != "none":
                    accelerator.log({"train/loss": step_loss, "train/lr": lr}, step=step)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                save(step)
            if cfg.validation.every and (step % cfg.validation.every == 0 or step == cfg.steps):
                validate(step)
            if fid is not None and fid.due(step) and measure_fid(step):
                stopped_early = step < cfg.steps
                if stopped_early:
                    if is_main:
                        logger.info("FID has not improved by %g for %d measurements: stopping at step %d",
                                    cfg.fid.min_delta, cfg.fid.patience, step)
                    if not (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                        save(step)  # the final checkpoint, as at the normal end
                    break

        # 10. Outputs, beside the method's exported files: <output>/model.
        training_seconds = previous_seconds + time.monotonic() - started
        model_dir = output / "model"
        exports: dict[str, Path] = {}
        info: dict[str, Any] = {}
        if is_main:
            # a run killed while it deleted old checkpoints left one too many; its resume ends here
            prune_checkpoints(checkpoints_dir, cfg.keep_checkpoints)
            if ema is not None:
                if ema.model is None and checkpoint is not None and checkpoint.state.get("ema"):
                    ema.load_state_dict(checkpoint.ema, checkpoint.state["ema"])  # resumed a finished run
                ema.copy_to_parameters(named)  # the averaged weights are the result
            vae_report = None
            if cfg.vae_decoder.steps:
                # 10a. The decoder learns to render this domain's latents (encoder fixed).
                vae_report = adapt_decoder(
                    components.vae, user_examples, latent_cache,
                    BatchSampler(sampling_weights(user_records, cfg.balance), [e.size for e in user_examples]),
                    cfg.vae_decoder, batch_size=cfg.vae_decoder.batch_size or cfg.batch_size, seed=seed, device=device,
                    validation=make_examples(val_records, dataset_root, cfg.size, buckets),
                )
            with _staged_folder(model_dir) as staging:
                written = method.export(components, staging)
                if vae_report is not None:
                    components.vae.save_pretrained(staging / "vae", safe_serialization=True)
                    written["vae"] = staging / "vae"
                for path in sorted(staging.rglob("*.safetensors")):  # the same weights, the same bytes
                    data = path.read_bytes()
                    if (canonical := canonical_safetensors(data)) != data:
                        atomic_write_bytes(path, canonical)
                exports = {name: model_dir / Path(path).relative_to(staging) for name, path in written.items()}
                info = _training_info(
                    cfg, components, records, len(extra), exports_size=_size_on_disk(written),
                    trained=sum(t.numel() for t in method.trainable_state(components).values()),
                    optimised=optimizer_parameters, seconds=training_seconds, final_loss=last_loss, steps=step,
                    resumed_from=start_step or None,
                )
                if val_losses:
                    info["val_loss"] = val_losses[max(val_losses)]
                if vae_report is not None:
                    info["vae_decoder"] = vae_report
                info.update(peak_memory(accelerator.device))
                if fid is not None:
                    info.update(fid.info(stopped_early))
                save_resolved(recipe, staging)
                atomic_write_text(staging / "training_info.json", json.dumps(info, indent=2, allow_nan=True) + "\n")
                atomic_write_text(staging / "README.md", _model_card(cfg, info, records, exports))
        accelerator.wait_for_everyone()
    finally:
        bar.close()
        if loss_log is not None:
            loss_log.close()
        accelerator.end_training()  # also ends the process group: nothing collective after this

    return TrainResult(output, model_dir, step, last_loss, exports, info, losses, val_losses)


def _micro_batch_loss(
    cfg: TrainConfig,
    method: Method,
    components: Components,
    sampler: BatchSampler,
    examples: list[TrainingExample],
    latent_cache: LatentCache,
    condition: Any,
    random: StepRandom,
    alphas_cumprod: torch.Tensor,
    num_timesteps: int,
    prediction_type: str,
    pool: dict[str, torch.Tensor],
    device: torch.device,
    accelerator: Accelerator,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """The loss of one micro-batch; also the x̂0 embeddings for the class-diversity pool."""
    # 1. Which examples: balanced draw (FairSkin's skin-type mix) from this step's generator.
    indices = sampler.draw(random.generator("batch"), cfg.batch_size)
    chosen = [examples[i] for i in indices]
    labels = [str(e.record.label) for e in chosen]

    # 2. Captions, some dropped to the empty one (for classifier-free guidance).
    captions = drop_captions([e.caption for e in chosen], cfg.caption_dropout, random.generator("dropout"))
    time_ids = torch.stack([e.time_ids for e in chosen])  # (B, 6), SDXL only
    batch = Batch(captions, [e.record for e in chosen], time_ids, generator=random.generator("method"))

    # 3. x0: a sample of each image's latent distribution (cached or encoded now).
    mean, std = latent_cache.moments(chosen, device)  # (B, 4, H/8, W/8) each
    x0 = sample_latents(mean, std, random.generator("latents"), components.vae.config)  # (B, 4, H/8, W/8)

    # 4. Noise (+ offset noise) and timesteps t ~ U{0, ..., T-1}.
    noise = torch.randn(x0.shape, generator=random.generator("noise")).to(device)  # (B, 4, H/8, W/8)
    if cfg.noise_offset:
        extra = torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=random.generator("offset"))  # (B, 4, 1, 1)
        noise = offset_noise(noise, cfg.noise_offset, extra)
    timesteps = torch.randint(0, num_timesteps, (x0.shape[0],), generator=random.generator("timesteps")).to(device)

    # 5. The forward process: x_t = α_t x0 + σ_t ε (Ho et al. 2020, Eq. 4).
    noisy = components.noise_scheduler.add_noise(x0, noise, timesteps)  # (B, 4, H/8, W/8)

    # 6. Conditioning and the UNet's prediction.
    with accelerator.autocast():
        cond = condition(batch)
        prediction = denoise(components.unet, noisy, timesteps, cond)  # (B, 4, H/8, W/8)

    # 7. The denoising loss per sample, with Min-SNR-γ and the method's weights.
    target = target_for(prediction_type, x0, noise, alphas_cumprod, timesteps)
    per_sample = per_sample_mse(prediction, target)  # (B,)
    if cfg.min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weights(snr(alphas_cumprod, timesteps), cfg.min_snr_gamma, prediction_type)
    weights = method.loss_weights(batch)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    loss = per_sample.mean()

    # 8. FairSkin's class-diversity term on the predicted clean latents.
    embeddings = None
    if cfg.class_diversity.weight > 0:
        x0_hat = predicted_x0(prediction_type, noisy, prediction, alphas_cumprod, timesteps)  # (B, 4, H/8, W/8)
        embeddings = x0_embedding(x0_hat, cfg.class_diversity.grid)  # (B, 4 * grid * grid)
        loss = loss + cfg.class_diversity.weight * class_diversity_loss(embeddings, labels, pool)
    return loss, embeddings, labels


class LossLog:
    """``<output>/losses.csv`` (step, loss, lr) every ``log_every`` steps, whatever ``report_to`` says.

    A resumed run first drops the rows after its checkpoint's step (they belonged to the
    interrupted run and come again), so the file always tells one run's story.
    """

    def __init__(self, path: Path, start_step: int) -> None:
        rows = []
        if path.is_file() and start_step > 0:
            for line in path.read_text(encoding="utf-8").splitlines()[1:]:
                fields = line.split(",")
                if len(fields) == 3 and fields[0].isdigit() and int(fields[0]) <= start_step:
                    rows.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "step,loss,lr\n" + "".join(f"{row}\n" for row in rows))
        self._handle = path.open("a", encoding="utf-8")

    def add(self, step: int, loss: float, lr: float) -> None:
        append_through(self._handle, f"{step},{loss:.6g},{lr:.6g}\n")

    def close(self) -> None:
        self._handle.close()


def peak_memory(device: torch.device) -> dict[str, Any]:
    """The run's peak memory and what it measures: CUDA's peak allocation on a GPU, else the
    process's peak resident set (everything the process held, models and data included; for
    one training run per process, as ``fairsynth sweep`` runs them, that is the run's peak)."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_kind": "cuda max allocated"}
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "peak_memory_kind": "process peak RSS"}


def _training_info(
    cfg: TrainConfig, components: Components, records: list[Record], method_images: int, *, exports_size: int,
    trained: int, optimised: int, seconds: float, final_loss: float, steps: int, resumed_from: int | None,
) -> dict[str, Any]:
    synthetic = sum(_is_synthetic(r) for r in records)
    by_class: dict[str, int] = {}
    by_fst: dict[str, int] = {}
    for record in records:
        by_class[str(record.label)] = by_class.get(str(record.label), 0) + 1
        by_fst[str(record.fst)] = by_fst.get(str(record.fst), 0) + 1
    return {
        "dataset": {
            "manifest": str(cfg.data),
            "manifest_sha256": sha256_file(cfg.data),
            "split": cfg.split,
            "images": len(records),
            "synthetic_images": synthetic,
            "synthetic_fraction": synthetic / len(records) if records else 0.0,
            "method_images": method_images,  # e.g. DreamBooth's class images, made by the base model
            "images_by_class": dict(sorted(by_class.items())),
            "images_by_fst": dict(sorted(by_fst.items())),
        },
        "base_model": {"source": components.source, "sha256": components.base_hash, "kind": components.kind},
        "method": cfg.method,
        "options": cfg.options,
        # What the method trains and saves (textual inversion: the new embedding rows) ...
        "trainable_parameters": trained,
        # ... and what the optimiser was handed (textual inversion: the whole embedding matrix).
        "optimizer_parameters": optimised,
        "adapter_bytes": exports_size,
        "training_seconds": round(seconds, 3),
        "final_loss": final_loss,
        "steps": steps,
        "resumed_from_step": resumed_from,
        "seed": cfg.run_seed,
    }


def _model_card(cfg: TrainConfig, info: dict[str, Any], records: list[Record], exports: dict[str, Path]) -> str:
    data = info["dataset"]
    rows = "\n".join(f"| {label} | {count} |" for label, count in data["images_by_class"].items())
    fst = ", ".join(f"FST {k}: {v}" for k, v in data["images_by_fst"].items())
    files = "\n".join(f"- `{name}`: `{path.name}`" for name, path in exports.items())
    return f"""# {cfg.method} fine-tune of {info['base_model']['source']}

Trained by `fairsynth train` for {info['steps']} steps (seed {info['seed']}, final loss {info['final_loss']:.4f}).

## Data

- Manifest: `{data['manifest']}` (split `{data['split']}`, sha256 `{data['manifest_sha256'][:16]}…`)
- Training images: {data['images']}, of which **{data['synthetic_images']} synthetic
  ({100 * data['synthetic_fraction']:.1f} %)** (records with `synthetic: true`).
- Skin types: {fst}
- Batch mix: `{cfg.balance.strategy}` by `{cfg.balance.by}` {cfg.balance.mix or ''}

| class | images |
|---|---|
{rows}

## Model

- Base: `{info['base_model']['source']}` ({info['base_model']['kind']}, weights sha256 `{info['base_model']['sha256'][:16]}…`)
- Method: `{cfg.method}` with options `{json.dumps(cfg.options, sort_keys=True)}`
- Trainable parameters: {info['trainable_parameters']:,}; files on disk: {info['adapter_bytes']:,} bytes

{files}

The resolved recipe is `config.yaml`; `training_info.json` holds these numbers.
"""
