"""The derm-world judge: it learns the lesion classes quickly, round-trips through safetensors, reads ITA."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch

from fairsynth.config import ConfigError
from fairsynth.world.judge import (
    JUDGE_CLASSES,
    SHIPPED_JUDGE_CONFIGS,
    SHIPPED_JUDGES,
    JudgeConfig,
    derm_images,
    judge_classes,
    load_judge,
    save_judge,
    shipped_judge,
    skin_type_within_one,
    train_judge,
)


def test_a_small_judge_reads_the_lesion_class(small_judge):
    _, report = small_judge
    # the default config reaches ~0.999; this small one measured 1.0 (chance: 0.25)
    assert report["held_out_accuracy"] >= 0.85
    assert set(report["held_out_accuracy_by_class"]) == set(JUDGE_CLASSES)


def test_judge_round_trips_through_safetensors(small_judge, tmp_path):
    judge, _ = small_judge
    images, _, _ = derm_images(12, seed=5)
    again = load_judge(save_judge(judge, tmp_path / "judge.safetensors"))
    assert judge_classes(again, images) == judge_classes(judge, images)
    # other sizes are resized to the judge's 64 px
    assert len(judge_classes(judge, derm_images(4, seed=5, size=96)[0])) == 4


def test_skin_type_is_read_by_ita():
    images, _, fsts = derm_images(48, seed=3, hair_probability=0.0)
    assert sorted(set(fsts)) == [1, 2, 3, 4, 5, 6]
    assert skin_type_within_one(images, fsts) >= 0.95


def test_config_is_validated():
    with pytest.raises(ConfigError):
        JudgeConfig(n_train=2)
    with pytest.raises(ConfigError):
        JudgeConfig(size=16)


@pytest.mark.parametrize("seed", [2026, 31337])
@pytest.mark.parametrize("effect", sorted(SHIPPED_JUDGES))
def test_each_shipped_judge_reads_fresh_true_renders_in_every_cell(effect, seed):
    """The truth judge of each world reads >= 95 % of true renders in every class x skin-type cell.

    The renders come from seeds that did not train the judge (training seed 0, held-out seed
    1,000,003): 100 per cell, types V-VI included. Seed 2026 also turned down an earlier, smaller
    judge of the shifted world (lowest cell 0.93), so it took part in choosing; seed 31337 was
    read for the first time after the shipped judge was chosen.
    """
    judge, report = shipped_judge(effect)
    assert {"skin_type_effect": 0.0, **report["config"]} == dataclasses.asdict(SHIPPED_JUDGE_CONFIGS[effect])
    images, labels, fsts = derm_images(2400, seed=seed, skin_type_effect=effect)
    hits: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for seen, label, fst in zip(judge_classes(judge, images), labels, fsts):
        hits[(label, fst)].append(seen == label)
    accuracy = {cell: sum(h) / len(h) for cell, h in hits.items()}
    assert len(accuracy) == 24 and all(len(h) == 100 for h in hits.values())
    assert min(accuracy.values()) >= 0.95, sorted(accuracy.items(), key=lambda kv: kv[1])[:3]
