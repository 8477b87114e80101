"""Validation during training: a class x skin-type image grid and the loss on held-out images.

The grid has one row per class and one column per skin type of the prepared data. Each cell's
prompt is ``validation.caption_template`` (the recipe's ``data.caption_template`` by default)
rendered for that class and skin type — so a cell the data lacks (melanoma on FST VI) is
still asked for — or, without a template, the caption of a record of that class and skin
type (cells without one stay grey). Cell ``k`` is sampled with seed ``validation.seed + k``
at every validation, by a diffusers pipeline assembled from the components being trained
(adapters active) and conditioned through the method's own ``encode``.

The validation loss uses fixed noise, fixed latent samples and evenly spaced timesteps per
record, so that two validations differ only by the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from fairsynth.data.captions import render_caption
from fairsynth.data.fst import group_of, to_roman
from fairsynth.data.records import Record
from fairsynth.io import atomic_write_text, save_png
from fairsynth.methods.base import Batch, Components, Conditioning, Method
from fairsynth.training.caching import LatentCache, sample_latents
from fairsynth.training.config import ValidationConfig
from fairsynth.training.data import TrainingExample
from fairsynth.training.losses import denoise, per_sample_mse, target_for
from fairsynth.training.randomness import derived_seed


@dataclass
class GridCell:
    """One cell of the validation grid."""

    label: str | None
    fst: int | None
    prompt: str | None  # None: no prompt can be made; the cell stays grey
    record: Record | None


def grid_cells(
    records: list[Record], cfg: ValidationConfig
) -> tuple[list[str | None], list[int | None], list[GridCell]]:
    """(classes, skin types, cells row by row) of the validation grid."""
    labels = sorted({r.label for r in records if r.label is not None})
    classes: list[str | None] = list(cfg.classes) or labels[: cfg.max_classes] or [None]  # None: unlabelled data
    skin_types: list[int | None] = list(cfg.fst) or sorted({r.fst for r in records if r.fst is not None}) or [None]
    cells = []
    for label in classes:
        of_class = [r for r in records if r.label == label]
        for fst in skin_types:
            matches = [r for r in of_class if r.fst == fst]
            if cfg.caption_template:
                base = (matches or of_class or [Record(id="", image="", label=label)])[0]  # its other attributes
                attributes = dict(base.attributes)
                attributes.update(fst=fst, fst_group=group_of(fst))
                record = Record(f"validation/{label}/{to_roman(fst)}", "", label, None, attributes)
                record.caption = render_caption(cfg.caption_template, record)
                cells.append(GridCell(label, fst, record.caption, record))
            elif matches:
                cells.append(GridCell(label, fst, matches[0].caption or "", matches[0]))
            else:
                cells.append(GridCell(label, fst, None, None))
    return classes, skin_types, cells


class _ClassLabels:
    """Passes a conditioning's ``class_labels`` to every UNet call of a pipeline (which has no
    argument for them), repeated for the classifier-free-guidance batch."""

    def __init__(self, unet: torch.nn.Module, labels: torch.Tensor | None) -> None:
        self.unet, self.labels, self.handle = unet, labels, None

    def __enter__(self) -> "_ClassLabels":
        if self.labels is not None:
            def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                repeats = args[0].shape[0] // self.labels.shape[0]
                kwargs["class_labels"] = self.labels.repeat(repeats).to(args[0].device)
                return args, kwargs

            self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.remove()


@torch.no_grad()
def sample_grid(
    components: Components,
    method: Method,
    cells: list[GridCell],
    columns: int,
    size: tuple[int, int],
    cfg: ValidationConfig,
    device: torch.device | str,
) -> Image.Image:
    """One image per cell (grey where the cell has no prompt), tiled row by row."""
    tiles = sample_images(components, method, cells, size, cfg, device)
    width, height = size
    rows = max(1, len(tiles) // max(columns, 1))
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for k, tile in enumerate(tiles):
        grid.paste(tile.resize(size), ((k % columns) * width, (k // columns) * height))
    return grid


@torch.no_grad()
def sample_images(
    components: Components,
    method: Method,
    cells: list[GridCell],
    size: tuple[int, int],
    cfg: ValidationConfig,
    device: torch.device | str,
) -> list[Image.Image]:
    """One image per cell (grey where the cell has no prompt); cell ``k`` uses seed ``cfg.seed + k``.

    Only explicit generators are drawn from, so torch's global RNG is left as it was.
    """
    pipe = components.sampling_pipeline()
    width, height = size
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
    tiles = []
    for k, cell in enumerate(cells):
        if cell.prompt is None:
            tiles.append(Image.new("RGB", size, (128, 128, 128)))
            continue
        cond = method.encode(components, Batch([cell.prompt], [cell.record] if cell.record else [], time_ids))
        uncond = method.encode(components, Batch([""], [], time_ids))
        kwargs: dict[str, Any] = dict(
            prompt_embeds=cond.encoder_hidden_states, negative_prompt_embeds=uncond.encoder_hidden_states,
        )
        if components.kind == "sdxl":
            kwargs.update(
                pooled_prompt_embeds=cond.added_cond_kwargs["text_embeds"],
                negative_pooled_prompt_embeds=uncond.added_cond_kwargs["text_embeds"],
            )
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed + k)
        with _ClassLabels(components.unet, cond.class_labels):
            image = pipe(
                **kwargs, height=height, width=width, num_inference_steps=cfg.num_inference_steps,
                guidance_scale=cfg.guidance_scale, generator=generator, output_type="pil",
            ).images[0]
        tiles.append(image)
    return tiles


def save_grid(grid: Image.Image, cells: list[GridCell], folder: Path, step: int, cfg: ValidationConfig) -> Path:
    """``<folder>/step-NNNNNN.png`` and, beside it, the prompt and seed of every cell as JSON."""
    path = Path(folder) / f"step-{step:06d}.png"
    save_png(grid, path)
    described = [
        {"row": c.label, "fst": c.fst, "prompt": c.prompt, "seed": cfg.seed + k} for k, c in enumerate(cells)
    ]
    atomic_write_text(path.with_suffix(".json"), json.dumps(described, indent=1) + "\n")
    return path


def _fixed_generator(seed: int, index: int, stream: str) -> torch.Generator:
    # process=-1 keeps validation draws apart from every training step's.
    return torch.Generator().manual_seed(derived_seed(seed, index, stream, process=-1))


@torch.no_grad()
def validation_loss(
    components: Components,
    examples: list[TrainingExample],
    latents: LatentCache,
    condition: Callable[[Batch], Conditioning],
    prediction_type: str,
    batch_size: int,
    seed: int,
    device: torch.device | str,
) -> float:
    """Mean squared error of the prediction on ``examples`` with fixed randomness.

    Example ``k`` of ``n`` gets timestep ``floor((k + 1/2) T / n)`` (the schedule covered
    evenly), and its latent sample and noise from generators seeded by (seed, k).
    """
    scheduler = components.noise_scheduler
    total_steps = scheduler.config.num_train_timesteps
    n = len(examples)
    by_size: dict[tuple[int, int], list[int]] = {}
    for k, example in enumerate(examples):
        by_size.setdefault(example.size, []).append(k)  # a batch holds one size
    losses = []
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            ks = indices[start : start + batch_size]
            group = [examples[k] for k in ks]
            mean, std = latents.moments(group, device)  # (b, 4, H/8, W/8) each
            x0 = torch.cat([
                sample_latents(mean[i : i + 1], std[i : i + 1], _fixed_generator(seed, k, "latents"), components.vae.config)
                for i, k in enumerate(ks)
            ])  # (b, 4, H/8, W/8)
            noise = torch.stack([
                torch.randn(x0.shape[1:], generator=_fixed_generator(seed, k, "noise")) for k in ks
            ]).to(device)  # (b, 4, H/8, W/8)
            timesteps = torch.tensor([int((k + 0.5) * total_steps / n) for k in ks], device=device)
            noisy = scheduler.add_noise(x0, noise, timesteps)
            time_ids = torch.stack([e.time_ids for e in group])  # (b, 6)
            cond = condition(Batch([e.caption for e in group], [e.record for e in group], time_ids))
            prediction = denoise(components.unet, noisy, timesteps, cond)
            target = target_for(prediction_type, x0, noise, scheduler.alphas_cumprod, timesteps)
            losses.append(per_sample_mse(prediction, target))
    return float(torch.cat(losses).mean())
