"""`fairsynth evaluate`, `fairsynth weights` and `fairsynth ls` for metrics and extractors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fairsynth.cli import app
from tests.metrics.conftest import write_set

runner = CliRunner()


def test_ls_lists_metrics_and_extractors():
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    for name in ("fd", "kid", "prdc", "vendi", "intra_class_diversity", "clip_score", "memorisation", "lpips_diversity"):
        assert name in result.output
    for name in ("inception", "clip-b32", "dinov2", "classifier", "lpips", "random"):
        assert name in result.output


def test_evaluate_with_the_random_extractor_says_so(tmp_path):
    real = write_set(tmp_path / "real", 24)
    synthetic = write_set(tmp_path / "synthetic", 24, seed=1)
    result = runner.invoke(app, [
        "evaluate", "--real", str(real), "--synthetic", str(synthetic), "--by", "fst_group,class",
        "--metrics", "fd,prdc,vendi", "--extractor", "random", "-o", str(tmp_path / "out"),
        f"evaluate.cache_dir={tmp_path / 'cache'}", "evaluate.bootstrap=10", "evaluate.min_group_size=4",
    ])
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output and "by fst_group" in result.output and "precision" in result.output
    # the real set's Vendi row is labelled as such (rich must not eat "[real]" as a style tag)
    assert any("Vendi" in line and "[real]" in line for line in result.output.splitlines()), result.output
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["config"]["by"] == ["fst_group", "class"] and report["config"]["metrics"] == ["fd", "prdc", "vendi"]


def test_evaluate_offline_without_weights_is_one_clear_error(tmp_path):
    real = write_set(tmp_path / "real", 4)
    synthetic = write_set(tmp_path / "synthetic", 4, seed=1)
    result = runner.invoke(app, [
        "evaluate", "--real", str(real), "--synthetic", str(synthetic), "--metrics", "fd@inception",
        "--by", "class", "-o", str(tmp_path / "out"), f"evaluate.cache_dir={tmp_path / 'cache'}",
    ])
    assert result.exit_code == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in result.output and "fairsynth weights fetch inception" in result.output


def test_evaluate_unknown_metric_lists_the_valid_ones():
    result = runner.invoke(app, ["evaluate", "--metrics", "fid"])
    assert result.exit_code == 2 and "unknown metric 'fid'" in result.output and "memorisation" in result.output


def test_weights_list_shows_what_is_missing():
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0, result.output
    assert "pt_inception-2015-12-05-6726825d.pth" in result.output and "MISSING" in result.output
    assert "lpips_v0.1_alex.pth" in result.output  # the heads the lpips package ships are found


def test_weights_fetch_offline_fails_clearly():
    result = runner.invoke(app, ["weights", "fetch", "inception"])
    assert result.exit_code == 2 and "offline" in result.output
