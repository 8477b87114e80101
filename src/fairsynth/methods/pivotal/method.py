"""Pivotal tuning: textual inversion first, then a LoRA around the learned tokens, then both.

The tokens are learned alone first so that they become a good "pivot" in the text space
(Roich et al. 2022 pivot the generator around an inverted latent; cloneofsimo/lora and
diffusers' advanced DreamBooth-LoRA script do the same with textual inversion). The LoRA then
learns what a word embedding cannot hold, with the tokens fixed; an optional joint phase
refines both at lower rates. The FairSkin plan: 2,000 TI steps at 5e-4, 10,000 LoRA steps at
1e-4 (rank 16, alpha 32), then 2,000-5,000 joint steps::

    train:
      method: pivotal
      steps: 14000                 # = ti_steps + lora_steps + joint_steps (else split in proportion)
      options: {initializer_token: mole, num_vectors: 2, joint_steps: 2000}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.methods import METHODS
from fairsynth.methods.base import Batch, Components, Conditioning, Method, MethodError, Phase
from fairsynth.methods.lora import LoRA
from fairsynth.methods.lora.config import LoRAConfig
from fairsynth.methods.textual_inversion.method import TextualInversion, TokenConfig, export_tokens, token_config

if TYPE_CHECKING:
    from fairsynth.data.records import Record

logger = logging.getLogger(__name__)

Schedule = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts"]

#: Phase names, in training order.
TI, LORA, JOINT = "textual_inversion", "lora", "joint"


def split_steps(total: int, planned: list[int]) -> list[int]:
    """``total`` steps split in the proportions of ``planned`` (largest remainders; every
    planned phase keeps at least one step); ``planned`` itself when it sums to ``total``."""
    if sum(planned) == total:
        return list(planned)
    active = [i for i, n in enumerate(planned) if n > 0]
    if total < len(active):
        raise MethodError(f"train.steps {total} is fewer than pivotal's {len(active)} phases")
    shares = [total * n / sum(planned) for n in planned]
    counts = [max(1, int(share)) if n > 0 else 0 for share, n in zip(shares, planned)]
    while sum(counts) < total:  # hand out what rounding down left, largest remainder first
        i = max(active, key=lambda j: shares[j] - counts[j])
        counts[i] += 1
    while sum(counts) > total:  # the at-least-one rule overshot: take from the largest phase
        i = max((j for j in active if counts[j] > 1), key=lambda j: counts[j])
        counts[i] -= 1
    return counts


@dataclass
class PivotalConfig(TokenConfig):
    """Pivotal tuning: placeholder tokens (textual inversion), then a LoRA, then optionally both."""

    apply_to: Literal["unet", "text_encoder", "both"] = knob(
        "unet", "Where the LoRA goes: the UNet, the text encoder(s), or both (the tokens always train)."
    )
    ti_steps: int = knob(
        2000, "Phase 1 steps: only the placeholder tokens train. The three phase lengths are exact when "
        "train.steps is their sum; otherwise they split train.steps in these proportions."
    )
    ti_learning_rate: float = knob(5e-4, "Phase 1 learning rate of the token embeddings.")
    ti_lr_scheduler: Schedule | None = knob(None, "Phase 1 schedule; None: the run's lr_scheduler.")
    lora_steps: int = knob(10000, "Phase 2 steps: only the LoRA trains, around the fixed tokens.")
    lora_learning_rate: float = knob(1e-4, "Phase 2 (and phase 3) learning rate of the LoRA.")
    lora_lr_scheduler: Schedule | None = knob(None, "Phase 2 schedule; None: the run's lr_scheduler.")
    lora_rank: int = knob(16, "LoRA rank r; higher holds more detail and overfits sooner.")
    lora_alpha: float = knob(32.0, "LoRA alpha; the update is scaled by alpha / r.")
    lora_targets: str | list[str] = knob(
        "attention", "Layers the LoRA wraps: a preset (attention, cross_attention, attention_ff, locon) "
        "or module names such as ['to_k', 'to_v']."
    )
    joint_steps: int = knob(0, "Phase 3 steps: tokens and LoRA together (FairSkin: 2,000-5,000); 0: no phase 3.")
    joint_token_learning_rate: float = knob(5e-5, "Phase 3 learning rate of the token embeddings.")
    joint_lr_scheduler: Schedule | None = knob(None, "Phase 3 schedule; None: the run's lr_scheduler.")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ti_steps", "lora_steps", "joint_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ti_steps + self.lora_steps + self.joint_steps == 0:
            raise ConfigError("pivotal needs steps in at least one phase")
        for name in ("ti_learning_rate", "lora_learning_rate", "joint_token_learning_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        try:
            self.lora_config()  # the lora method's own checks (rank, alpha, targets fit apply_to)
        except ConfigError as err:
            raise ConfigError(f"pivotal's LoRA (lora_rank, lora_alpha, lora_targets, apply_to): {err}") from None

    def lora_config(self) -> LoRAConfig:
        """The options of the ``lora`` method that trains phases 2 and 3."""
        return LoRAConfig(
            rank=self.lora_rank, alpha=self.lora_alpha, targets=self.lora_targets,
            apply_to=self.apply_to, text_encoder_lr=self.text_encoder_lr,
        )

    @property
    def total_steps(self) -> int:
        return self.ti_steps + self.lora_steps + self.joint_steps


@METHODS.register("pivotal", help="Pivotal tuning: textual inversion, then LoRA around the tokens, then both")
class Pivotal(Method):
    """Three phases with their own steps, learning rates and schedules (see :meth:`phases`).

    The tokens are a :class:`~fairsynth.methods.textual_inversion.TextualInversion`, the LoRA a
    :class:`~fairsynth.methods.lora.LoRA`; this class only schedules them. Export: the tokens
    as textual inversion (``textual_inversion/``, ``pipe.load_textual_inversion``) and the
    ``lora`` method's export in ``lora/`` (``pytorch_lora_weights.safetensors`` for
    ``pipe.load_lora_weights``, a kohya file for A1111 / ComfyUI).
    """

    Config = PivotalConfig
    kinds = ("sd", "sdxl")

    def __init__(self, config: PivotalConfig | None = None) -> None:
        super().__init__(config)
        self.ti = TextualInversion(token_config(self.config))
        self.lora = LoRA(self.config.lora_config())
        self._tokens_train = True

    @property
    def trains_text_encoder(self) -> bool:
        return True

    def expand_tokens(self, caption: str) -> str:
        return self.ti.expand_tokens(caption)

    # -- before training ---------------------------------------------------------------------
    def check(self, components: Components, records: list["Record"]) -> None:
        super().check(components, records)
        self.ti.check(components, records)
        self.lora.check(components, records)

    def prepare(self, components: Components) -> None:
        self.ti.prepare(components)
        self.lora.prepare(components)

    def phases(self, steps: int) -> list[Phase]:
        """TI, LoRA and joint phases (those with steps), adding up to the run's ``steps``.

        With ``train.steps`` equal to ``ti_steps + lora_steps + joint_steps`` each phase runs
        exactly its configured steps; otherwise the phases split ``train.steps`` in the same
        proportions (each at least one step), and a warning says so.
        """
        cfg = self.config
        counts = split_steps(steps, [cfg.ti_steps, cfg.lora_steps, cfg.joint_steps])
        if steps != cfg.total_steps:
            logger.warning(
                "pivotal: train.steps %d differs from ti_steps + lora_steps + joint_steps = %d; the phases "
                "run ti %d, lora %d, joint %d steps", steps, cfg.total_steps, *counts,
            )
        phases = [
            Phase(TI, counts[0], cfg.ti_learning_rate, cfg.ti_lr_scheduler, {"train": ["tokens"]}),
            Phase(LORA, counts[1], cfg.lora_learning_rate, cfg.lora_lr_scheduler, {"train": ["lora"]}),
            Phase(
                JOINT, counts[2], cfg.lora_learning_rate, cfg.joint_lr_scheduler,
                {"train": ["tokens", "lora"], "token_learning_rate": cfg.joint_token_learning_rate},
            ),
        ]
        return [phase for phase in phases if phase.steps > 0]

    # -- each phase / step ---------------------------------------------------------------------
    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        train = phase.settings.get("train")
        if not train or set(train) - {"tokens", "lora"}:
            raise MethodError(f"pivotal phase {phase.name!r} must train tokens and/or lora, got {train!r}")
        lr = phase.learning_rate if phase.learning_rate is not None else learning_rate
        components.freeze_all()
        groups: list[dict[str, Any]] = []
        if "lora" in train:  # the lora method's groups (text_encoder_lr applies to text-encoder LoRA)
            adapters = Phase(phase.name, phase.steps, settings={"train": "adapters"})
            for group in self.lora.parameter_groups(components, adapters, lr):
                groups.append({**group, "name": f"{group['name']}_lora"})
        tokens = self.ti.require_tokens()
        self._tokens_train = "tokens" in train
        if self._tokens_train:
            weights = tokens.embedding_weights(components)
            for weight in weights:
                weight.requires_grad_(True)
            groups.insert(0, {"params": weights, "lr": phase.settings.get("token_learning_rate", lr), "name": "tokens"})
        else:
            tokens.snapshot(components)  # this phase must leave the learned tokens exactly as they are
        return groups

    def encode(self, components: Components, batch: Batch) -> Conditioning:
        return self.ti.encode(components, batch)

    def after_step(self, components: Components) -> None:
        self.ti.require_tokens().restore(components, include_new=not self._tokens_train)

    # -- state and outputs ------------------------------------------------------------------------
    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        state = {f"tokens.{k}": v for k, v in self.ti.trainable_state(components).items()}
        state.update({f"lora.{k}": v for k, v in self.lora.trainable_state(components).items()})
        return state

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        tokens = {k.removeprefix("tokens."): v for k, v in state.items() if k.startswith("tokens.")}
        lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
        unknown = sorted(set(state) - {f"tokens.{k}" for k in tokens} - {f"lora.{k}" for k in lora})
        if unknown:
            raise MethodError(f"checkpoint has tensors pivotal does not train: {unknown[:3]}")
        self.ti.load_trainable_state(components, tokens)
        self.lora.load_trainable_state(components, lora)

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """The tokens (``textual_inversion/``) and the LoRA (``lora/``, at ``scale``)."""
        from fairsynth.methods._inference import load_lora, merge
        from fairsynth.methods.textual_inversion.method import load_tokens_for_inference

        tokens = load_tokens_for_inference(pipe, export_dir)
        return merge("pivotal", tokens, load_lora(pipe, Path(export_dir) / "lora", name, scale, "pivotal"))

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        """``textual_inversion/`` (one file per token + tokens.json) and ``lora/`` (the lora method's export)."""
        out_dir = Path(out_dir)
        outputs = {"textual_inversion": export_tokens(self.ti.require_tokens(), components, out_dir)}
        outputs.update({f"lora_{k}": v for k, v in self.lora.export(components, out_dir / "lora").items()})
        outputs["config"] = save_resolved(self.config, out_dir, "method.yaml")
        return outputs
