"""The synthetic:real ratio curve: the draw per cell, the shortfall said, resumed points, the outputs."""

from __future__ import annotations

import errno
import json
from collections import Counter
from pathlib import Path

import pytest

from fairsynth.config import ConfigError
from fairsynth.downstream import curve as curve_module
from fairsynth.downstream import points as points_module
from fairsynth.downstream.config import CurveConfig, DownstreamConfig
from fairsynth.downstream.curve import CurveError, curve, draw_synthetic, synthetic_order
from fairsynth.downstream.data import load_sets

TINY = dict(backbone="test_resnet", image_size=32, epochs=1, batch_size=16, learning_rate=3e-3, patience=2,
            bootstrap_resamples=30, high_risk=["melanoma", "basal cell carcinoma"], min_positives=1)


@pytest.fixture(scope="module")
def sets(derm_study):
    return load_sets(derm_study["real"], derm_study["synthetic"])


def test_the_draw_keeps_the_generated_cells_in_proportion_and_is_nested(sets):
    order = synthetic_order(sets.synthetic, seed=0)
    assert sorted(s.id for s in order) == sorted(s.id for s in sets.synthetic)
    cells = Counter((s.label, s.group) for s in sets.synthetic)  # 8 cells of 4 images
    for size in (4, 8, 13, 24):
        prefix = Counter((s.label, s.group) for s in order[:size])
        for cell, n in cells.items():
            assert abs(prefix[cell] - size * n / len(order)) < 1.0 + 1e-9, (size, cell)
    small, _ = draw_synthetic(sets.train, sets.synthetic, 0.1, seed=3)
    large, account = draw_synthetic(sets.train, sets.synthetic, 0.25, seed=3)
    assert {s.id for s in small} <= {s.id for s in large}  # a smaller ratio's images are among a larger one's
    assert account["asked"] == round(0.25 * 92) == len(large) and account["short"] == 0
    other, _ = draw_synthetic(sets.train, sets.synthetic, 0.25, seed=4)
    assert {s.id for s in other} != {s.id for s in large}  # seeded by the run's seed
    everything, short = draw_synthetic(sets.train, sets.synthetic, 2.0, seed=3)
    assert len(everything) == 32 and short["asked"] == 184 and short["short"] == 152
    assert short["achieved_ratio"] == pytest.approx(32 / 92)


def test_curve_runs_every_ratio_with_every_seed_says_how_far_it_got_and_resumes(derm_study, tmp_path, monkeypatch):
    config = DownstreamConfig(real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]), seeds=[0, 1],
                              curve=CurveConfig(ratios=[0.25, 1, 5]), **TINY)
    messages = []
    result = curve(config, tmp_path / "ds", log=messages.append)
    statuses = {e["ratio"]: e["status"] for e in result["points"]}
    assert statuses == {0.0: "run", 0.25: "run", 1.0: "short", 5.0: "not run"}
    assert result["points"][0]["asked_by_user"] is False  # 0 added as the baseline
    short = next(e for e in result["points"] if e["ratio"] == 1.0)
    assert short["synthetic_images"] == 32 and short["achieved_ratio"] == pytest.approx(32 / 92)
    assert "generate more on demand" in result["shortfall"] and "460" in result["shortfall"]  # 5 x 92 needed
    assert result["generated_on_demand"] is False
    for ratio in ("0", "0.25", "1"):
        for seed in (0, 1):
            run = tmp_path / "ds" / "curve" / f"ratio-{ratio}" / f"seed-{seed}"
            assert (run / "metrics.json").is_file() and (run / "point.json").is_file()
    assert not (tmp_path / "ds" / "curve" / "ratio-5").exists()
    accuracy = result["test_sets"]["the test split"]["numbers"]["accuracy"]["values"]
    assert [v["ratio"] for v in accuracy] == [0.0, 0.25, 1.0]
    assert accuracy[0]["delta_vs_real_only"] is None and accuracy[1]["delta_vs_real_only"]["n"] == 2
    assert set(accuracy[1]["per_seed"]) == {"0", "1"} and accuracy[1]["seed_interval"][0] is not None
    assert {"auroc.I-II", "auroc.III-IV", "auroc.V-VI", "auroc_gap", "balanced_accuracy"} <= set(
        result["test_sets"]["the test split"]["numbers"])
    point = json.loads((tmp_path / "ds" / "curve" / "ratio-0.25" / "seed-1" / "point.json").read_text())
    assert point["ratio"] == 0.25 and point["synthetic_images"] == 23 and point["arm"] == "mixed"
    # the files, self-describing
    saved = json.loads((tmp_path / "ds" / "curve.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["headline_test_set"] == "the test split"
    assert "t-interval" in saved["intervals"]["difference"] and "bootstrap" in saved["intervals"]["difference"]
    text = (tmp_path / "ds" / "curve.md").read_text()
    assert "| 0 (real only) | 0 |" in text and "1 (reached 0.348)" in text and "**How far it got:**" in text
    assert "Compared on: 2 seeds (0, 1); test set: the test split, 48 images (I-II 16, III-IV 16, V-VI 16)" in text
    assert (tmp_path / "ds" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("ratio 5: the generated set (32 images) ran out at ratio 1" in m for m in messages)

    # a finished point is skipped; a changed setting trains again
    def refuse(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(points_module, "train_run", refuse)
    left = [tmp_path / "ds" / ".curve.json.k2j4.tmp", tmp_path / "ds" / "curve" / "ratio-0" / "seed-0" / ".metrics.json.x9.tmp"]
    for path in left:  # writes a kill interrupted
        path.write_text("half")
    again = curve(config, tmp_path / "ds", log=lambda m: None)
    assert again["test_sets"] == result["test_sets"]
    assert not any(path.exists() for path in left)
    # the disk fills while the table is written: no curve.json says the curve is complete
    written = curve_module.atomic_write_text

    def full(path, text):
        if Path(path).name == "curve.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written(path, text)

    (tmp_path / "ds" / "curve.json").unlink()
    monkeypatch.setattr(curve_module, "atomic_write_text", full)
    with pytest.raises(OSError):
        curve(config, tmp_path / "ds", log=lambda m: None)
    assert not (tmp_path / "ds" / "curve.json").exists()
    monkeypatch.undo()
    changed = DownstreamConfig(**{**config.__dict__, "learning_rate": 1e-3})
    retrained = []
    curve(changed, tmp_path / "ds", log=retrained.append)
    assert sum("holds a run of other settings" in m for m in retrained) == 6


def test_bad_ratios_are_clear_errors(derm_study, tmp_path):
    with pytest.raises(ConfigError, match="ratio -0.5 is below 0"):
        CurveConfig(ratios=[0, -0.5])
    with pytest.raises(ConfigError, match="ratios has a ratio twice"):
        CurveConfig(ratios=[1, 1.0])
    config = DownstreamConfig(real=str(derm_study["real"]), synthetic=str(tmp_path / "none.jsonl"), **TINY)
    with pytest.raises(CurveError, match="none.jsonl does not exist"):
        curve(config, tmp_path / "ds")
    config = DownstreamConfig(real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]),
                              curve=CurveConfig(test_set="ddi"), **TINY)
    with pytest.raises(ValueError, match="'ddi' is not among downstream.test_sets"):
        curve(config, tmp_path / "ds")
