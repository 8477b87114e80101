"""Adapting the VAE's decoder to the training images, with the encoder and its latent space fixed.

Why: a latent diffusion model can draw no better than its autoencoder reconstructs. A VAE that
never saw a domain's colours decodes them onto the colours it knows. Measured on the embedded
base and the demo's world, read by the world's judge on held-out true images of a skin-type-
balanced test world: the base's VAE round trip keeps the lesion class of 100 % of type I-II
images but of 67 % of type IV, 61 % of type V and 34 % of type VI (it turns yellow-brown naevi
red and blue-grey pigment green). Fine-tuning the decoder alone on the 420 training images
(600 steps) raised those to 97 %, 90 % and 57 %, and the fine-tuned model's samples, decoded by
it, were read as the asked class in 82 % instead of 56 % of cells' images.

How: Stability's ``sd-vae-ft-mse`` did the same for faces: the encoder is frozen, so every
latent means what it meant to the diffusion model, and only the decoder (and its
``post_quant_conv``) learns to render latents of this domain. Each step decodes a sample
``z = mean + std · ξ`` of a batch's cached latent distributions (the batch drawn by the run's
balanced sampler, so rare cells weigh as in the UNet's training) and minimises L1 + MSE to the
pixels. A posterior sample rather than the mean, because the diffusion model's outputs are
samples of that distribution too.

    report = adapt_decoder(vae, examples, latent_cache, sampler, config, seed=0, device="cpu")
    vae.save_pretrained(model_dir / "vae")     # loaded by `fairsynth generate` in place of the base's

The report holds the loss and the reconstruction PSNR (posterior mean round trip) of the
validation images before and after, overall and per skin type and class, so a user without a
judge can still see which groups the autoencoder renders worst.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import torch

from fairsynth.data.fst import to_roman
from fairsynth.training.caching import encode_moments
from fairsynth.training.config import VaeDecoderConfig
from fairsynth.training.data import TrainingExample, load_pixels
from fairsynth.training.randomness import derived_seed


def decoder_parameters(vae: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The decoder's parameters and ``post_quant_conv``'s: what adaptation trains."""
    return [p for name, p in vae.named_parameters() if name.startswith(("decoder.", "post_quant_conv."))]


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE over pixels in [-1, 1] (the LDM autoencoder's L1, plus MSE as sd-vae-ft-mse)."""
    difference = reconstruction.float() - target.float()
    return difference.abs().mean() + difference.square().mean()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for images in [-1, 1] (peak-to-peak 2).  # (B,)"""
    mse = (reconstruction.float().clamp(-1, 1) - target.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def reconstruction_psnr(
    vae: torch.nn.Module, examples: Sequence[TrainingExample], device: torch.device | str, batch_size: int = 32
) -> dict[str, Any]:
    """Mean PSNR of the posterior-mean round trip of ``examples``: overall, per skin type and per class."""
    vae.eval()
    values: list[float] = []
    groups: dict[str, dict[str, list[float]]] = {"fst": defaultdict(list), "class": defaultdict(list)}
    for start in range(0, len(examples), batch_size):
        chosen = examples[start : start + batch_size]
        pixels = torch.stack([load_pixels(e.path, e.size) for e in chosen]).to(device)  # (B, 3, H, W)
        mean, _ = encode_moments(vae, pixels)
        decoded = vae.decode(mean.to(next(vae.parameters()).dtype)).sample  # (B, 3, H, W)
        for example, value in zip(chosen, psnr(decoded, pixels).tolist()):
            values.append(value)
            fst = example.record.attributes.get("fst")
            groups["fst"][to_roman(fst) if fst is not None else "unknown"].append(value)
            groups["class"][str(example.record.label)].append(value)

    def average(numbers: list[float]) -> float | None:
        return float(sum(numbers) / len(numbers)) if numbers else None

    return {
        "images": len(values),
        "psnr_db": average(values),
        "psnr_db_by_fst": {key: average(v) for key, v in sorted(groups["fst"].items())},
        "psnr_db_by_class": {key: average(v) for key, v in sorted(groups["class"].items())},
    }


def adapt_decoder(
    vae: torch.nn.Module,
    examples: Sequence[TrainingExample],
    latent_cache: Any,
    sampler: Any,
    config: VaeDecoderConfig,
    *,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    validation: Sequence[TrainingExample] = (),
) -> dict[str, Any]:
    """Train ``vae``'s decoder in place for ``config.steps`` steps; the report of what it did.

    ``latent_cache`` gives each example's latent distribution (:class:`~fairsynth.training.caching.LatentCache`,
    filled by the run), ``sampler`` draws the batches (:class:`~fairsynth.training.data.BatchSampler`).
    Every draw comes from generators seeded by (seed, step), so the result is the same whenever
    it is run again (a resumed run redoes it).
    """
    before = reconstruction_psnr(vae, validation, device) if validation else None
    params = decoder_parameters(vae)
    vae.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    vae.train()
    losses: list[float] = []
    for step in range(config.steps):
        batch = torch.Generator().manual_seed(derived_seed(seed, step, "vae-decoder-batch"))
        chosen = [examples[i] for i in sampler.draw(batch, batch_size)]
        pixels = torch.stack([load_pixels(e.path, e.size) for e in chosen]).to(device)  # (B, 3, H, W)
        mean, std = latent_cache.moments(chosen, device)  # (B, 4, H/8, W/8) each, unscaled
        noise = torch.Generator().manual_seed(derived_seed(seed, step, "vae-decoder-noise"))
        latents = mean + std * torch.randn(mean.shape, generator=noise).to(device)  # (B, 4, H/8, W/8)
        reconstruction = vae.decode(latents.to(params[0].dtype)).sample  # (B, 3, H, W)
        loss = reconstruction_loss(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"train.vae_decoder: the decoder's loss is {value} at step {step + 1}; lower its learning_rate")
        losses.append(value)
    vae.requires_grad_(False)
    vae.eval()
    report: dict[str, Any] = {
        "steps": config.steps, "learning_rate": config.learning_rate, "batch_size": batch_size,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(sum(losses[-10:]) / len(losses[-10:])) if losses else None,
    }
    if validation:
        report["validation_before"] = before
        report["validation_after"] = reconstruction_psnr(vae, validation, device)
    return report
