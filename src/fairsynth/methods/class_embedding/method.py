"""Class-embedding conditioning: the UNet learns from class (and attribute) ids instead of text.

Few-shot industrial defects: 9 defect classes of ~10 images, captions say little. The text
encoder is set aside; a learned :class:`~.embedding.ClassEmbedding` produces the
cross-attention sequence and the UNet (fully, through a LoRA, or not at all) learns to read it.
Conditioning dropout trains the null ids so that classifier-free guidance works at generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from fairsynth.config import ConfigError, knob, save_resolved
from fairsynth.data.fst import to_roman
from fairsynth.io import atomic_write_text, staged_dir
from fairsynth.methods import METHODS
from fairsynth.methods._export import write_note, write_safetensors
from fairsynth.methods.base import Batch, Components, Conditioning, Method, MethodConfig, MethodError, Phase, encode_prompts
from fairsynth.methods.class_embedding.embedding import (
    CLASS_FACTOR,
    EMBEDDING_FILE,
    VOCAB_FILE,
    ClassEmbedding,
    ClassVocabulary,
    guidance_pair,
    load_class_embedding,
)
from fairsynth.methods.lora import LoRA
from fairsynth.methods.lora.config import LoRAConfig

if TYPE_CHECKING:
    from fairsynth.data.records import Record


@dataclass
class ClassEmbeddingConfig(MethodConfig):
    """A learned class/attribute embedding replaces the text encoder; the UNet trains to read it."""

    apply_to: Literal["unet", "text_encoder", "both"] = knob(
        "unet", "Always `unet`: the text encoder is not used (see `unet` for how the UNet trains)."
    )
    attributes: list[str] = knob(
        [], "Record attributes that condition besides the class, e.g. ['fst']; a missing value is the null id."
    )
    classes: list[str] = knob(
        [], "Class vocabulary in id order; empty: the sorted labels of the training records. "
        "A record whose label is not listed is an error."
    )
    attribute_values: dict[str, list[Any]] = knob(
        {}, "Values of an attribute in id order, e.g. {fst: [1, 2, 3, 4, 5, 6]}, so that values the training "
        "records lack (FST VI) can still be asked for (they keep their initial embedding); "
        "unlisted attributes: the sorted values of the training records."
    )
    tokens_per_factor: int = knob(1, "Vectors per conditioning factor; the sequence is factors x this long.")
    cond_dropout: float = knob(
        0.1, "Probability that a sample trains with the null ids (classifier-free guidance needs > 0)."
    )
    dropout_per_factor: bool = knob(
        False, "Drop each factor independently (guidance on the class alone works too) instead of all together."
    )
    init: Literal["text", "random"] = knob(
        "text", "`text`: each value starts at the text encoder's embedding of its name (the UNet already "
        "reads that space); `random`: normal(0, 0.02)."
    )
    unet: Literal["full", "lora", "frozen"] = knob(
        "lora", "How the UNet trains: all weights, a LoRA on its attention projections, or not at all."
    )
    lora_rank: int = knob(16, "LoRA rank r (unet: lora).")
    lora_alpha: float = knob(16.0, "LoRA alpha; the update is scaled by alpha / r.")
    lora_targets: str | list[str] = knob(
        "attention", "Layers the LoRA wraps: a preset (attention, cross_attention, attention_ff, locon) or "
        "module names; cross_attention is where the class embedding is read."
    )
    embedding_lr: float | None = knob(None, "Learning rate of the class embedding; None: the run's.")
    seed: int = knob(0, "Seed of the random initialisation (init: random).")

    def __post_init__(self) -> None:
        if self.apply_to != "unet":
            raise ConfigError(f"class_embedding replaces the text encoder; apply_to must be unet, got {self.apply_to!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ConfigError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.tokens_per_factor < 1:
            raise ConfigError(f"tokens_per_factor must be >= 1, got {self.tokens_per_factor}")
        try:
            self.lora_config()
        except ConfigError as err:
            raise ConfigError(f"class_embedding's LoRA (lora_rank, lora_alpha, lora_targets): {err}") from None
        if CLASS_FACTOR in self.attributes or len(set(self.attributes)) != len(self.attributes):
            raise ConfigError(f"attributes must be distinct and not {CLASS_FACTOR!r}, got {self.attributes}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes repeat a name: {self.classes}")
        for name, values in self.attribute_values.items():
            if name not in self.attributes:
                raise ConfigError(f"attribute_values names {name!r}, which is not in attributes {self.attributes}")
            if not values or len({str(v) for v in values}) != len(values):
                raise ConfigError(f"attribute_values.{name} must list distinct values, got {values}")

    def lora_config(self) -> LoRAConfig:
        """The options of the ``lora`` method that adapts the UNet (unet: lora)."""
        return LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=self.lora_targets, apply_to="unet")


@METHODS.register("class_embedding", help="Learned class/attribute-id embedding instead of text (few-shot defects)")
class ClassEmbeddingMethod(Method):
    """Condition the UNet on learned class (and attribute) embeddings; SD 1.x/2.x only.

    Export: ``class_embedding.safetensors`` + ``class_vocab.json`` (read back with
    :func:`~.embedding.load_class_embedding`, turned into ``prompt_embeds`` with
    :func:`~.embedding.class_conditioning`), plus ``unet/`` (full) or the LoRA
    (the ``lora`` method's export in ``lora/``: ``pytorch_lora_weights.safetensors`` and a kohya file).
    """

    Config = ClassEmbeddingConfig
    #: SDXL's UNet also needs a pooled text embedding per sample, which this method does not learn.
    kinds = ("sd",)

    def __init__(self, config: ClassEmbeddingConfig | None = None) -> None:
        super().__init__(config)
        self.vocab: ClassVocabulary | None = None
        self.embedding: ClassEmbedding | None = None
        self.lora = LoRA(self.config.lora_config()) if self.config.unet == "lora" else None

    @property
    def trains_text_encoder(self) -> bool:
        # The text encoder is not used after prepare (and never trains); overriding `encode`
        # already keeps the loop from caching text embeddings.
        return False

    # -- before training ---------------------------------------------------------------------
    def check(self, components: Components, records: list["Record"]) -> None:
        if components.kind not in self.kinds:
            raise MethodError(
                f"class_embedding does not support {components.kind} base models, only SD 1.x/2.x "
                "(an SDXL UNet also needs a pooled text embedding per sample)"
            )
        dim = components.unet.config.cross_attention_dim
        if not isinstance(dim, int):
            raise MethodError(f"the UNet's cross_attention_dim {dim!r} is not one width")
        if not records:
            raise MethodError("class_embedding builds its class vocabulary from the training records; got none")
        self.vocab = ClassVocabulary.from_records(
            records, list(self.config.attributes), list(self.config.classes) or None,
            {k: [str(v) for v in values] for k, values in self.config.attribute_values.items()},
        )
        for record in records:
            self.vocab.record_ids(record)
        if self.lora is not None:
            self.lora.check(components, records)

    def _need(self) -> tuple[ClassVocabulary, ClassEmbedding]:
        if self.vocab is None or self.embedding is None:
            raise MethodError("class_embedding: call check(components, records) and prepare(components) first")
        return self.vocab, self.embedding

    def prepare(self, components: Components) -> None:
        if self.vocab is None:
            raise MethodError("class_embedding: call check(components, records) first (it builds the vocabulary)")
        dim = components.unet.config.cross_attention_dim
        embedding = ClassEmbedding(self.vocab.sizes, self.config.tokens_per_factor, dim)
        with torch.no_grad():
            if self.config.init == "text":
                self._init_from_text(components, embedding)
            else:
                generator = torch.Generator().manual_seed(self.config.seed)
                for table in embedding.tables:
                    table.copy_(torch.randn(table.shape, generator=generator) * 0.02)
        self.embedding = embedding.to(components.unet.device)
        if self.lora is not None:
            self.lora.prepare(components)

    def _init_from_text(self, components: Components, embedding: ClassEmbedding) -> None:
        """Each value's vectors start at the mean hidden state of its name's tokens; null at ""."""
        tokenizer = components.tokenizers[0]

        def content_mean(text: str) -> torch.Tensor:
            states = encode_prompts(components, [text]).encoder_hidden_states[0]  # (77, D)
            count = len(tokenizer.encode(text, add_special_tokens=False))
            return states[1 : 1 + count].mean(0) if count else states.mean(0)  # (D,)

        def name_of(factor: str, value: str) -> str:
            if factor == CLASS_FACTOR:
                return value.replace("_", " ")  # broken_large -> "broken large"
            if factor == "fst" and value.isdigit():
                return f"Fitzpatrick skin type {to_roman(int(value))}"
            return f"{factor} {value}"

        assert self.vocab is not None
        for table, factor, values in zip(embedding.tables, self.vocab.factors, self.vocab.values):
            names = [name_of(factor, v) for v in values]
            for row, text in enumerate(names):
                table[row] = content_mean(text).to(table.dtype)
            table[len(values)] = content_mean("").to(table.dtype)

    # -- each phase / step ---------------------------------------------------------------------
    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        _, embedding = self._need()
        embedding.to(components.unet.device)  # the loop moves the components, not this module
        components.freeze_all()
        lr = phase.learning_rate if phase.learning_rate is not None else learning_rate
        embedding.requires_grad_(True)
        embedding_lr = self.config.embedding_lr if self.config.embedding_lr is not None else lr
        groups = [{"params": list(embedding.parameters()), "lr": embedding_lr, "name": "class_embedding"}]
        if self.config.unet == "full":
            components.unet.requires_grad_(True)
            groups.append({"params": list(components.unet.parameters()), "lr": lr, "name": "unet"})
        elif self.lora is not None:
            adapters = Phase(phase.name, phase.steps, settings={"train": "adapters"})
            lora_groups = self.lora.parameter_groups(components, adapters, lr)  # freezes all but the LoRA
            embedding.requires_grad_(True)
            groups += [{**group, "name": f"{group['name']}_lora"} for group in lora_groups]
        return groups

    def ids(self, records: list["Record"]) -> torch.Tensor:
        """``(B, F)`` ids of the records (class, then each attribute); unknown values are errors."""
        vocab, _ = self._need()
        return torch.tensor([vocab.record_ids(r) for r in records], dtype=torch.long)

    def guidance_embeds(
        self, labels: list[str], attributes: list[dict[str, Any]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prompt_embeds, negative_prompt_embeds)`` for a diffusers SD pipeline (validation grids).

        Example: ``pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=3)``
        with ``cond, uncond = method.guidance_embeds(["crack"], [{"fst": 6}])``.
        """
        vocab, embedding = self._need()
        attributes = attributes or [{} for _ in labels]
        ids = torch.tensor([vocab.ids(label, attrs) for label, attrs in zip(labels, attributes)], dtype=torch.long)
        with torch.no_grad():
            return guidance_pair(embedding, ids[:, 0].to(embedding.position.device), ids[:, 1:])

    def encode(self, components: Components, batch: Batch) -> Conditioning:
        """The learned sequence ``(B, F * k, D)``; null ids with probability ``cond_dropout``.

        The dropout draws from ``batch.generator`` only (a resumed run draws the same); a batch
        without a generator (evaluation) is never dropped. A batch without records (the
        unconditional side of guidance, ``Batch([""], [])``) gets every factor's null id.
        """
        vocab, embedding = self._need()
        if len(batch.records) != len(batch.captions):
            ids = torch.tensor(vocab.null_ids).expand(len(batch.captions), -1)  # (B, F)
        else:
            ids = self.ids(batch.records)  # (B, F)
        if self.config.cond_dropout > 0 and batch.generator is not None:
            generator = batch.generator
            shape = ids.shape if self.config.dropout_per_factor else (ids.shape[0], 1)
            drop = torch.rand(shape, generator=generator, device=generator.device).cpu() < self.config.cond_dropout
            ids = torch.where(drop.expand_as(ids), torch.tensor(vocab.null_ids).expand_as(ids), ids)
        device = components.unet.device
        if embedding.position.device != device:
            embedding.to(device)  # in place: the optimiser's parameters stay the same objects
        return Conditioning(embedding(ids.to(device)))

    def after_step(self, components: Components) -> None:
        pass

    # -- state and outputs ------------------------------------------------------------------------
    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        _, embedding = self._need()
        state = {f"class_embedding.{k}": v.detach().clone().cpu() for k, v in embedding.tensors().items()}
        if self.config.unet == "full":
            state.update({f"unet.{k}": v.detach().clone().cpu() for k, v in components.unet.state_dict().items()})
        elif self.lora is not None:
            state.update({f"lora.{k}": v for k, v in self.lora.trainable_state(components).items()})
        return state

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        _, embedding = self._need()
        own = {k.removeprefix("class_embedding."): v for k, v in state.items() if k.startswith("class_embedding.")}
        tensors = embedding.tensors()
        if set(own) != set(tensors):
            raise MethodError(f"checkpoint class embedding has {sorted(own)}, expected {sorted(tensors)}")
        with torch.no_grad():
            for key, value in own.items():
                if value.shape != tensors[key].shape:
                    raise MethodError(
                        f"checkpoint class embedding {key} has shape {tuple(value.shape)}, "
                        f"expected {tuple(tensors[key].shape)} (did the class vocabulary change?)"
                    )
                tensors[key].copy_(value)
        rest = {k: v for k, v in state.items() if not k.startswith("class_embedding.")}
        if self.config.unet == "full":
            unet_state = {k.removeprefix("unet."): v for k, v in rest.items() if k.startswith("unet.")}
            missing, unexpected = components.unet.load_state_dict(unet_state, strict=False)
            if missing or unexpected:
                raise MethodError(f"checkpoint UNet does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        elif self.lora is not None:
            self.lora.load_trainable_state(components, {k.removeprefix("lora."): v for k, v in rest.items()})

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> Any:
        """The UNet part (``lora/`` at ``scale``, or ``unet/``) and conditioning from class and attribute ids
        in place of the prompt: the null ids give the negative conditioning of classifier-free guidance."""
        from fairsynth.methods._inference import load_lora, load_networks, merge, require_unit_scale
        from fairsynth.methods.base import InferenceAdapter

        folder = Path(export_dir) / "class_embedding"
        if not (folder / VOCAB_FILE).is_file():
            raise MethodError(f"{export_dir} has no class_embedding/{VOCAB_FILE}: not a class_embedding export")
        state, vocab = load_class_embedding(folder)
        if (folder / "lora").is_dir():
            unet_part = load_lora(pipe, folder / "lora", name, scale, "class_embedding")
        else:
            require_unit_scale(scale, "class_embedding with a fully trained UNet")
            unet_part = load_networks(pipe, folder, "class_embedding")

        def conditioning(labels: list[Any], attributes: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.tensor([vocab.ids(label, attrs, where=f"cell {label}") for label, attrs in zip(labels, attributes)])
            return guidance_pair(state, ids[:, 0], ids[:, 1:])  # (B, F * k, D) each

        own = InferenceAdapter("class_embedding", conditioning=conditioning, vocabulary=dict(zip(vocab.factors, vocab.values)))
        return merge("class_embedding", unet_part, own)

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        """``<out_dir>/class_embedding/``: the embedding, its vocabulary, and the UNet part."""
        vocab, embedding = self._need()
        folder = Path(out_dir) / "class_embedding"
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(
            folder / EMBEDDING_FILE, dict(embedding.tensors()),
            metadata={"format": "fairsynth.class_embedding", "factors": json.dumps(vocab.factors)},
        )
        info = vocab.to_json()
        info.update(
            tokens_per_factor=self.config.tokens_per_factor,
            cross_attention_dim=int(embedding.position.shape[1]),
            unet=self.config.unet,
            usage="prompt_embeds = class_conditioning(load_file('class_embedding.safetensors'), class_ids, attr_ids); "
            "negative_prompt_embeds = the same with every factor's null_id",
        )
        atomic_write_text(folder / VOCAB_FILE, json.dumps(info, indent=2) + "\n")
        outputs = {
            "class_embedding": folder / EMBEDDING_FILE,
            "class_vocab": folder / VOCAB_FILE,
            "config": save_resolved(self.config, folder, "method.yaml"),
            "note": write_note(folder, LOADING),
        }
        if self.config.unet == "full":
            with staged_dir(folder / "unet") as staging:  # never a half-written folder
                components.unet.save_pretrained(staging, safe_serialization=True)
            outputs["unet"] = folder / "unet"
        elif self.lora is not None:
            outputs.update({f"lora_{k}": v for k, v in self.lora.export(components, folder / "lora").items()})
        return outputs


LOADING = """
# Loading this class embedding

`class_embedding.safetensors` holds one table per factor (`factor_0` = class, then the
attributes of `class_vocab.json`, each with a last *null* row) and `position`. The UNet part
is in `unet/` (full: `UNet2DConditionModel.from_pretrained`) or `lora/` (`pipe.load_lora_weights`).

```python
from fairsynth.methods.class_embedding import guidance_pair, load_class_embedding
state, vocab = load_class_embedding("OUT/class_embedding")
ids = torch.tensor([vocab.ids("broken_large", {"fst": 6})])      # (B, factors)
cond, uncond = guidance_pair(state, ids[:, 0], ids[:, 1:])       # uncond: every factor's null id
image = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=3.0).images[0]
```
"""
