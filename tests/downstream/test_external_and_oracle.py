"""External test sets by name, the oracle arm and the share of the oracle's effect."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fairsynth.downstream import fairness
from fairsynth.downstream.ceiling import shares_for
from fairsynth.downstream.compare import compare
from fairsynth.downstream.config import DownstreamConfig, MixConfig
from fairsynth.downstream.data import DownstreamDataError, load_sets
from fairsynth.downstream.train import read_predictions
from fairsynth.config import ConfigError
from fairsynth.world.judge import JUDGE_CLASSES
from tests.downstream.conftest import write_set

TINY = dict(backbone="test_resnet", image_size=32, epochs=2, batch_size=16, learning_rate=3e-3, patience=2,
            bootstrap_resamples=20, high_risk=["melanoma", "basal cell carcinoma"], min_positives=1)


@pytest.fixture(scope="module")
def external(derm_study, tmp_path_factory):
    """A balanced external test set: 2 images per class x type, from a seed the study never used."""
    plan = [(label, fst, None) for label in JUDGE_CLASSES for fst in range(1, 7) for _ in range(2)]
    return write_set(tmp_path_factory.mktemp("external"), plan, seed=7, prefix="e")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Stand-in true images of the synthetic set's cells (types V-VI, 4 per class x type)."""
    plan = [(label, fst, "train") for label in JUDGE_CLASSES for fst in (5, 6) for _ in range(4)]
    return write_set(tmp_path_factory.mktemp("oracle"), plan, seed=8, prefix="o")


def test_external_set_is_read_whole_and_kept_apart(derm_study, external):
    sets = load_sets(derm_study["real"], None, test_sets={"balanced": str(external)})
    assert len(sets.external["balanced"]) == 48  # every row, whatever (no) split it has
    assert {s.group for s in sets.external["balanced"]} == {"I", "II", "III", "IV", "V", "VI"}
    assert len(sets.test) == 48  # the in-distribution split is unchanged


def test_external_set_with_an_unknown_class_names_file_and_column(derm_study, external, tmp_path):
    rows = [json.loads(line) for line in external.read_text().splitlines()]
    rows[3]["label"] = "lichen planus"
    shutil.copytree(external.parent, tmp_path / "ext")
    (tmp_path / "ext" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DownstreamDataError, match=r"metadata.jsonl, column 'label'.*'lichen planus'"):
        load_sets(derm_study["real"], None, test_sets={"ddi": str(tmp_path / "ext" / "metadata.jsonl")})


def test_external_set_without_the_group_column_is_refused(derm_study, external, tmp_path):
    rows = [json.loads(line) for line in external.read_text().splitlines()]
    for row in rows:
        row.pop("fst"), row.pop("fst_group")
    shutil.copytree(external.parent, tmp_path / "ext")
    (tmp_path / "ext" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DownstreamDataError, match=r"metadata.jsonl has no group column 'fst'"):
        load_sets(derm_study["real"], None, test_sets={"ddi": str(tmp_path / "ext" / "metadata.jsonl")})


def test_external_set_holding_training_images_is_refused_with_the_count(derm_study, tmp_path):
    real_rows = [json.loads(line) for line in derm_study["real"].read_text().splitlines()]
    train_rows = [r for r in real_rows if r["split"] == "train"][:3]
    test_rows = [r for r in real_rows if r["split"] == "test"][:5]
    (tmp_path / "images").mkdir()
    for row in train_rows + test_rows:
        shutil.copy(derm_study["real"].parent / row["file_name"], tmp_path / row["file_name"])
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows + test_rows))
    with pytest.raises(DownstreamDataError, match=r"3 of its 8 images are training images \(same SHA-256"):
        load_sets(derm_study["real"], None, test_sets={"leaky": str(tmp_path / "metadata.jsonl")})


def test_test_set_names_must_be_safe_file_names():
    with pytest.raises(ConfigError, match="test_sets: name"):
        DownstreamConfig(test_sets={"../x": "m.jsonl"})
    with pytest.raises(ConfigError, match="test_sets: name"):
        DownstreamConfig(test_sets={"test": "m.jsonl"})


def test_oracle_arm_on_data_that_is_not_a_world_says_why(derm_study, tmp_path):
    config = DownstreamConfig(real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]),
                              arms=["real", "oracle"], seeds=[0], **TINY)
    with pytest.raises(ValueError, match="only a procedural world can draw them"):
        compare(config, tmp_path, log=lambda m: None)


def test_compare_reports_external_sets_and_the_oracle_share(derm_study, external, oracle, tmp_path):
    config = DownstreamConfig(
        real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]), oracle=str(oracle),
        arms=["real", "mixed", "oracle"], seeds=[0, 1], test_sets={"balanced": str(external)},
        mix=MixConfig(synthetic_share="all"), **TINY,
    )
    result = compare(config, tmp_path, log=lambda m: None)
    part = result["test_sets"]["balanced"]
    assert part["images"] == 48 and part["images_by_group"] == {g: 8 for g in ("I", "II", "III", "IV", "V", "VI")}
    assert set(part["runs"]) == {"real", "mixed", "oracle"}
    record = json.loads((tmp_path / "oracle" / "seed-0" / "metrics.json").read_text())
    assert record["train_images"]["synthetic"] == 32  # the true images took the synthetic images' place
    assert (tmp_path / "mixed" / "seed-1" / "predictions-balanced.csv").is_file()
    # the external table is computed from the external predictions, not from the in-distribution split
    p = read_predictions(tmp_path / "real" / "seed-0" / "predictions-balanced.csv")
    assert part["runs"]["real"][0]["accuracy"] == pytest.approx(fairness.accuracy(p))
    shares = result["oracle_share"]
    assert set(shares) == {"test split", "balanced"} and set(shares["balanced"]["arms"]) == {"mixed"}
    text = (tmp_path / "compare.md").read_text()
    assert "## External test set `balanced` (48 images" in text and "## Share of the oracle's effect" in text


def _predictions(correct: float, rng: np.random.Generator, n: int = 400) -> fairness.Predictions:
    """Two-class predictions whose true class gets probability ``correct`` on average, half in group V."""
    labels = rng.integers(0, 2, n)
    confidence = np.clip(correct + rng.normal(0, 0.15, n), 0.01, 0.99)
    p_true = confidence
    probabilities = np.where(labels[:, None] == 0, np.stack([p_true, 1 - p_true], 1), np.stack([1 - p_true, p_true], 1))
    groups = np.array(["I" if i % 2 else "V" for i in range(n)], dtype=object)
    return fairness.Predictions(labels, probabilities, groups, ("a", "b"))


def test_share_is_the_ratio_of_effects_and_undefined_when_the_oracle_does_nothing():
    rng = np.random.default_rng(0)
    base = _predictions(0.55, rng)
    # the same test images for every arm: only the probabilities differ
    def shifted(by: float) -> fairness.Predictions:
        p = base.probabilities.copy()
        true = p[np.arange(len(base.labels)), base.labels]
        new_true = np.clip(true + by, 0.01, 0.99)
        p[np.arange(len(base.labels)), base.labels] = new_true
        p[np.arange(len(base.labels)), 1 - base.labels] = 1 - new_true
        return fairness.Predictions(base.labels, p, base.groups, base.classes)

    arms = {"real": shifted(0.0), "mixed": shifted(0.1), "oracle": shifted(0.2)}
    config = DownstreamConfig(min_positives=1, bootstrap_resamples=60)
    out = shares_for({arm: {0: p, 1: p, 2: p} for arm, p in arms.items()}, config, resamples=60)
    row = out["arms"]["mixed"]["accuracy"]
    expected = (fairness.accuracy(arms["mixed"]) - fairness.accuracy(arms["real"])) / (
        fairness.accuracy(arms["oracle"]) - fairness.accuracy(arms["real"]))
    assert row["share"] == pytest.approx(expected)
    assert 0.2 < row["share"] < 0.8 and row["share_interval"][0] <= row["share"] <= row["share_interval"][1]
    # an oracle no better than real data: nothing to reach, no share
    flat = shares_for({"real": {0: arms["real"]}, "mixed": {0: arms["mixed"]}, "oracle": {0: arms["real"]}}, config,
                      resamples=60)
    assert flat["arms"]["mixed"]["accuracy"]["share"] is None
    assert "within noise" in flat["arms"]["mixed"]["accuracy"]["note"]


def test_a_test_set_added_later_is_read_by_the_saved_models_not_by_training_again(derm_study, external, tmp_path):
    config = DownstreamConfig(real=str(derm_study["real"]), arms=["real"], seeds=[0], **TINY)
    compare(config, tmp_path, log=lambda m: None)
    model = tmp_path / "real" / "seed-0" / "model.safetensors"
    trained = model.stat().st_mtime_ns
    messages: list[str] = []
    config.test_sets = {"balanced": str(external)}
    result = compare(config, tmp_path, log=messages.append)
    assert model.stat().st_mtime_ns == trained and not any("training" in m for m in messages)
    assert any("testing the saved model" in m and "balanced" in m for m in messages)
    p = read_predictions(tmp_path / "real" / "seed-0" / "predictions-balanced.csv")
    assert len(p.labels) == 48
    assert result["test_sets"]["balanced"]["runs"]["real"][0]["accuracy"] == pytest.approx(fairness.accuracy(p))
    saved = json.loads((tmp_path / "real" / "seed-0" / "metrics.json").read_text())
    assert set(saved["external"]) == {"balanced"}
