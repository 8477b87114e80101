"""The loss pieces against their reference formulas (and diffusers' own implementations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from fairsynth.training.losses import (
    class_diversity_loss,
    min_snr_weights,
    offset_noise,
    per_sample_mse,
    predicted_x0,
    snr,
    target_for,
    update_pool,
    x0_embedding,
)


def _schedule() -> DDPMScheduler:
    # SD's schedule ("scaled_linear" betas, 1000 steps)
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _draws(batch: int = 4):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 4, 8, 8, generator=g)
    noise = torch.randn(batch, 4, 8, 8, generator=g)
    timesteps = torch.tensor([0, 10, 500, 999][:batch])
    return x0, noise, timesteps


def test_epsilon_target_is_the_noise():
    scheduler = _schedule()
    x0, noise, t = _draws()
    assert torch.equal(target_for("epsilon", x0, noise, scheduler.alphas_cumprod, t), noise)


def test_v_target_is_alpha_eps_minus_sigma_x0():
    scheduler = _schedule()
    x0, noise, t = _draws()
    abar = scheduler.alphas_cumprod[t].double()
    alpha, sigma = abar.sqrt()[:, None, None, None], (1 - abar).sqrt()[:, None, None, None]
    expected = (alpha * noise.double() - sigma * x0.double()).float()
    got = target_for("v_prediction", x0, noise, scheduler.alphas_cumprod, t)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, scheduler.get_velocity(x0, noise, t), rtol=1e-6, atol=1e-6)


def test_snr_matches_diffusers_compute_snr():
    scheduler = _schedule()
    t = torch.arange(0, 1000, 37)
    torch.testing.assert_close(snr(scheduler.alphas_cumprod, t), compute_snr(scheduler, t), rtol=1e-6, atol=0)


def test_min_snr_weights_match_the_formula_and_diffusers_recipe():
    scheduler = _schedule()
    t = torch.arange(0, 1000, 13)
    gamma = 5.0
    s = compute_snr(scheduler, t)
    # Hang et al. 2023: min(SNR, γ) / SNR on the ε-loss; diffusers divides by SNR + 1 for v.
    reference_eps = torch.stack([s, gamma * torch.ones_like(s)], dim=1).min(dim=1)[0] / s
    reference_v = torch.stack([s, gamma * torch.ones_like(s)], dim=1).min(dim=1)[0] / (s + 1)
    torch.testing.assert_close(min_snr_weights(snr(scheduler.alphas_cumprod, t), gamma, "epsilon"), reference_eps)
    torch.testing.assert_close(min_snr_weights(snr(scheduler.alphas_cumprod, t), gamma, "v_prediction"), reference_v)
    # low noise (high SNR) is down-weighted, high noise keeps weight 1 on ε
    weights = min_snr_weights(s, gamma, "epsilon")
    assert weights[0] < 0.01 and torch.allclose(weights[-1], torch.tensor(1.0))


def test_predicted_x0_inverts_the_forward_process():
    scheduler = _schedule()
    x0, noise, t = _draws()
    t = torch.tensor([1, 10, 500, 900])
    noisy = scheduler.add_noise(x0, noise, t)
    for kind in ("epsilon", "v_prediction"):
        perfect = target_for(kind, x0, noise, scheduler.alphas_cumprod, t)
        torch.testing.assert_close(predicted_x0(kind, noisy, perfect, scheduler.alphas_cumprod, t), x0, rtol=1e-4, atol=1e-4)


def test_per_sample_mse_is_the_mean_over_each_sample():
    a, b = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    expected = torch.stack([F.mse_loss(a[i], b[i]) for i in range(3)])
    torch.testing.assert_close(per_sample_mse(a, b), expected)


def test_offset_noise_adds_one_constant_per_sample_and_channel():
    noise = torch.zeros(2, 4, 3, 3)
    extra = torch.arange(8.0).reshape(2, 4, 1, 1)
    out = offset_noise(noise, 0.1, extra)
    assert torch.allclose(out[1, 2], torch.full((3, 3), 0.6))


def test_x0_embedding_ignores_overall_colour():
    x0 = torch.randn(2, 4, 8, 8)
    shifted = x0 + torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1)  # another skin tone
    torch.testing.assert_close(x0_embedding(x0, 4), x0_embedding(shifted, 4), rtol=1e-5, atol=1e-5)
    assert x0_embedding(x0, 4).shape == (2, 64)


def test_class_diversity_is_the_mean_same_class_cosine():
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    labels = ["a", "a", "b", "c"]
    pool = {"b": torch.tensor([[0.0, 2.0], [1.0, 0.0]])}
    cos = lambda u, v: float(F.cosine_similarity(u, v, dim=0))  # noqa: E731
    # sample 0 and 1 pair with each other; sample 2 with class b's pool; sample 3 has no partner
    s0 = cos(e[0], e[1])
    s1 = cos(e[1], e[0])
    s2 = (cos(e[2], pool["b"][0]) + cos(e[2], pool["b"][1])) / 2
    expected = (s0 + s1 + s2) / 3
    assert abs(float(class_diversity_loss(e, labels, pool)) - expected) < 1e-6
    assert float(class_diversity_loss(e, ["x", "y", "z", "w"])) == 0.0


def test_class_diversity_gradient_spreads_a_class_apart():
    torch.manual_seed(0)
    e = (torch.randn(4, 16) + 3.0).requires_grad_(True)  # similar embeddings
    labels = ["a"] * 4
    before = float(class_diversity_loss(e, labels).detach())
    class_diversity_loss(e, labels).backward()
    with torch.no_grad():
        e -= 0.5 * e.grad
    assert float(class_diversity_loss(e, labels).detach()) < before


def test_pool_keeps_the_newest_per_class():
    pool: dict[str, torch.Tensor] = {}
    for step in range(5):
        update_pool(pool, torch.full((2, 3), float(step)), ["a", "b"], size=3)
    assert pool["a"].shape == (3, 3) and pool["a"][:, 0].tolist() == [2.0, 3.0, 4.0]
