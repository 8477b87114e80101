"""A few real optimisation steps of a method on tiny seeded components, as the loop runs them.

The order is the contract of :mod:`fairsynth.methods.base`: check, extra_records, prepare,
then per phase parameter_groups and steps of encode / loss / optimizer step / after_step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from fairsynth.data.records import Record
from fairsynth.methods.base import Batch, Components, Method, Phase
from fairsynth.models.architectures import tiny_sd_components, tiny_sdxl_components, training_noise_scheduler


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    threads of several test processes spin against each other (5x slower); import this
    fixture into a test module to run its tests on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str = "sd", seed: int = 0) -> tuple[Components, dict[str, Any]]:
    """Tiny SD / SDXL components as the loop sees them, and the raw dict for build_pipeline."""
    raw = tiny_sd_components(seed) if kind == "sd" else tiny_sdxl_components(seed)
    components = Components(
        unet=raw["unet"],
        vae=raw["vae"],
        text_encoders=[raw["text_encoder"]] + ([raw["text_encoder_2"]] if "text_encoder_2" in raw else []),
        tokenizers=[raw["tokenizer"]] + ([raw["tokenizer_2"]] if "tokenizer_2" in raw else []),
        noise_scheduler=training_noise_scheduler(raw["scheduler"]),
        kind=kind,
    )
    return components, raw


def derm_records(n: int = 4, fsts: tuple[int, ...] = (1, 6)) -> list[Record]:
    """``n`` melanoma / psoriasis records over the given skin types, captions without tokens."""
    labels = ["melanoma", "psoriasis"]
    out = []
    for i in range(n):
        label, fst = labels[i % 2], fsts[(i // 2) % len(fsts)]
        out.append(Record(f"r{i}", f"r{i}.png", label, f"a photo of {label}", {"fst": fst}))
    return out


@dataclass
class Run:
    phases: list[Phase] = field(default_factory=list)
    groups: list[list[dict[str, Any]]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def train_steps(
    method: Method,
    components: Components,
    records: list[Record],
    *,
    steps: int = 2,
    max_steps_per_phase: int = 2,
    learning_rate: float = 1e-2,
    workdir: Path | None = None,
    seed: int = 0,
    prepared: bool = False,
    on_phase_end: Callable[[Phase], None] | None = None,
) -> Run:
    """check, extra_records, prepare, then each phase: parameter_groups and a few AdamW steps.

    AdamW's weight decay moves every parameter handed to it, so frozen rows / weights really
    are at risk and ``after_step`` has to do its job.
    """
    run = Run()
    if not prepared:
        method.check(components, records)
        if workdir is not None:
            records = records + method.extra_records(components, records, workdir)
        method.prepare(components)
    size = components.unet.config.sample_size
    for phase in method.phases(steps):
        groups = method.parameter_groups(components, phase, learning_rate)
        run.phases.append(phase)
        run.groups.append(groups)
        optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=1e-2)
        for step in range(min(phase.steps, max_steps_per_phase)):
            generator = torch.Generator().manual_seed(seed * 1000 + step)
            batch_records = records[:4]
            time_ids = None
            if components.kind == "sdxl":
                time_ids = torch.tensor([[32, 32, 0, 0, 32, 32]] * len(batch_records), dtype=torch.float32)
            batch = Batch([r.caption or "" for r in batch_records], batch_records, time_ids, generator)
            cond = method.encode(components, batch)
            latents = torch.randn(len(batch_records), 4, size, size, generator=generator)  # (B, 4, h, w)
            noise = torch.randn(latents.shape, generator=generator)
            timesteps = torch.randint(0, 1000, (len(batch_records),), generator=generator)
            noisy = components.noise_scheduler.add_noise(latents, noise, timesteps)
            pred = components.unet(
                noisy, timesteps, cond.encoder_hidden_states,
                added_cond_kwargs=cond.added_cond_kwargs, class_labels=cond.class_labels,
            ).sample
            per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))  # (B,)
            weights = method.loss_weights(batch)
            loss = (per_sample * (weights if weights is not None else 1.0)).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_step(components)
            run.losses.append(loss.item())
        if on_phase_end is not None:
            on_phase_end(phase)
    return run
