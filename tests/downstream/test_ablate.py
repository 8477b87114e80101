"""The minority-real ablation: which images go, the refusals, the runs and the headline sentence."""

from __future__ import annotations

import dataclasses
import errno
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fairsynth.config import ConfigError
from fairsynth.downstream import ablate as ablate_module
from fairsynth.downstream.ablate import (
    AblationError,
    ablate,
    check_every_class_keeps_an_image,
    crossing,
    group_matcher,
    remove_share,
    worth,
)
from fairsynth.downstream.config import AblateConfig, DownstreamConfig
from fairsynth.downstream.data import load_sets
from fairsynth.downstream.paired import RunDraws
from fairsynth.world.judge import JUDGE_CLASSES
from tests.downstream.conftest import write_set

TINY = dict(backbone="test_resnet", image_size=32, epochs=1, batch_size=16, learning_rate=3e-3, patience=2,
            bootstrap_resamples=30, high_risk=["melanoma", "basal cell carcinoma"], min_positives=1)


@pytest.fixture(scope="module")
def sets(derm_study):
    return load_sets(derm_study["real"], derm_study["synthetic"])


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A training split with 10 images per class on each of types V and VI, for shares to bite."""
    plan = [(label, fst, "train") for label in JUDGE_CLASSES for fst in (1, 5, 6) for _ in range(10)]
    plan += [(label, fst, split) for label in JUDGE_CLASSES for fst in (1, 5, 6) for split in ("val", "test")]
    return load_sets(write_set(tmp_path_factory.mktemp("wide"), plan, seed=3, prefix="w"), None)


def test_removal_is_stratified_by_class_and_type_seeded_and_nested(wide):
    is_member, key = group_matcher(wide, "V-VI", "fst")
    assert key == "auroc.V-VI"
    half, account = remove_share(wide.train, is_member, 0.5, seed=0)
    assert len(half) == 120 - 40  # 80 V-VI images, half of them gone
    assert all(v == {"real": 10, "kept": 5} for v in account.values()) and len(account) == 8
    kept = Counter((s.label, s.group) for s in half)
    assert all(kept[(label, "I")] == 10 for label in JUDGE_CLASSES)  # other groups untouched
    quarter, _ = remove_share(wide.train, is_member, 0.25, seed=0)
    assert {s.id for s in quarter} <= {s.id for s in half}  # nested across shares
    assert Counter((s.label, s.group) for s in quarter if s.group != "I") == {
        (label, t): 3 for label in JUDGE_CLASSES for t in ("V", "VI")}  # round(2.5) half up
    other, _ = remove_share(wide.train, is_member, 0.5, seed=1)
    assert {s.id for s in other} != {s.id for s in half}
    none, _ = remove_share(wide.train, is_member, 0.0, seed=0)
    assert not any(is_member(s) for s in none) and len(none) == 40
    type_six, key = group_matcher(wide, "VI", "fst")
    assert key == "auroc_type.VI" and len(remove_share(wide.train, type_six, 0.0, 0)[0]) == 80


def test_a_group_not_in_the_data_and_a_class_left_empty_are_clear_errors(wide):
    with pytest.raises(AblationError, match=r"'VII' is not a group of the data.*I, V, VI, and DDI groups I-II, V-VI"):
        group_matcher(wide, "VII", "fst")
    lonely = [s for s in wide.train if not (s.label == "psoriasis" and s.group == "I")]
    is_member, _ = group_matcher(wide, "V-VI", "fst")
    check_every_class_keeps_an_image(lonely, is_member, "V-VI", [1, 0.5, 0.1])  # fine while some stay
    with pytest.raises(AblationError, match=r"keeping 0% of the V-VI training images leaves class 'psoriasis' with no "
                                            r"training image \(all its 20 real training image\(s\) are V-VI\)"):
        check_every_class_keeps_an_image(lonely, is_member, "V-VI", [1, 0.5, 0])
    with pytest.raises(ConfigError, match="share 1.2 is outside"):
        AblateConfig(keep=[1.2, 0])
    with pytest.raises(ConfigError, match="share -0.1 is outside"):
        AblateConfig(keep=[-0.1])


def _runs(values: dict[tuple[float, str], list[float]], resamples: int = 200, noise: float = 0.002) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, per_seed in values.items():
        out[name] = {s: RunDraws({"auroc.V-VI": v}, {"auroc.V-VI": v + rng.normal(0, noise, resamples)})
                     for s, v in enumerate(per_seed)}
    return out


def test_the_headline_reads_where_real_only_reaches_mixed_with_none_kept():
    assert crossing([0, 0.5, 1], [0.6, 0.7, 0.8], 0.65) == pytest.approx(0.25)
    assert crossing([0, 0.5, 1], [0.6, 0.7, 0.8], 0.5) == 0.0 and crossing([0, 1], [0.6, 0.7], 0.9) == float("inf")
    runs = _runs({
        (0.0, "real"): [0.60, 0.61, 0.59], (0.5, "real"): [0.70, 0.71, 0.69], (1.0, "real"): [0.80, 0.80, 0.80],
        (0.0, "mixed"): [0.65, 0.66, 0.64], (0.5, "mixed"): [0.75] * 3, (1.0, "mixed"): [0.82] * 3,
    })
    found = worth(runs, "auroc.V-VI", [0, 1, 2], "V-VI", 40, "AUROC V-VI")
    assert found["share"] == pytest.approx(0.25) and found["images"] == pytest.approx(10)
    low, high = found["interval_share"]
    assert low < 0.25 < high and found["interval_images"] == [pytest.approx(low * 40), pytest.approx(high * 40)]
    assert found["sentence"].startswith("The synthetic set is worth about 10 real V-VI training images (25% of the 40;")
    assert "beyond noise" in found["sentence"]
    none = worth(_runs({(0.0, "real"): [0.60, 0.62, 0.58], (1.0, "real"): [0.8] * 3, (0.0, "mixed"): [0.61, 0.58, 0.60]}),
                 "auroc.V-VI", [0, 1, 2], "V-VI", 40, "AUROC V-VI")
    assert none["share"] == 0.0 and none["sentence"].startswith(
        "The synthetic set is worth no real V-VI training images that this study can detect") and "within noise" in none["sentence"]
    # read on the shares actually kept: asked 50 %, kept 40 % (whole images per stratum)
    kept = worth(runs, "auroc.V-VI", [0, 1, 2], "V-VI", 40, "AUROC V-VI", kept={0.0: 0.0, 0.5: 0.4, 1.0: 1.0})
    assert kept["share"] == pytest.approx(0.2) and kept["images"] == pytest.approx(8)
    assert kept["share_kept"] == {"0.0": 0.0, "0.5": 0.4, "1.0": 1.0}
    beyond = worth(_runs({(0.0, "real"): [0.60, 0.61, 0.59], (1.0, "real"): [0.70, 0.71, 0.69],
                          (0.0, "mixed"): [0.80, 0.81, 0.79]}), "auroc.V-VI", [0, 1, 2], "V-VI", 40, "AUROC V-VI")
    assert beyond["share"] is None and "worth more real V-VI training images than the study kept" in beyond["sentence"]
    assert beyond["interval_beyond_largest_share"] is True


def test_ablate_runs_every_share_arm_and_seed_with_the_oracle_and_writes_its_files(derm_study, tmp_path_factory, tmp_path,
                                                                                    monkeypatch):
    oracle_plan = [(label, fst, "train") for label in JUDGE_CLASSES for fst in (5, 6) for _ in range(4)]
    oracle = write_set(tmp_path_factory.mktemp("oracle"), oracle_plan, seed=8, prefix="o")
    balanced = [(label, fst, None) for label in JUDGE_CLASSES for fst in range(1, 7) for _ in range(2)]
    external = write_set(tmp_path_factory.mktemp("ext"), balanced, seed=7, prefix="e")
    config = DownstreamConfig(real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]), oracle=str(oracle),
                              test_sets={"balanced": str(external)}, seeds=[0, 1],
                              ablate=AblateConfig(keep=[1, 0.5, 0]), **TINY)
    messages = []
    result = ablate(config, tmp_path / "ds", log=messages.append)
    assert result["arms"] == ["real", "mixed", "oracle"] and result["headline_test_set"] == "balanced"
    assert result["group_real_training_images"] == 8 and result["held_fixed"]["synthetic_images"] == 32
    for share in ("1", "0.5", "0"):
        for arm in ("real", "mixed", "oracle"):
            for seed in (0, 1):
                assert (tmp_path / "ds" / "ablate" / f"keep-{share}" / arm / f"seed-{seed}" / "metrics.json").is_file()
    points = {(p["keep"], p["arm"]): p for p in result["points"]}
    assert points[(0.0, "real")]["group_real_kept"] == 0 and points[(1.0, "real")]["group_real_kept"] == 8
    assert points[(0.0, "mixed")]["real_images"] == 84 and points[(0.0, "mixed")]["mixed_in_images"] == 32
    # 8 strata of one image: each keeps its image at 50 % (half up), so the share actually kept is 100 %
    assert {k["keep"]: (k["group_real_kept"], k["share_kept"]) for k in result["kept"]} == {
        1.0: (8, 1.0), 0.5: (8, 1.0), 0.0: (0, 0.0)}
    assert "| 50% (8 of 8) | real only |" in (tmp_path / "ds" / "ablate.md").read_text()
    number = result["test_sets"]["balanced"]["numbers"]["auroc.V-VI"]
    assert number["label"] == "AUROC V-VI" and len(number["values"]) == 9
    mixed_none = next(v for v in number["values"] if v["keep"] == 0 and v["arm"] == "mixed")
    assert set(mixed_none["per_seed"]) == {"0", "1"} and mixed_none["delta_vs_real_only"]["n"] == 2
    assert "test_images" in mixed_none["delta_vs_real_only"]
    assert result["worth"]["sentence"].startswith("The synthetic set is worth")
    text = (tmp_path / "ds" / "ablate.md").read_text()
    assert text.startswith("# How many real V-VI images is the synthetic set worth?") and result["worth"]["sentence"] in text
    assert "Compared on: 2 seeds (0, 1); test set: balanced, 48 images (I-II 16, III-IV 16, V-VI 16)" in text
    assert "Compared on: 2 seeds (0, 1); test set: the test split" in text
    assert json.loads((tmp_path / "ds" / "ablate.json").read_text())["keep"] == [1.0, 0.5, 0.0]
    assert (tmp_path / "ds" / "ablate.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun reuses every run, drops the writes a kill interrupted, and a disk that fills while the
    # table is written leaves no ablate.json saying the ablation is complete
    left = [tmp_path / "ds" / ".ablate.json.k2j4.tmp", tmp_path / "ds" / "ablate" / "keep-0" / "real" / "seed-0" / ".x.tmp"]
    for path in left:
        path.write_text("half")
    written = ablate_module.atomic_write_text

    def full(path, text):
        if Path(path).name == "ablate.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written(path, text)

    (tmp_path / "ds" / "ablate.json").unlink()
    monkeypatch.setattr(ablate_module, "atomic_write_text", full)
    reused = []
    with pytest.raises(OSError):
        ablate(config, tmp_path / "ds", log=reused.append)
    monkeypatch.undo()
    assert not any(path.exists() for path in left) and not (tmp_path / "ds" / "ablate.json").exists()
    assert sum("reusing" in m for m in reused) == 18 and not any("training (" in m for m in reused)
    # the whole split's classes must keep an image: here every class has other skin types
    lonely = load_sets(derm_study["real"], derm_study["synthetic"])
    lonely = dataclasses.replace(lonely, train=[s for s in lonely.train if not (s.label == "psoriasis" and s.group not in ("V", "VI"))])
    with pytest.raises(AblationError, match="leaves class 'psoriasis' with no training image"):
        ablate(dataclasses.replace(config, oracle="", test_sets={}), tmp_path / "other", sets=lonely)
    assert not (tmp_path / "other").exists()  # refused before anything was written
