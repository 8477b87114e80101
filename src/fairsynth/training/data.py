"""What trains: the prepared records of one split, their images, buckets and balanced batches.

A prepared dataset (``fairsynth prepare``) is an imagefolder: ``metadata.jsonl`` with one
row per PNG (``file_name``, ``label``, ``caption``, ``split``, ``fst``, ...). Training reads
the rows of one split, loads each image at the size it trains at (``train.resolution``, or
the resolution bucket nearest its aspect ratio) and draws every batch with
:class:`BatchSampler` from the generator of its step.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fairsynth.data.images import image_size
from fairsynth.data.preprocess import load_rgb, resize_crop
from fairsynth.data.records import Record, read_manifest
from fairsynth.io import resolve_inside


class EmptyDatasetError(ValueError):
    """No records are left to train on."""


@dataclass
class TrainingExample:
    """One training image: its record, its file and the size it trains at."""

    record: Record
    path: Path
    size: tuple[int, int]  # (width, height) it trains at
    original: tuple[int, int]  # (width, height) of the file

    @property
    def caption(self) -> str:
        return self.record.caption or ""

    @property
    def time_ids(self) -> torch.Tensor:
        """SDXL micro-conditioning ``(6,)`` (Podell et al. 2023, Sec. 2.2): original (height,
        width), crop (top, left), target (height, width)."""
        top, left = center_crop_box(self.original, self.size)
        values = [self.original[1], self.original[0], top, left, self.size[1], self.size[0]]
        return torch.tensor(values, dtype=torch.float32)


def load_split(manifest: str | Path, split: str) -> list[Record]:
    """The records of ``split``; an empty result is an error naming the splits there are."""
    if not Path(manifest).is_file():
        raise FileNotFoundError(f"prepared manifest {manifest} does not exist; run `fairsynth prepare` first or set train.data")
    records = read_manifest(manifest)
    selected = [r for r in records if r.split == split]
    if not selected:
        present = Counter(str(r.split) for r in records)
        listing = ", ".join(f"{name} {count}" for name, count in sorted(present.items())) or "no rows at all"
        raise EmptyDatasetError(f"{manifest}: no records in split {split!r} ({listing})")
    return selected


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to ``size``'s (in log ratio; ties: the first)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def make_examples(
    records: list[Record],
    root: Path,
    size: tuple[int, int],
    buckets: list[tuple[int, int]] | None = None,
    *,
    trusted: bool = False,
) -> list[TrainingExample]:
    """One :class:`TrainingExample` per record; a missing image file is an error naming it.

    Dataset paths are untrusted and must stay inside ``root``; ``trusted=True`` is for the
    records a method made itself (DreamBooth's class images), whose paths are used as given.
    """
    examples = []
    for record in records:
        path = Path(record.image) if trusted else resolve_inside(root, record.image)
        if not path.is_file():
            raise FileNotFoundError(f"record {record.id}: image {path} does not exist")
        original = image_size(path, oriented=True)  # the header only, as load_pixels will see it
        target = nearest_bucket(original, buckets) if buckets else size
        examples.append(TrainingExample(record, path, target, original))
    return examples


def center_crop_box(original: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centre crop :func:`~fairsynth.data.preprocess.resize_crop` cuts,
    in the resized image's pixels."""
    width, height = size
    scale = max(width / original[0], height / original[1])
    scaled = (max(width, round(original[0] * scale)), max(height, round(original[1] * scale)))
    return (scaled[1] - height) // 2, (scaled[0] - width) // 2


def load_pixels(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """An image resized and centre-cropped to ``size`` = (width, height), ``(3, H, W)`` in [-1, 1]."""
    image = resize_crop(load_rgb(path), size, "center")
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


class BatchSampler:
    """Draws the examples of a batch, in proportion to per-example weights.

    Weights come from :func:`fairsynth.data.sampling.sampling_weights` (FairSkin's skin-type
    mix, inverse frequency, or uniform). With resolution buckets a batch holds one bucket: the
    bucket is drawn first with probability equal to its share of the weight, then the examples
    inside it, so every example is still drawn with probability proportional to its weight.
    Draws are with replacement, as ``WeightedRandomSampler`` does.
    """

    def __init__(self, weights: np.ndarray, sizes: list[tuple[int, int]]) -> None:
        if len(weights) != len(sizes) or not len(weights):
            raise ValueError("BatchSampler needs one weight per example and at least one example")
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.buckets = sorted(set(sizes))
        self.members = [torch.tensor([i for i, s in enumerate(sizes) if s == b]) for b in self.buckets]
        self.member_weights = [weights[m] for m in self.members]
        self.bucket_weights = torch.stack([w.sum() for w in self.member_weights])
        if float(self.bucket_weights.sum()) <= 0:
            raise EmptyDatasetError("every training example has sampling weight 0 (see train.balance)")

    def draw(self, generator: torch.Generator, batch_size: int) -> list[int]:
        """``batch_size`` example indices, from ``generator`` only."""
        bucket = int(torch.multinomial(self.bucket_weights, 1, generator=generator))
        picks = torch.multinomial(self.member_weights[bucket], batch_size, replacement=True, generator=generator)
        return self.members[bucket][picks].tolist()


def drop_captions(captions: list[str], probability: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty one with ``probability`` (classifier-free guidance
    training, Ho & Salimans 2022); one draw per caption, always made, so that the stream's
    use does not depend on ``probability``."""
    draws = torch.rand(len(captions), generator=generator)
    return ["" if float(u) < probability else caption for u, caption in zip(draws, captions)]
