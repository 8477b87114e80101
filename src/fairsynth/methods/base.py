"""What a fine-tuning method is, to the training loop.

A method decides *what* is trained (adapters injected with peft, new token rows, a class
embedding, whole components) and *how the result is saved* so that others can load it. The
loop (:mod:`fairsynth.training.loop`) decides everything else: data, noise, loss, optimiser,
checkpoints. The contract, in the order the loop calls it::

    method = METHODS.get(name)(options)          # options: an instance of method.Config
    method.check(components, records)            # every bad-input error before training starts
    records += method.extra_records(...)         # e.g. DreamBooth prior-preservation images
    method.prepare(components)                   # inject adapters / add tokens, once
    for phase in method.phases(train_cfg.steps): # one phase for most methods; pivotal has three
        groups = method.parameter_groups(components, phase, train_cfg.learning_rate)
        ... each step:
            cond = method.encode(components, batch)   # (B, 77, D) cross-attention conditioning
            loss = (per_sample_loss * method.loss_weights(batch)).mean()
            loss.backward(); optimizer.step()
            method.after_step(components)        # e.g. TI: restore every frozen embedding row
    method.trainable_state(components)           # tensors of the checkpoint (safetensors)
    method.load_trainable_state(components, sd)  # on resume
    method.export(components, out_dir)           # diffusers / kohya / A1111 loadable files

Everything a method needs is in :class:`Components`; methods never build pipelines.

Generation (:mod:`fairsynth.generation.pipeline`) asks the same method to put what it
exported into a diffusers pipeline::

    adapter = method.load_for_inference(pipe, export_dir, name="adapter0", scale=1.0)

which returns an :class:`InferenceAdapter` saying what else generation must do with it
(activate LoRA adapters at a scale, rewrite prompts, replace the prompt by class conditioning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import torch

from fairsynth.config import knob

if TYPE_CHECKING:
    from fairsynth.data.records import Record


class MethodError(ValueError):
    """A method configuration or base model that cannot work; raised before training starts."""


@dataclass
class Components:
    """The pieces of a Stable Diffusion pipeline that training touches.

    ``text_encoders``/``tokenizers`` hold one entry for SD 1.5/2.x and two for SDXL
    (CLIP ViT-L, then OpenCLIP bigG with projection).
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list[Any]
    noise_scheduler: Any
    kind: Literal["sd", "sdxl"] = "sd"
    #: Where the base came from (hub id, folder, file) and its weights hash, for provenance.
    source: str = ""
    base_hash: str = ""

    @classmethod
    def from_pipeline(cls, pipe: Any, noise_scheduler: Any = None, source: str = "", base_hash: str = "") -> "Components":
        from diffusers import DDPMScheduler

        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) is not None else [])
        tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if getattr(pipe, "tokenizer_2", None) is not None else [])
        return cls(
            unet=pipe.unet,
            vae=pipe.vae,
            text_encoders=encoders,
            tokenizers=tokenizers,
            noise_scheduler=noise_scheduler or DDPMScheduler.from_config(pipe.scheduler.config),
            kind="sdxl" if len(encoders) == 2 else "sd",
            source=source,
            base_hash=base_hash,
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        named = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoders[0]}
        if len(self.text_encoders) > 1:
            named["text_encoder_2"] = self.text_encoders[1]
        return named

    def freeze_all(self) -> None:
        for module in self.modules().values():
            module.requires_grad_(False)

    def sampling_pipeline(self) -> Any:
        """A diffusers pipeline over these very modules (adapters and all), sampling with
        DPM-Solver++: what validation grids and DreamBooth's class images are drawn with."""
        from diffusers import DPMSolverMultistepScheduler

        from fairsynth.models.architectures import build_pipeline

        parts: dict[str, Any] = {
            "unet": self.unet,
            "vae": self.vae,
            "text_encoder": self.text_encoders[0],
            "tokenizer": self.tokenizers[0],
            "scheduler": DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config),
        }
        if self.kind == "sdxl":
            parts["text_encoder_2"] = self.text_encoders[1]
            parts["tokenizer_2"] = self.tokenizers[1]
        pipe = build_pipeline(parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe


@dataclass
class Conditioning:
    """What the UNet is conditioned on for one batch.

    Attributes:
        encoder_hidden_states: ``(B, 77, D)`` cross-attention sequence.
        added_cond_kwargs: SDXL's ``{"text_embeds": (B, 1280), "time_ids": (B, 6)}``, else None.
        class_labels: ``(B,)`` class ids for UNets with a class embedding, else None.
    """

    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None = None
    class_labels: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        move = lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None)  # noqa: E731
        return Conditioning(
            move(self.encoder_hidden_states),
            {k: move(v) for k, v in self.added_cond_kwargs.items()} if self.added_cond_kwargs else None,
            self.class_labels.to(device) if self.class_labels is not None else None,
        )


@dataclass
class Batch:
    """One training batch as methods see it (images are already latents in the loop)."""

    captions: list[str]
    records: list["Record"]
    #: SDXL micro-conditioning per sample: (orig_h, orig_w, crop_top, crop_left, target_h, target_w).
    time_ids: torch.Tensor | None = None
    #: Seeded from (run seed, step): any randomness a method needs (e.g. conditioning
    #: dropout) must come from here, so that a resumed run equals an uninterrupted one.
    generator: torch.Generator | None = None


@dataclass
class Phase:
    """One stretch of training with its own trainable set, steps and learning rate.

    Most methods have one phase. Pivotal tuning has three (TI, LoRA, joint); progressive
    unfreezing has one per stage.
    """

    name: str
    steps: int
    learning_rate: float | None = None  # None: the run's learning rate
    lr_scheduler: str | None = None  # None: the run's scheduler
    #: Free-form switches a method reads in parameter_groups (e.g. {"train": ["tokens"]}).
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceAdapter:
    """What one trained method output adds to a diffusers pipeline at generation time.

    Attributes:
        method: the method's registry name.
        lora_adapters: diffusers adapter name -> scale, for LoRA / DoRA weights loaded with
            ``pipe.load_lora_weights(..., adapter_name=name)``; generation activates the
            adapters of every loaded output together with ``pipe.set_adapters``.
        prompt: rewrites a prompt before tokenisation (textual inversion spells out
            multi-vector tokens, which diffusers misses for tokens with capitals).
        conditioning: replaces the text prompt (class embedding): ``(labels, attribute dicts)
            -> (prompt_embeds, negative_prompt_embeds)``, each ``(B, L, D)``.
        vocabulary: the values the method conditions on, per factor (``{"class": [...],
            "fst": [...]}``); a cell outside them cannot be generated.
        tokens: the placeholder tokens the output loaded (textual inversion, pivotal); a
            prompt that names none of them does not use what they learned.
    """

    method: str
    lora_adapters: dict[str, float] = field(default_factory=dict)
    prompt: Callable[[str], str] | None = None
    conditioning: Callable[[list[Any], list[dict[str, Any]]], tuple[torch.Tensor, torch.Tensor]] | None = None
    vocabulary: dict[str, list[str]] | None = None
    tokens: list[str] = field(default_factory=list)


@dataclass
class MethodConfig:
    """Options every method shares; a method's own Config subclasses this."""

    apply_to: Literal["unet", "text_encoder", "both"] = knob(
        "unet", "Which network(s) the method adapts: the UNet, the text encoder(s), or both."
    )
    text_encoder_lr: float | None = knob(None, "Learning rate of text-encoder parameters; None: the run's.")


class Method:
    """Base class of fine-tuning methods. Subclasses live in ``methods/<name>/`` and register."""

    Config: ClassVar[type] = MethodConfig
    #: Base model kinds the method supports.
    kinds: ClassVar[tuple[str, ...]] = ("sd", "sdxl")

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    # -- before training ---------------------------------------------------------------
    @property
    def trains_text_encoder(self) -> bool:
        """True when text-encoder outputs change during training (then they are not cached)."""
        return getattr(self.config, "apply_to", "unet") in ("text_encoder", "both")

    @property
    def trains_vae(self) -> bool:
        """True when VAE weights change during training (full fine-tuning with ``vae`` in its
        ``train`` list): then latents are not cached and images are encoded with gradients."""
        return False

    def check(self, components: Components, records: list["Record"]) -> None:
        """Raise :class:`MethodError` for anything that cannot work, before training starts."""
        if components.kind not in self.kinds:
            raise MethodError(f"method {type(self).__name__} does not support {components.kind} base models")

    def prepare(self, components: Components) -> None:
        """Modify the components once (inject adapters, add tokens); default: nothing."""

    def phases(self, steps: int) -> list[Phase]:
        return [Phase("train", steps)]

    def extra_records(self, components: Components, records: list["Record"], workdir: Path) -> list["Record"]:
        """Records the method adds to the training set (DreamBooth's prior-preservation class
        images, generated by the base model before any adapter is injected); default none."""
        return []

    def loss_weights(self, batch: Batch) -> torch.Tensor | None:
        """Per-sample loss weights ``(B,)`` (DreamBooth: ``prior_loss_weight`` on class
        images); None: all 1."""
        return None

    # -- each phase / step -----------------------------------------------------------------
    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        """Freeze everything, unfreeze what this phase trains; optimiser param groups."""
        raise NotImplementedError

    def encode(self, components: Components, batch: Batch) -> Conditioning:
        """Conditioning for a batch; the default runs the text encoder(s) on the captions."""
        return encode_prompts(components, batch.captions, batch.time_ids)

    def after_step(self, components: Components) -> None:
        """Called after every optimiser step (e.g. to restore frozen embedding rows)."""

    # -- state and outputs -----------------------------------------------------------------
    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        """Every tensor the method trains (checkpoints hold exactly this)."""
        raise NotImplementedError

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        """Write loadable outputs; returns {format name: path}."""
        raise NotImplementedError

    # -- generation ------------------------------------------------------------------------
    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> InferenceAdapter:
        """Load what :meth:`export` wrote into ``export_dir`` into a diffusers pipeline, in place.

        Args:
            pipe: a pipeline of the base model the method was trained on (float32, CPU).
            export_dir: the folder :meth:`export` wrote (``<train.output>/model``).
            name: diffusers adapter name to load LoRA weights under (unique per loaded output).
            scale: strength; LoRA / DoRA scale, and an error for methods that have none.
        """
        raise MethodError(f"method {type(self).__name__} cannot load its export for generation yet")


def trainable_count(groups: list[dict[str, Any]]) -> int:
    return sum(p.numel() for g in groups for p in g["params"])


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompts(components: Components, captions: list[str], time_ids: torch.Tensor | None = None) -> Conditioning:
    """Text conditioning exactly as diffusers' SD / SDXL pipelines compute it.

    SD 1.5/2.x: the last hidden state of the text encoder, ``(B, 77, 768|1024)``.
    SDXL: the penultimate hidden states of both encoders concatenated, ``(B, 77, 2048)``, plus
    the pooled, projected output of the second as ``text_embeds`` and the size/crop
    ``time_ids`` (Podell et al. 2023, micro-conditioning).
    """
    encoders, tokenizers = components.text_encoders, components.tokenizers
    device = next(encoders[0].parameters()).device
    if components.kind == "sd":
        ids = tokenize(tokenizers[0], captions).to(device)
        return Conditioning(encoders[0](ids)[0])
    states, pooled = [], None
    for encoder, tokenizer in zip(encoders, tokenizers):
        out = encoder(tokenize(tokenizer, captions).to(device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]  # the last encoder's pooled projection
    if time_ids is None:
        raise MethodError("SDXL conditioning needs time_ids (original size, crop, target size) per sample")
    return Conditioning(torch.cat(states, dim=-1), {"text_embeds": pooled, "time_ids": time_ids.to(device)})
