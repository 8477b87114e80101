"""Latents and text embeddings computed once, kept on disk as safetensors.

Latents: what is cached is the VAE's latent *distribution* of an image — the mean and
standard deviation of its diagonal Gaussian — not one sample. Every step draws
``z = mean + std · ξ`` with ``ξ`` from the step's own generator, exactly as an uncached run
does, so caching changes the speed of training and nothing else. The key is the image's
bytes, the VAE's weights (:func:`fairsynth.models.loading.model_hash`) and the size it trains
at; a new VAE or a changed image gets new entries, stale ones are simply never read again.

Text: the conditioning of a caption (``(77, D)`` hidden states; SDXL adds the pooled
embedding) keyed by the caption and the text encoders' weights, including the empty caption
that caption dropout uses. Only used where the text encoders stay frozen and the method
conditions through the default :meth:`~fairsynth.methods.base.Method.encode`.

Layout: ``<cache_dir>/latents/<k[:2]>/<k>.safetensors``, ``<cache_dir>/text/<k[:2]>/<k>.safetensors``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save

from fairsynth.io import atomic_write_bytes, sha256_file
from fairsynth.methods.base import Batch, Components, Conditioning, encode_prompts
from fairsynth.models.loading import model_hash
from fairsynth.training.data import TrainingExample, load_pixels

#: Bumped whenever what is stored changes, so that old entries are not reused.
CACHE_VERSION = 1


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, (CACHE_VERSION, *parts))).encode()).hexdigest()


def _entry(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}.safetensors"


def _store(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}))


# --------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------


def encode_moments(
    vae: torch.nn.Module, pixels: torch.Tensor, *, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the VAE's latent distribution, each ``(B, 4, H/8, W/8)`` float32;
    differentiable with ``grad=True`` (methods that train the VAE)."""
    param = next(vae.parameters())
    with torch.set_grad_enabled(grad):
        dist = vae.encode(pixels.to(param.device, param.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()


def sample_latents(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator, vae_config: Any
) -> torch.Tensor:
    """``z = (mean + std · ξ - shift) · scale`` with ``ξ`` drawn from ``generator`` on the CPU,
    ``(B, 4, H/8, W/8)`` — the diffusion model's x0 (Rombach et al. 2022, Sec. 3)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    latents = mean + std * noise
    shift = getattr(vae_config, "shift_factor", None) or 0.0
    return (latents - shift) * vae_config.scaling_factor


class LatentCache:
    """Latent distributions of training images, from disk or from the VAE.

    With ``enabled=False`` nothing is read or written and :meth:`moments` encodes every batch,
    with gradients when ``grad`` (the method trains the VAE: ``Method.trains_vae``).
    """

    def __init__(self, folder: str | Path, vae: torch.nn.Module, *, enabled: bool = True, grad: bool = False) -> None:
        if enabled and grad:
            raise ValueError("latents of a VAE that trains cannot be cached")
        self.folder = Path(folder) / "latents"
        self.vae = vae
        self.enabled = enabled
        self.grad = grad
        self.vae_hash = model_hash(vae) if enabled else ""
        self._image_hashes: dict[Path, str] = {}

    def key(self, example: TrainingExample) -> str:
        if example.path not in self._image_hashes:
            self._image_hashes[example.path] = sha256_file(example.path)
        width, height = example.size
        return _key("latents", self._image_hashes[example.path], self.vae_hash, f"{width}x{height}")

    def path(self, example: TrainingExample) -> Path:
        return _entry(self.folder, self.key(example))

    def fill(self, examples: Iterable[TrainingExample]) -> int:
        """Encode every example that has no entry yet, one image at a time; returns how many."""
        if not self.enabled:
            return 0
        made = 0
        for example in examples:
            target = self.path(example)
            if target.exists():
                continue
            pixels = load_pixels(example.path, example.size)
            mean, std = encode_moments(self.vae, pixels[None])
            _store(target, {"mean": mean[0], "std": std[0]})
            made += 1
        return made

    def moments(self, examples: list[TrainingExample], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked mean and std of a batch, ``(B, 4, H/8, W/8)`` each, on ``device``."""
        if not self.enabled:
            pixels = torch.stack([load_pixels(e.path, e.size) for e in examples])  # (B, 3, H, W)
            mean, std = encode_moments(self.vae, pixels, grad=self.grad)
            return mean.to(device), std.to(device)
        means, stds = [], []
        for example in examples:
            target = self.path(example)
            if not target.exists():
                self.fill([example])
            tensors = load_file(target)
            means.append(tensors["mean"])
            stds.append(tensors["std"])
        return torch.stack(means).to(device), torch.stack(stds).to(device)


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


class TextCache:
    """Text conditioning per caption, for methods that leave the text encoders frozen."""

    def __init__(self, folder: str | Path, components: Components) -> None:
        self.folder = Path(folder) / "text"
        self.components = components
        hashes = [model_hash(encoder) for encoder in components.text_encoders]
        tokenizers = [len(tokenizer) for tokenizer in components.tokenizers]  # added tokens change ids
        self.encoders_hash = _key(components.kind, *hashes, *tokenizers)

    def path(self, caption: str) -> Path:
        return _entry(self.folder, _key("text", self.encoders_hash, caption))

    @torch.no_grad()
    def fill(self, captions: Iterable[str]) -> int:
        """Encode every caption without an entry, one at a time; returns how many."""
        made = 0
        for caption in dict.fromkeys(captions):
            target = self.path(caption)
            if target.exists():
                continue
            # SDXL's time_ids are per image, not per caption: a placeholder, not stored.
            time_ids = torch.zeros(1, 6) if self.components.kind == "sdxl" else None
            cond = encode_prompts(self.components, [caption], time_ids)
            tensors = {"encoder_hidden_states": cond.encoder_hidden_states[0]}
            if cond.added_cond_kwargs:
                tensors["text_embeds"] = cond.added_cond_kwargs["text_embeds"][0]
            _store(target, tensors)
            made += 1
        return made

    def conditioning(self, batch: Batch, device: torch.device | str) -> Conditioning:
        """The batch's conditioning from the cache (filled on a miss)."""
        self.fill(batch.captions)
        entries = [load_file(self.path(caption)) for caption in batch.captions]
        states = torch.stack([e["encoder_hidden_states"] for e in entries]).to(device)  # (B, 77, D)
        if self.components.kind != "sdxl":
            return Conditioning(states)
        if batch.time_ids is None:
            raise ValueError("SDXL conditioning needs the batch's time_ids")
        pooled = torch.stack([e["text_embeds"] for e in entries]).to(device)  # (B, D_pooled)
        return Conditioning(states, {"text_embeds": pooled, "time_ids": batch.time_ids.to(device)})
