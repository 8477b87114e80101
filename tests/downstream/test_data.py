"""The classifier's data: loading, the refusals before training, mixing and batches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from fairsynth.config import ConfigError
from fairsynth.downstream.config import DownstreamConfig, MixConfig
from fairsynth.downstream.data import (
    DownstreamDataError,
    MixedBatchSampler,
    check_sets,
    curriculum_prefix,
    load_sets,
    mix_training_set,
    synthetic_quota,
)


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def _rewrite(manifest: Path, rows: list[dict]) -> Path:
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _copy_set(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source.parent, target)
    return target / "metadata.jsonl"


def test_load_sets_reads_splits_groups_and_classes(derm_study):
    sets = load_sets(derm_study["real"], derm_study["synthetic"])
    assert (len(sets.train), len(sets.val), len(sets.test), len(sets.synthetic)) == (92, 48, 48, 32)
    assert sets.classes == ("basal cell carcinoma", "melanoma", "nevocytic nevus", "psoriasis")
    assert Counter(s.group for s in sets.train) == {"I": 24, "II": 24, "III": 20, "IV": 16, "V": 4, "VI": 4}
    assert {s.group for s in sets.synthetic} == {"V", "VI"} and all(s.synthetic for s in sets.synthetic)
    assert check_sets(sets, derm_study["real"], derm_study["synthetic"]) == [
        f"group {g} has fewer than 10 test images: its AUROC will be wide or undefined" for g in ("I", "II", "III", "IV", "V", "VI")
    ]


def test_synthetic_label_unknown_to_real_data_is_refused(derm_study, tmp_path):
    synthetic = _copy_set(derm_study["synthetic"], tmp_path / "s")
    rows = _rows(synthetic)
    rows[3]["label"] = "dermatofibroma"
    _rewrite(synthetic, rows)
    sets = load_sets(derm_study["real"], synthetic)
    with pytest.raises(DownstreamDataError, match=r"synthetic label\(s\) 'dermatofibroma' do not occur"):
        check_sets(sets, derm_study["real"], synthetic)


def test_group_missing_from_test_split_is_refused(derm_study, tmp_path):
    real = _copy_set(derm_study["real"], tmp_path / "r")
    rows = [r for r in _rows(real) if not (r["split"] == "test" and r["fst"] == 6)]
    _rewrite(real, rows)
    sets = load_sets(real, derm_study["synthetic"])
    with pytest.raises(DownstreamDataError, match=r"group\(s\) VI of the real training data have no image in the test split"):
        check_sets(sets, real, derm_study["synthetic"])


def test_synthetic_images_of_another_size_are_refused(derm_study, tmp_path):
    synthetic = _copy_set(derm_study["synthetic"], tmp_path / "s")
    odd = synthetic.parent / _rows(synthetic)[5]["file_name"]
    Image.open(odd).resize((64, 64)).save(odd)
    sets = load_sets(derm_study["real"], synthetic)
    with pytest.raises(DownstreamDataError, match=rf"{odd.name} is 64x64 px but the real images are 32x32"):
        check_sets(sets, derm_study["real"], synthetic)


@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd"])
def test_manifest_path_outside_its_root_is_refused(derm_study, tmp_path, path):
    synthetic = _copy_set(derm_study["synthetic"], tmp_path / "s")
    rows = _rows(synthetic)
    rows[0]["file_name"] = path
    _rewrite(synthetic, rows)
    with pytest.raises(DownstreamDataError, match=rf"{synthetic}: row 1 \(id 's0000'\)"):
        load_sets(derm_study["real"], synthetic)


def test_real_rows_without_a_split_are_refused(derm_study, tmp_path):
    real = _copy_set(derm_study["real"], tmp_path / "r")
    rows = _rows(real)
    rows[7]["split"] = None
    _rewrite(real, rows)
    with pytest.raises(DownstreamDataError, match=r"row 8 \(id 'r0007'\) has split None"):
        load_sets(real, None)


def test_quota_gives_each_group_its_synthetic_share():
    # S / (R + S) = share  ->  S = R * share / (1 - share), capped at what exists
    quota = synthetic_quota({"I": 100, "V": 10, "VI": 5}, {"I": 0.2, "V": 0.7, "VI": 0.8}, {"I": 100, "V": 100, "VI": 10})
    assert quota == {"I": 25, "V": 23, "VI": 10}
    assert synthetic_quota({"I": 10}, None, {"I": 7, "V": 3}) == {"I": 7, "V": 3}


def test_mix_reports_the_share_per_group_and_is_seeded(derm_study):
    sets = load_sets(derm_study["real"], derm_study["synthetic"])
    chosen, account = mix_training_set(sets.train, sets.synthetic, MixConfig("fairskin").shares(), seed=0)
    # 4 real images of V at share 0.7 -> round(4 * 0.7 / 0.3) = 9 synthetic; VI at 0.8 -> 16 (all 16 exist)
    assert account["V"] == {"real": 4, "synthetic_available": 16, "synthetic_used": 9, "share": round(9 / 13, 4)}
    assert account["VI"]["synthetic_used"] == 16 and account["I"]["synthetic_used"] == 0
    again, _ = mix_training_set(sets.train, sets.synthetic, MixConfig("fairskin").shares(), seed=0)
    other, _ = mix_training_set(sets.train, sets.synthetic, MixConfig("fairskin").shares(), seed=1)
    assert [s.id for s in again] == [s.id for s in chosen] != [s.id for s in other]


def test_curriculum_takes_a_growing_prefix_of_each_group(derm_study):
    sets = load_sets(derm_study["real"], derm_study["synthetic"])
    used = [curriculum_prefix(sets.synthetic, epoch, curriculum_epochs=4) for epoch in range(5)]
    assert [len(u) for u in used] == [8, 16, 24, 32, 32]
    for earlier, later in zip(used, used[1:]):
        assert {s.id for s in earlier} <= {s.id for s in later}
    assert Counter(s.group for s in used[0]) == {"V": 4, "VI": 4}
    assert len(curriculum_prefix(sets.synthetic, 0, curriculum_epochs=0)) == 32


def test_batches_keep_the_least_real_share_and_balance_classes():
    labels = ["a"] * 90 + ["b"] * 10 + ["a"] * 50 + ["b"] * 50  # 100 real, then 100 synthetic
    sampler = MixedBatchSampler(labels, n_real=100, batch_size=10, class_balanced=True, min_real_share=0.8, seed=0)
    batches = list(sampler)
    assert len(batches) == 20
    assert all(sum(i < 100 for i in batch) == 8 for batch in batches)
    drawn = Counter(labels[i] for batch in batches for i in batch if i < 100)
    assert 0.35 < drawn["b"] / sum(drawn.values()) < 0.65  # 10 % of the real images, half of the draws
    plain = MixedBatchSampler(labels, n_real=100, batch_size=10, class_balanced=False, min_real_share=0.0, seed=0)
    assert all(sum(i < 100 for i in batch) == 5 for batch in plain)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_config_refuses_bad_shares_and_arms():
    with pytest.raises(ConfigError, match=r"synthetic_share\[V\] must be in \[0, 1\)"):
        MixConfig({"V": 1.0})
    with pytest.raises(ConfigError, match="unknown plan 'fairer'"):
        MixConfig("fairer")
    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['augmented'\]"):
        DownstreamConfig(arms=["real", "augmented"])
    with pytest.raises(ConfigError, match="distinct seeds"):
        DownstreamConfig(seeds=[0, 0])
