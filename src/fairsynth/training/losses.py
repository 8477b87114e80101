"""The denoising loss and its weightings, as pure functions of tensors.

Notation (DDPM, Ho et al. 2020): ``x0`` the clean latent, ``ε`` the noise, ``ᾱ_t`` the
cumulative product of the noise schedule (``alphas_cumprod``), ``α_t = sqrt(ᾱ_t)`` and
``σ_t = sqrt(1 - ᾱ_t)``, so that ``x_t = α_t x0 + σ_t ε`` and ``SNR(t) = α_t² / σ_t²``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Prediction = str  # "epsilon" | "v_prediction"


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)`` so that it broadcasts against ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def alpha_sigma(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(α_t, σ_t)``, each ``(B,)`` float32, for integer timesteps."""
    abar = alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return abar.sqrt(), (1.0 - abar).sqrt()


def target_for(
    prediction_type: Prediction, latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """What the UNet is trained to output.

    ``epsilon``: the noise ε (Ho et al. 2020, Eq. 14). ``v_prediction``: the velocity
    ``v = α_t ε - σ_t x0`` (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        alpha, sigma = alpha_sigma(alphas_cumprod, timesteps)
        alpha, sigma = _per_sample(alpha, latents), _per_sample(sigma, latents)
        return (alpha * noise - sigma * latents.float()).to(latents.dtype)
    raise ValueError(f"unknown prediction type {prediction_type!r}; use 'epsilon' or 'v_prediction'")


def predicted_x0(
    prediction_type: Prediction, noisy: torch.Tensor, model_output: torch.Tensor, alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """The clean latent x̂0 the model output implies (differentiable).

    ``epsilon``: ``x̂0 = (x_t - σ_t ε̂) / α_t``; ``v_prediction``: ``x̂0 = α_t x_t - σ_t v̂``.
    """
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps)
    alpha, sigma = _per_sample(alpha, noisy), _per_sample(sigma, noisy)
    noisy, model_output = noisy.float(), model_output.float()
    if prediction_type == "epsilon":
        return (noisy - sigma * model_output) / alpha
    if prediction_type == "v_prediction":
        return alpha * noisy - sigma * model_output
    raise ValueError(f"unknown prediction type {prediction_type!r}; use 'epsilon' or 'v_prediction'")


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """``SNR(t) = ᾱ_t / (1 - ᾱ_t)``, ``(B,)``."""
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps)
    return (alpha / sigma) ** 2


def min_snr_weights(snr_values: torch.Tensor, gamma: float, prediction_type: Prediction) -> torch.Tensor:
    """Min-SNR-γ loss weights, ``(B,)`` (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy", Eq. 9 and Sec. 3.4).

    The weight on the x0-loss is ``min(SNR, γ)``; expressed on the ε-loss it is
    ``min(SNR, γ) / SNR`` and on the v-loss ``min(SNR, γ) / (SNR + 1)``.
    """
    clipped = torch.clamp(snr_values, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr_values
    if prediction_type == "v_prediction":
        return clipped / (snr_values + 1.0)
    raise ValueError(f"unknown prediction type {prediction_type!r}; use 'epsilon' or 'v_prediction'")


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample over all its elements, ``(B,)``, in float32."""
    return F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(dim=1)


def offset_noise(noise: torch.Tensor, offset: float, extra: torch.Tensor) -> torch.Tensor:
    """Offset noise (Guttenberg 2023, "Diffusion with Offset Noise"): ``ε + offset · ξ`` with
    one ``ξ ~ N(0, 1)`` per sample and channel, ``extra`` of shape ``(B, C, 1, 1)``; lets the
    model learn to change an image's overall brightness."""
    return noise + offset * extra.to(device=noise.device, dtype=noise.dtype)


def x0_embedding(x0: torch.Tensor, grid: int) -> torch.Tensor:
    """The embedding the class-diversity term compares, ``(B, C * grid * grid)``.

    ``x0`` ``(B, C, h, w)`` is average-pooled to ``(B, C, grid, grid)``; each channel's mean is
    then removed, so that the embedding describes the layout and texture of the image at that
    scale but not its overall colour (which carries the skin type).
    """
    pooled = F.adaptive_avg_pool2d(x0.float(), grid)  # (B, C, grid, grid)
    pooled = pooled - pooled.mean(dim=(2, 3), keepdim=True)
    return pooled.flatten(1)


def class_diversity_loss(
    embeddings: torch.Tensor, labels: list[str], pool: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """FairSkin's class-diversity term: the mean same-class cosine similarity (to minimise).

    For every sample ``i`` whose class has at least one other embedding — another sample
    of the batch, or an entry of ``pool[label]`` (embeddings of earlier steps, no gradient) —
    ``s_i = mean_j cos(e_i, e_j)`` over those partners ``j``. The term is the mean of ``s_i``
    over such samples, and 0 when there are none. Lowering it spreads the predicted clean
    images of one class apart, against mode collapse on a small class. FairSkin (Zhang et al.
    2024, arXiv:2410.22551) adds a class-diversity loss to its resampling; the paper does not
    pin down the embedding, so this exact definition (what is compared, the pool) is
    fairsynth's. Embeddings come from :func:`x0_embedding`.

    Args:
        embeddings: ``(B, D)``, differentiable.
        labels: class of each sample.
        pool: class -> ``(k, D)`` earlier embeddings.
    """
    pool = pool or {}
    normed = F.normalize(embeddings.float(), dim=1, eps=1e-8)  # (B, D)
    terms = []
    for i, label in enumerate(labels):
        partners = [normed[j] for j, other in enumerate(labels) if j != i and other == label]
        stored = pool.get(label)
        if stored is not None and len(stored):
            partners.extend(F.normalize(stored.to(normed).detach(), dim=1, eps=1e-8))
        if partners:
            terms.append((torch.stack(partners) @ normed[i]).mean())
    if not terms:
        return embeddings.sum() * 0.0  # keeps the graph (and the device) of the inputs
    return torch.stack(terms).mean()


def update_pool(
    pool: dict[str, torch.Tensor], embeddings: torch.Tensor, labels: list[str], size: int
) -> dict[str, torch.Tensor]:
    """Append detached embeddings to their class's pool, keeping the newest ``size`` per class."""
    if size <= 0:
        return pool
    for label in dict.fromkeys(labels):
        rows = embeddings[[i for i, other in enumerate(labels) if other == label]].detach().float().cpu()
        joined = torch.cat([pool[label], rows]) if label in pool else rows
        pool[label] = joined[-size:].clone()
    return pool


def denoise(unet: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond) -> torch.Tensor:
    """The UNet's output for ``x_t`` ``(B, 4, H/8, W/8)`` under a method's
    :class:`~fairsynth.methods.base.Conditioning`, same shape."""
    return unet(
        noisy,
        timesteps,
        encoder_hidden_states=cond.encoder_hidden_states,
        added_cond_kwargs=cond.added_cond_kwargs,
        class_labels=cond.class_labels,
        return_dict=False,
    )[0]
