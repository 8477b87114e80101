"""`train:` — how a method is fine-tuned: data, noise, loss, optimiser, checkpoints, validation.

    train:
      base: {source: runwayml/stable-diffusion-v1-5}
      method: lora
      options: {rank: 16}         # validated against the method's Config when the recipe is parsed
      steps: 2000
      balance: {strategy: mix, by: fst, mix: {I-III: 0.4, IV: 0.2, V-VI: 0.4}}   # FairSkin

Folders left empty are derived from the recipe's ``workdir`` (see :class:`~fairsynth.recipe.Recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fairsynth.config import ConfigError, from_dict, knob, to_dict
from fairsynth.data.sampling import BalanceConfig
from fairsynth.models.loading import BaseModelConfig

#: Learning-rate schedules (diffusers.optimization.get_scheduler names).
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts")


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable parameters (diffusers' EMAModel)."""

    enabled: bool = knob(False, "Keep an EMA of the trainable parameters; exported and validated with it.")
    decay: float = knob(0.9999, "Largest EMA decay; the decay warms up as (1 + n) / (10 + n) until it reaches this.")

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"train.ema.decay must be in (0, 1), got {self.decay}")


@dataclass
class ClassDiversityConfig:
    """FairSkin's class-diversity term: same-class predictions are pushed apart.

    What is compared (see :func:`fairsynth.training.losses.class_diversity_loss`): the UNet's
    predicted clean latent x̂0 of each sample, average-pooled to a ``grid`` x ``grid`` map per
    latent channel, with each channel's mean removed (so overall colour — and with it skin
    tone — is never pushed around, only layout and texture), flattened. The term is the mean
    cosine similarity between each sample's embedding and those of the same class elsewhere
    in the batch and in a pool of the last ``pool_size`` embeddings of that class.
    """

    weight: float = knob(0.0, "λ, the weight of the term in the loss; 0 turns it off. Start small (0.01-0.1).")
    pool_size: int = knob(16, "Embeddings of recent steps kept per class to compare against (0: batch only).")
    grid: int = knob(4, "Side of the pooled x̂0 map; the embedding has 4 * grid * grid numbers.")

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"train.class_diversity.weight must be >= 0, got {self.weight}")
        if self.pool_size < 0:
            raise ConfigError(f"train.class_diversity.pool_size must be >= 0, got {self.pool_size}")
        if self.grid < 1:
            raise ConfigError(f"train.class_diversity.grid must be >= 1, got {self.grid}")


@dataclass
class ValidationConfig:
    """What is sampled and measured every ``every`` steps."""

    every: int = knob(0, "Validate every N steps and after the last one; 0: never.")
    classes: list[str] = knob([], "Classes (rows of the grid); empty: every label of the prepared data, up to max_classes.")
    max_classes: int = knob(8, "Most classes in the grid when `classes` is empty (the first in sorted order).")
    fst: list[int] = knob([], "Skin types (columns of the grid); empty: every fst value in the prepared data.")
    caption_template: str | None = knob(
        None, "Prompt of a grid cell, filled by render_caption; default: the recipe's data.caption_template, "
        "and without one the caption of a record of that class and skin type."
    )
    num_inference_steps: int = knob(20, "Sampling steps per image (DPM-Solver++).")
    guidance_scale: float = knob(7.5, "Classifier-free guidance scale.")
    seed: int = knob(0, "Seed of the grid: cell k uses seed + k, the same at every validation.")
    loss: bool = knob(True, "Also measure the loss on the validation split with fixed noise and timesteps.")
    split: str = knob("val", "Split the validation loss is measured on.")
    max_records: int = knob(64, "Most validation records used for the validation loss.")

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"train.validation.every must be >= 0, got {self.every}")
        if self.max_classes < 1:
            raise ConfigError(f"train.validation.max_classes must be >= 1, got {self.max_classes}")
        if self.num_inference_steps < 1:
            raise ConfigError(f"train.validation.num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.max_records < 1:
            raise ConfigError(f"train.validation.max_records must be >= 1, got {self.max_records}")
        for value in self.fst:
            if value not in range(1, 7):
                raise ConfigError(f"train.validation.fst values must be skin types 1-6, got {value}")


@dataclass
class FidConfig:
    """FID of samples against the training images every ``every`` steps; early stopping on a plateau."""

    every: int = knob(0, "Measure FID every N steps (process 0); 0: never.")
    extractor: str = knob("inception", "Feature extractor (`fairsynth ls extractors`); `random` is for tests only.")
    weights: str = knob("", "Explicit weights file of the extractor; empty: the usual lookup (FAIRSYNTH_WEIGHTS, caches).")
    num_images: int = knob(32, "Images generated per measurement; prompts cycle over the training captions.")
    seed: int = knob(0, "Seed of the samples: image k uses seed + k, the same at every measurement.")
    patience: int = knob(0, "Stop after this many measurements in a row without improving by min_delta; 0: never stop.")
    min_delta: float = knob(0.0, "Smallest decrease of FID counted as an improvement.")

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"train.fid.every must be >= 0, got {self.every}")
        if self.num_images < 2:
            raise ConfigError(f"train.fid.num_images must be >= 2, got {self.num_images}")
        if self.patience < 0:
            raise ConfigError(f"train.fid.patience must be >= 0, got {self.patience}")
        if self.min_delta < 0:
            raise ConfigError(f"train.fid.min_delta must be >= 0, got {self.min_delta}")
        if not self.extractor:
            raise ConfigError("train.fid.extractor must not be empty")


@dataclass
class VaeDecoderConfig:
    """Decoder adaptation after the method's steps (the encoder and the latent space stay as they are)."""

    steps: int = knob(
        0, "Decoder steps on the training images after the method's training; 0: off (the base's VAE is used). "
        "The adapted VAE is saved as <train.output>/model/vae and generation decodes with it."
    )
    learning_rate: float = knob(1e-4, "AdamW learning rate of the decoder (constant).")
    batch_size: int | None = knob(None, "Images per decoder step; None: train.batch_size.")

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"train.vae_decoder.steps must be >= 0, got {self.steps}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.vae_decoder.learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"train.vae_decoder.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class TrainConfig:
    """`fairsynth train`: fine-tune a base model with one registered method."""

    base: BaseModelConfig = knob(default_factory=BaseModelConfig, help="The base model.")
    method: str = knob("lora", "Fine-tuning method (`fairsynth ls methods` lists them).")
    options: dict[str, Any] = knob(
        {}, "The method's options, checked against its Config when the recipe is parsed "
        "and saved fully resolved (every option, defaults included)."
    )
    data: str = knob("", "Prepared manifest (metadata.jsonl); default <prepare.output>/metadata.jsonl.")
    split: str = knob("train", "Split of the manifest that trains.")
    output: str = knob("", "Output folder (checkpoints, logs, validation, model); default <workdir>/train.")
    cache_dir: str = knob("", "Latent and text-embedding cache; default <workdir>/cache.")
    resolution: list[int] = knob(
        [], "Training size: [side] or [width, height], multiples of 8; default prepare.resolution."
    )
    buckets: list[list[int]] = knob(
        [], "Resolution buckets [[width, height], ...] (multiples of 8) for non-square data: each image "
        "trains at the bucket closest to its aspect ratio and a batch holds one bucket. Empty: `resolution`."
    )
    steps: int = knob(1000, "Optimiser steps in all (every phase of the method together).")
    batch_size: int = knob(1, "Images per process and micro-batch.")
    gradient_accumulation: int = knob(1, "Micro-batches per optimiser step.")
    learning_rate: float = knob(1e-4, "Peak learning rate (LoRA: 1e-4; full fine-tuning: 1e-5 or less).")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts"] = knob(
        "constant", "Learning-rate schedule (diffusers.optimization.get_scheduler)."
    )
    lr_num_cycles: int = knob(1, "Hard restarts of `cosine_with_restarts`.")
    warmup_steps: int = knob(0, "Linear warm-up steps of the schedules that have one.")
    optimizer: Literal["adamw", "adamw8bit"] = knob(
        "adamw", "`adamw` (torch), or `adamw8bit` (bitsandbytes; needs CUDA, else an error before training)."
    )
    adam_beta1: float = knob(0.9, "AdamW β1.")
    adam_beta2: float = knob(0.999, "AdamW β2.")
    adam_epsilon: float = knob(1e-8, "AdamW ε.")
    weight_decay: float = knob(1e-2, "AdamW decoupled weight decay.")
    max_grad_norm: float = knob(1.0, "Clip the gradient norm to this; 0: no clipping.")
    mixed_precision: Literal["no", "fp16", "bf16"] = knob(
        "no", "Autocast precision; frozen weights are stored in it, trained ones stay float32."
    )
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass: less memory, ~30 % slower.")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = knob(
        "auto", "What the UNet predicts; `auto`: the base model's scheduler's (SD 2.x 768: v_prediction)."
    )
    min_snr_gamma: float | None = knob(
        None, "Min-SNR-γ loss weighting (Hang et al. 2023); 5.0 is their recommendation; None: off."
    )
    noise_offset: float = knob(0.0, "Offset noise (Guttenberg 2023): a per-channel constant added to the noise; 0.05-0.1 typical.")
    ema: EMAConfig = knob(default_factory=EMAConfig, help="EMA of the trainable parameters.")
    caption_dropout: float = knob(0.0, "Probability that a sample trains with the empty caption (for guidance).")
    balance: BalanceConfig = knob(
        default_factory=BalanceConfig, help="Batch mix; FairSkin: strategy mix, by fst, I-III 0.4, IV 0.2, V-VI 0.4."
    )
    class_diversity: ClassDiversityConfig = knob(
        default_factory=ClassDiversityConfig, help="FairSkin's class-diversity term."
    )
    cache_latents: bool = knob(True, "Cache each image's VAE latent distribution (mean, std) on disk.")
    cache_text: bool = knob(True, "Cache each caption's text embedding, where the method leaves the text encoders frozen.")
    checkpoint_every: int = knob(500, "Write a checkpoint every N steps (and after the last); 0: only after the last.")
    keep_checkpoints: int = knob(2, "Checkpoints kept (the newest); older ones are deleted.")
    validation: ValidationConfig = knob(default_factory=ValidationConfig, help="Validation grid and loss.")
    fid: FidConfig = knob(default_factory=FidConfig, help="FID against the training images and early stopping.")
    vae_decoder: VaeDecoderConfig = knob(
        default_factory=VaeDecoderConfig,
        help="Adapt the VAE's decoder to the training images after the method's steps (encoder fixed; off by default).",
    )
    seed: int | None = knob(None, "Seed of every random draw of the run; default: the recipe's seed.")
    report_to: Literal["tensorboard", "none"] = knob("tensorboard", "Where scalars are logged (<output>/logs).")
    log_every: int = knob(10, "Log scalars every N steps.")

    def __post_init__(self) -> None:
        self._check_sizes()
        positive = {
            "steps": self.steps, "batch_size": self.batch_size, "gradient_accumulation": self.gradient_accumulation,
            "lr_num_cycles": self.lr_num_cycles, "keep_checkpoints": self.keep_checkpoints, "log_every": self.log_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {value}")
        for name in ("warmup_steps", "checkpoint_every", "max_grad_norm", "noise_offset", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.adam_beta1 < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise ConfigError(f"train.adam_beta1/adam_beta2 must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ConfigError(f"train.caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.base.dtype != "float32" and self.mixed_precision == "no":
            raise ConfigError(
                f"train.base.dtype {self.base.dtype} needs train.mixed_precision fp16 or bf16 "
                "(trained parameters stay float32 and meet the base weights under autocast)"
            )
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ConfigError(f"train.min_snr_gamma must be > 0 (or None to turn it off), got {self.min_snr_gamma}")
        self.options = to_dict(self.method_config())

    def _check_sizes(self) -> None:
        if self.resolution and len(self.resolution) not in (1, 2):
            raise ConfigError(f"train.resolution must be [side] or [width, height], got {self.resolution}")
        for side in self.resolution:
            if side <= 0 or side % 8:
                raise ConfigError(f"train.resolution sides must be positive multiples of 8, got {side}")
        for bucket in self.buckets:
            if len(bucket) != 2 or any(side <= 0 or side % 8 for side in bucket):
                raise ConfigError(f"train.buckets must be [width, height] pairs of multiples of 8, got {bucket}")

    def method_config(self) -> Any:
        """The method's own Config, built from ``options`` (unknown options are errors)."""
        from fairsynth.methods import METHODS
        from fairsynth.registry import UnknownNameError

        try:
            method_cls = METHODS.get(self.method)
        except UnknownNameError as err:
            raise ConfigError(f"train.method: {err}") from None
        return from_dict(method_cls.Config, dict(self.options), "train.options")

    def build_method(self) -> Any:
        """A fresh instance of the configured method."""
        from fairsynth.methods import METHODS

        return METHODS.get(self.method)(self.method_config())

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels; needs ``resolution`` (the recipe fills it from prepare)."""
        if not self.resolution:
            raise ConfigError("train.resolution is empty; set it or load the config through a recipe")
        return (self.resolution[0], self.resolution[-1])

    @property
    def run_seed(self) -> int:
        return 0 if self.seed is None else self.seed
