"""The classifier's data: real and synthetic manifests, the checks before training, and mixing.

Real images come from ``prepare``'s manifest, whose ``split`` column decides train / val /
test; synthetic images (``generate``'s ``metadata.jsonl``) only ever join the *training* set.
Everything that would make a comparison meaningless is an error before any training step
(:func:`check_sets`): a synthetic label the real data lacks, a training group missing from the
test split, synthetic images of another size than the real ones, a path outside its root.

Mixing (:func:`mix_training_set`) follows the FairSkin plan: the share of synthetic images
among each group's training images is set per group (e.g. FST V 70 %), a curriculum can raise
it over epochs, and :class:`MixedBatchSampler` can keep a least share of real images in every
batch. Augmentation touches real images only; synthetic ones are used as generated.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from fairsynth.data.fst import to_roman
from fairsynth.data.images import image_size, read_image
from fairsynth.data.records import Record, read_manifest
from fairsynth.io import resolve_inside, sha256_file

UNKNOWN_GROUP = "unknown"
SPLITS = ("train", "val", "test")


class DownstreamDataError(ValueError):
    """Data that cannot give a fair comparison; the message names the file, row or group."""


@dataclass(frozen=True)
class Sample:
    """One image the classifier sees."""

    path: Path
    label: str
    group: str
    synthetic: bool
    id: str


@dataclass
class Sets:
    """Real train / val / test and synthetic training samples, and the class order."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    synthetic: list[Sample]
    classes: tuple[str, ...]
    external: dict[str, list[Sample]] = field(default_factory=dict)  # named external test sets
    oracle: list[Sample] = field(default_factory=list)  # true world images of the synthetic set's cells


def group_value(record: Record, group_by: str) -> str:
    """The sensitive group of a record: Roman Fitzpatrick type for ``fst``, else the column's value."""
    value = record.fst if group_by == "fst" else record.attributes.get(group_by)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN_GROUP
    return to_roman(int(value)) if group_by == "fst" else str(value)


def _samples(manifest: Path, records: list[Record], group_by: str, synthetic: bool) -> list[Sample]:
    root = manifest.parent
    samples = []
    for number, record in enumerate(records, start=1):
        if record.label is None:
            raise DownstreamDataError(f"{manifest}: row {number} (id {record.id!r}) has no label")
        try:
            path = resolve_inside(root, record.image)
        except ValueError as err:
            raise DownstreamDataError(f"{manifest}: row {number} (id {record.id!r}): {err}") from None
        if not path.is_file():
            raise DownstreamDataError(f"{manifest}: row {number} (id {record.id!r}): image {path} does not exist")
        samples.append(Sample(path, record.label, group_value(record, group_by), synthetic, record.id))
    return samples


def load_sets(
    real: str | Path, synthetic: str | Path | None, group_by: str = "fst",
    test_sets: dict[str, str] | None = None, oracle: str | Path | None = None,
) -> Sets:
    """Read the manifests into samples; raises :class:`DownstreamDataError` on unusable input.

    ``test_sets`` names external test manifests (every row tested, see :func:`load_test_set`);
    ``oracle`` is the oracle arm's manifest of true world images.
    """
    real = Path(real)
    records = read_manifest(real)
    by_split: dict[str, list[Record]] = defaultdict(list)
    for number, record in enumerate(records, start=1):
        split = record.split
        if split not in SPLITS:
            raise DownstreamDataError(
                f"{real}: row {number} (id {record.id!r}) has split {split!r}; the classifier needs train/val/test "
                "(run `fairsynth prepare`, which writes them)"
            )
        by_split[split].append(record)
    for split in SPLITS:
        if not by_split[split]:
            raise DownstreamDataError(f"{real}: the {split} split is empty")
    train, val, test = (_samples(real, by_split[split], group_by, False) for split in SPLITS)
    fake: list[Sample] = []
    if synthetic:
        synthetic = Path(synthetic)
        fake = _samples(synthetic, read_manifest(synthetic), group_by, True)
        if not fake:
            raise DownstreamDataError(f"{synthetic}: the synthetic manifest has no images")
    classes = tuple(sorted({s.label for s in train}))
    external = {name: load_test_set(name, path, group_by, classes) for name, path in (test_sets or {}).items()}
    if external:
        training = {sha256_file(s.path) for s in (*train, *val)}  # hashed once for every test set
        for name, samples in external.items():
            check_disjoint(training, samples, f"downstream.test_sets.{name} ({test_sets[name]})")
    true_images: list[Sample] = []
    if oracle:
        oracle = Path(oracle)
        if not oracle.is_file():
            raise DownstreamDataError(f"downstream.oracle: {oracle} does not exist")
        # They take the synthetic images' place, and are treated alike (not augmented), so that the
        # oracle arm differs from the mixed arm in what the images show and nothing else.
        true_images = _samples(oracle, read_manifest(oracle), group_by, True)
    return Sets(train, val, test, fake, classes, external, true_images)


def load_test_set(name: str, manifest: str | Path, group_by: str, classes: Sequence[str]) -> list[Sample]:
    """Every row of an external test manifest as test samples (its ``split`` column is ignored).

    Raises :class:`DownstreamDataError` naming the file and the column: a class that the real
    training split lacks (``label``), or no row with the group column (``group_by``).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DownstreamDataError(f"downstream.test_sets.{name}: {manifest} does not exist")
    records = read_manifest(manifest)
    samples = _samples(manifest, records, group_by, False)
    if not samples:
        raise DownstreamDataError(f"downstream.test_sets.{name}: {manifest} has no rows")
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DownstreamDataError(
            f"downstream.test_sets.{name}: {manifest}, column 'label': class(es) {', '.join(map(repr, unknown))} do "
            f"not occur in the real training split; known: {', '.join(classes)}"
        )
    if all(s.group == UNKNOWN_GROUP for s in samples):
        raise DownstreamDataError(
            f"downstream.test_sets.{name}: {manifest} has no group column {group_by!r} (no row has a value): "
            "its per-group AUROC could not be measured"
        )
    return samples


def check_disjoint(training: set[str], tested: Sequence[Sample], what: str) -> None:
    """Refuse a test set that holds training images (``training``: their files' SHA-256), with the count."""
    shared = [s for s in tested if sha256_file(s.path) in training]
    if shared:
        raise DownstreamDataError(
            f"{what}: {len(shared)} of its {len(tested)} images are training images (same SHA-256, e.g. "
            f"{shared[0].path}); a test set must be new images"
        )


def _image_size(path: Path) -> tuple[int, int]:
    return image_size(path)


def check_sets(sets: Sets, real: str | Path, synthetic: str | Path | None) -> list[str]:
    """Refuse data that cannot give a fair comparison; returns warnings that do not stop training.

    Errors: a synthetic or evaluation label that the real training split lacks; a group of the
    training data (real or synthetic) with no test image; real and synthetic images of different
    sizes (resizing one set and not the other changes what the classifier can tell apart).
    """
    known = set(sets.classes)
    for name, samples, source in (("val", sets.val, real), ("test", sets.test, real), ("synthetic", sets.synthetic, synthetic)):
        unknown = sorted({s.label for s in samples} - known)
        if unknown:
            raise DownstreamDataError(
                f"{source}: {name} label(s) {', '.join(map(repr, unknown))} do not occur in the real training split; "
                f"known: {', '.join(sets.classes)}"
            )
    test_groups = {s.group for s in sets.test}
    for name, samples in (("real training", sets.train), ("synthetic", sets.synthetic)):
        missing = sorted({s.group for s in samples} - test_groups - {UNKNOWN_GROUP})
        if missing:
            raise DownstreamDataError(
                f"group(s) {', '.join(missing)} of the {name} data have no image in the test split of {real}: "
                "their accuracy and AUROC could not be measured; re-split (prepare.split) so every group is tested"
            )
    if sets.synthetic:
        real_sizes = Counter(_image_size(s.path) for s in sets.train[:200])
        fake_sizes = Counter(_image_size(s.path) for s in sets.synthetic)
        if len(real_sizes) == 1 and len(fake_sizes) >= 1 and set(fake_sizes) != set(real_sizes):
            (size,) = real_sizes
            odd = next(s for s in sets.synthetic if _image_size(s.path) != size)
            raise DownstreamDataError(
                f"synthetic image {odd.path} is {_image_size(odd.path)[0]}x{_image_size(odd.path)[1]} px but the real "
                f"images are {size[0]}x{size[1]}: generate at the prepared resolution (generate.resolution) so both "
                "sets reach the classifier alike"
            )
    warnings = []
    for group in sorted({s.group for s in sets.test}):
        if sum(s.group == group for s in sets.test) < 10:
            warnings.append(f"group {group} has fewer than 10 test images: its AUROC will be wide or undefined")
    return warnings


# --------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------


def synthetic_quota(real_counts: dict[str, int], shares: dict[str, float] | None, available: dict[str, int]) -> dict[str, int]:
    """Synthetic images per group so that they make up ``share`` of the group's training images.

    A share s of a group with R real images asks for S = R·s / (1 − s) synthetic ones (so that
    S / (R + S) = s), capped at what the synthetic set holds. ``shares=None`` takes every image.
    """
    quota = {}
    for group, have in available.items():
        if shares is None:
            quota[group] = have
        else:
            share = shares.get(group, 0.0)
            quota[group] = min(have, round(real_counts.get(group, 0) * share / (1.0 - share)))
    return quota


def mix_training_set(
    real: Sequence[Sample],
    synthetic: Sequence[Sample],
    shares: dict[str, float] | None,
    seed: int,
) -> tuple[list[Sample], dict[str, dict[str, int]]]:
    """The synthetic images of the mixed arm in a seeded order, and a per-group account.

    Returns the chosen synthetic samples (each group's in a fixed random order, so that a
    curriculum can take a growing prefix of each) and ``{group: {real, synthetic_available,
    synthetic_used, share}}``.
    """
    rng = np.random.default_rng(seed)
    real_counts = Counter(s.group for s in real)
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in synthetic:
        by_group[sample.group].append(sample)
    quota = synthetic_quota(real_counts, shares, {g: len(v) for g, v in by_group.items()})
    chosen: list[Sample] = []
    account = {}
    for group in sorted(set(real_counts) | set(by_group)):
        pool = by_group.get(group, [])
        order = rng.permutation(len(pool))
        picked = [pool[i] for i in order[: quota.get(group, 0)]]
        chosen.extend(picked)
        total = real_counts.get(group, 0) + len(picked)
        account[group] = {
            "real": real_counts.get(group, 0),
            "synthetic_available": len(pool),
            "synthetic_used": len(picked),
            "share": round(len(picked) / total, 4) if total else 0.0,
        }
    return chosen, account


def curriculum_prefix(synthetic: Sequence[Sample], epoch: int, curriculum_epochs: int) -> list[Sample]:
    """The synthetic images used at ``epoch`` (0-based): a growing prefix of each group's list."""
    if curriculum_epochs <= 0:
        return list(synthetic)
    fraction = min(1.0, (epoch + 1) / curriculum_epochs)
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in synthetic:
        by_group[sample.group].append(sample)
    return [s for group in sorted(by_group) for s in by_group[group][: math.ceil(fraction * len(by_group[group]))]]


class MixedBatchSampler(Sampler[list[int]]):
    """Batches over a real + synthetic training list, class-balanced and with a least real share.

    Indices ``< n_real`` are real. Each batch draws ``max(ceil(min_real_share·B), B·n_real/n)``
    real images and the rest synthetic, each side with replacement and, when ``class_balanced``,
    with weights inverse to the class's frequency *on that side* (the WeightedRandomSampler
    recipe), so that rare classes are seen as often as common ones among real and among
    synthetic images alike. An epoch has ``ceil(n / B)`` batches.
    """

    def __init__(
        self, labels: Sequence[str], n_real: int, batch_size: int, *, class_balanced: bool,
        min_real_share: float, seed: int,
    ) -> None:
        self.labels, self.n_real, self.batch_size = list(labels), n_real, batch_size
        self.min_real_share, self.seed, self.epoch = min_real_share, seed, 0
        n = len(self.labels)
        self.real_weights = self._weights(self.labels[:n_real], class_balanced)
        self.fake_weights = self._weights(self.labels[n_real:], class_balanced)
        natural = batch_size * n_real / n if n else 0.0
        wanted = max(math.ceil(min_real_share * batch_size), round(natural))
        self.real_per_batch = batch_size if n == n_real else min(batch_size, wanted)
        if n_real == 0:
            self.real_per_batch = 0

    @staticmethod
    def _weights(labels: Sequence[str], class_balanced: bool) -> torch.Tensor:
        counts = Counter(labels)
        return torch.tensor([1.0 / counts[label] if class_balanced else 1.0 for label in labels], dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n_fake_batch = self.batch_size - self.real_per_batch
        for _ in range(len(self)):
            batch: list[int] = []
            if self.real_per_batch:
                batch += torch.multinomial(self.real_weights, self.real_per_batch, True, generator=generator).tolist()
            if n_fake_batch and len(self.fake_weights):
                drawn = torch.multinomial(self.fake_weights, n_fake_batch, True, generator=generator)
                batch += (drawn + self.n_real).tolist()
            yield batch


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def augmentation() -> v2.Transform:
    """Flip, rotation and colour jitter of real training images (a lesion has no up or left)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(20),
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
    ])


class ImageSet(Dataset):
    """Samples as ``(image (3, S, S) in [-1, 1], class index, index)``; images are read once and kept."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], size: int, augment: bool = False) -> None:
        self.samples = list(samples)
        self.index = {name: i for i, name in enumerate(classes)}
        self.size = size
        self.augment = augmentation() if augment else None
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            image = read_image(self.samples[i].path).convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
            self._cache[i] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # (3, S, S) uint8
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        image = self.load(i)
        if self.augment is not None and not self.samples[i].synthetic:
            image = self.augment(image)
        return image.float().div(127.5).sub(1.0), self.index[self.samples[i].label], i
