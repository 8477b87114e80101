"""Records, buckets, balanced batches and per-step randomness."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairsynth.data.records import Record, write_manifest
from fairsynth.data.sampling import FAIRSKIN_BATCH_MIX, BalanceConfig, sampling_weights
from fairsynth.training.data import (
    BatchSampler,
    EmptyDatasetError,
    center_crop_box,
    drop_captions,
    load_pixels,
    load_split,
    make_examples,
    nearest_bucket,
)
from fairsynth.training.randomness import StepRandom, derived_seed


def test_empty_split_names_the_splits_there_are(tmp_path):
    manifest = write_manifest([Record("a", "a.png", "x", None, {"split": "val"})], tmp_path / "metadata.jsonl")
    with pytest.raises(EmptyDatasetError, match="no records in split 'train' \\(val 1\\)"):
        load_split(manifest, "train")


def test_fairskin_mix_is_what_batches_contain():
    # 80 % light skin, 15 % IV, 5 % dark: the FairSkin mix asks for 40 / 20 / 40 %
    fst = [1] * 80 + [4] * 15 + [6] * 5
    records = [Record(str(i), f"{i}.png", "x", None, {"fst": f}) for i, f in enumerate(fst)]
    weights = sampling_weights(records, BalanceConfig("mix", "fst", dict(FAIRSKIN_BATCH_MIX)))
    sampler = BatchSampler(weights, [(32, 32)] * len(records))
    drawn = Counter()
    for step in range(400):
        for i in sampler.draw(StepRandom(0, step).generator("batch"), 8):
            drawn[{1: "I-III", 4: "IV", 6: "V-VI"}[fst[i]]] += 1
    total = sum(drawn.values())
    for group, share in FAIRSKIN_BATCH_MIX.items():
        assert abs(drawn[group] / total - share) < 0.03, (group, drawn[group] / total)


def test_batches_are_a_function_of_the_step_only():
    sampler = BatchSampler(np.full(10, 0.1), [(32, 32)] * 10)
    first = [sampler.draw(StepRandom(7, s).generator("batch"), 4) for s in range(5)]
    again = [sampler.draw(StepRandom(7, s).generator("batch"), 4) for s in range(5)]
    assert first == again
    assert first != [sampler.draw(StepRandom(8, s).generator("batch"), 4) for s in range(5)]


def test_a_batch_holds_one_bucket_and_every_example_keeps_its_weight():
    sizes = [(32, 32)] * 6 + [(48, 32)] * 2
    weights = np.array([1.0] * 6 + [3.0] * 2)
    sampler = BatchSampler(weights / weights.sum(), sizes)
    counts = Counter()
    for step in range(600):
        batch = sampler.draw(StepRandom(0, step).generator("batch"), 4)
        assert len({sizes[i] for i in batch}) == 1
        counts.update(batch)
    share_wide = sum(counts[i] for i in (6, 7)) / sum(counts.values())
    assert abs(share_wide - 0.5) < 0.05  # 6 of weight 1 vs 2 of weight 3


def test_nearest_bucket_by_aspect_ratio():
    buckets = [(64, 64), (64, 48), (48, 64)]
    assert nearest_bucket((1000, 760), buckets) == (64, 48)
    assert nearest_bucket((500, 700), buckets) == (48, 64)
    assert nearest_bucket((300, 310), buckets) == (64, 64)


def test_examples_carry_sdxl_time_ids(tmp_path):
    Image.new("RGB", (40, 32), (10, 20, 30)).save(tmp_path / "a.png")
    (example,) = make_examples([Record("a", "a.png")], tmp_path, (32, 32))
    assert example.original == (40, 32)
    # resize 40x32 -> 40x32 (already covers 32x32), centre crop: left 4
    assert example.time_ids.tolist() == [32, 40, 0, 4, 32, 32]
    assert center_crop_box((40, 32), (32, 32)) == (0, 4)
    pixels = load_pixels(tmp_path / "a.png", (32, 32))
    assert pixels.shape == (3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1


def test_manifest_paths_must_stay_inside_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="leaves the dataset root"):
        make_examples([Record("a", "../outside.png")], tmp_path, (32, 32))


def test_caption_dropout_is_seeded_and_has_its_rate():
    captions = ["c"] * 2000
    dropped = drop_captions(captions, 0.25, StepRandom(0, 3).generator("dropout"))
    assert dropped == drop_captions(captions, 0.25, StepRandom(0, 3).generator("dropout"))
    assert abs(dropped.count("") / len(captions) - 0.25) < 0.03
    assert drop_captions(captions, 0.0, StepRandom(0, 3).generator("dropout")) == captions


def test_streams_and_processes_are_independent():
    seeds = {derived_seed(0, 5, s, micro, process) for s in ("noise", "batch") for micro in (0, 1) for process in (0, 1)}
    assert len(seeds) == 8
    a = torch.randn(3, generator=StepRandom(0, 5).generator("noise"))
    b = torch.randn(3, generator=StepRandom(0, 5).generator("noise"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown random stream"):
        StepRandom(0, 0).generator("nois")


def test_image_path_is_checked_to_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        make_examples([Record("a", "missing.png")], Path(tmp_path), (32, 32))
