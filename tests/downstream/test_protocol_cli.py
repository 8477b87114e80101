"""`fairsynth downstream curve` and `fairsynth downstream ablate` on a tiny study: the tables printed,
the files written, and every bad input a clear error with exit status 2."""

from __future__ import annotations

import csv
import html
import json

import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.report import build_report


@pytest.fixture
def recipe(derm_study, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: mini\nworkdir: {tmp_path / 'w'}\ndata: {{path: {tmp_path / 'unused.csv'}}}\n"
        f"downstream: {{real: {derm_study['real']}, synthetic: {derm_study['synthetic']}, backbone: test_resnet, "
        "image_size: 32, epochs: 1, bootstrap_resamples: 20, high_risk: [melanoma], seeds: [0, 1]}\n"
    )
    return path


def test_curve_prints_its_table_and_the_tests_and_writes_its_files(recipe, tmp_path):
    result = CliRunner().invoke(app, ["downstream", "curve", "--config", str(recipe), "--ratios", "0,0.25"])
    assert result.exit_code == 0, result.output
    assert "| 0 (real only) | 0 |" in result.output and "| 0.25 | 23 |" in result.output
    assert "Compared on: 2 seeds (0, 1); test set: the test split, 48 images" in result.output
    out = tmp_path / "w" / "downstream"
    for name in ("curve.md", "curve.json", "curve.png", "curve-config.yaml"):
        assert (out / name).is_file(), name
    assert json.loads((out / "curve.json").read_text())["ratios"] == [0.0, 0.25]
    again = CliRunner().invoke(app, ["downstream", "curve", "--config", str(recipe), "--ratios", "0,0.25"])
    assert again.exit_code == 0 and again.output.count("reusing") == 4  # a finished point is skipped
    # the report reads what the command wrote: the curve's numbers, and the line naming the tests under it
    page = build_report(tmp_path / "w").read_text(encoding="utf-8")
    figure = page.split('<figure id="figure-ratio-curve">')[1].split("</figure>")[0]
    assert "Compared on: 2 seeds (0, 1); test set: the test split, 48 images" in figure
    value = json.loads((out / "curve.json").read_text())["test_sets"]["the test split"]["numbers"]["auroc.V-VI"]["values"][1]
    rows = list(csv.DictReader((tmp_path / "w" / "report" / "figures" / "ratio-curve.csv").open(encoding="utf-8")))
    row = next(r for r in rows if r["number"] == "AUROC V-VI" and float(r["ratio"]) == 0.25)
    assert float(row["mean"]) == pytest.approx(value["mean"])


def test_ablate_prints_the_headline_and_writes_its_files(recipe, tmp_path):
    result = CliRunner().invoke(app, ["downstream", "ablate", "--config", str(recipe), "--keep", "1,0", "--group", "V-VI"])
    assert result.exit_code == 0, result.output
    assert "# How many real V-VI images is the synthetic set worth?" in result.output
    assert "The synthetic set is worth" in result.output and "no oracle arm: the data is not a procedural world" in result.output
    out = tmp_path / "w" / "downstream"
    for name in ("ablate.md", "ablate.json", "ablate.png", "ablate-config.yaml"):
        assert (out / name).is_file(), name
    assert json.loads((out / "ablate.json").read_text())["arms"] == ["real", "mixed"]
    page = build_report(tmp_path / "w").read_text(encoding="utf-8")
    worth = json.loads((out / "ablate.json").read_text())["worth"]["sentence"]
    assert html.escape(worth, quote=False) in page
    figure = page.split('<figure id="figure-ablation">')[1].split("</figure>")[0]
    assert "Compared on: 2 seeds (0, 1); test set: the test split, 48 images" in figure


@pytest.mark.parametrize("arguments, message", [
    (["curve", "--ratios", "0,-1"], "ratio -1 is below 0"),
    (["curve", "--ratios", "0,two"], "--ratios: 'two' is not a number"),
    (["ablate", "--keep", "1,1.5"], "share 1.5 is outside [0, 1]"),
    (["ablate", "--keep", "1,-0.5"], "share -0.5 is outside [0, 1]"),
    (["ablate", "--group", "VII"], "'VII' is not a group of the data"),
    (["ablate", "--group", "V-VI", "--seeds", "0,0"], "distinct seeds"),
])
def test_bad_input_is_a_clear_error_and_exit_2(recipe, tmp_path, arguments, message):
    command, *rest = arguments
    result = CliRunner().invoke(app, ["downstream", command, "--config", str(recipe), *rest])
    assert result.exit_code == 2, result.output
    assert message in result.output
    written = tmp_path / "w" / "downstream"
    assert not (written / f"{command}.json").exists() and not (written / f"{command}-config.yaml").exists()
