"""The command line: every command has --help with an example; ls lists registries; demo runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairsynth.cli import app

runner = CliRunner()


def command_names() -> list[str]:
    """Every command and every sub-command of a group ("downstream compare")."""
    import typer.main

    names = []
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        names.append(name)
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    return sorted(names)


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_with_an_example(name):
    result = runner.invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: fairsynth " in result.output


def test_ls_lists_every_reader():
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    for reader in ("fitzpatrick17k", "ddi", "ham10000", "isic2019", "mvtec", "deepfashion", "kohya", "imagefolder", "csv"):
        assert reader in result.output


def test_ls_unknown_registry():
    result = runner.invoke(app, ["ls", "nope"])
    assert result.exit_code == 2 and "readers" in result.output


def test_bad_override_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["prepare", "prepare.resolutoin=[64]"])
    assert result.exit_code == 2
    assert "prepare.resolutoin" in result.output and "valid keys" in result.output


def test_demo_on_a_small_world(tmp_path):
    result = runner.invoke(app, ["demo", "--until", "prepare", "--workdir", str(tmp_path / "demo"), "world.n=48", "world.size=64"])
    assert result.exit_code == 0, result.output
    counts = pd.read_csv(tmp_path / "demo" / "prepared" / "counts.csv", index_col=0)
    assert counts.loc["total", "total"] == 48
    assert "class x Fitzpatrick skin type" in result.output
    assert "ITA skin-type estimate vs labelled skin type" in result.output
    assert (tmp_path / "demo" / "prepared" / "config.yaml").exists()


def test_demo_runs_every_stage_on_a_tiny_base(tmp_path, tiny_base):
    """The whole study with seconds-long settings on the random tiny base: every stage leaves its outputs."""
    work = tmp_path / "demo"
    tiny = [
        "world.n=96", "world.size=64", "prepare.resolution=[32]", f"train.base.source={tiny_base}",
        "train.steps=4", "train.options.ti_steps=2", "train.options.lora_steps=2", "train.batch_size=4",
        "generate.plan.total=24", "generate.plan.max_attempts=1.5", "generate.steps=2", "generate.batch_size=12",
        "downstream.epochs=1", "downstream.seeds=[0,1]", "downstream.bootstrap_resamples=20", "downstream.image_size=32",
        "filter.checks=[resolution]", "filter.options={}",  # random weights: most images would fail the other checks
    ]
    result = runner.invoke(app, ["demo", "--workdir", str(work), *tiny])
    assert result.exit_code == 0, result.output
    for name in ("train/model/training_info.json", "train/grid-base.png", "train/grid-fine-tuned.png",
                 "train/conditioning.json", "generated/metadata.jsonl", "generated/report.json",
                 "downstream/real/seed-0/model.safetensors", "downstream/compare.md"):
        assert (work / name).is_file(), name
    scores = json.loads((work / "train" / "conditioning.json").read_text())
    assert set(scores) == {"base", "fine-tuned", "judge"} and scores["base"]["n"] == 48
    assert scores["judge"]["skin_type_effect"] == 1.0 and len(scores["judge"]["held_out_accuracy_by_cell"]) == 24
    truth = json.loads((work / "generated" / "report.json").read_text())["truth"]
    assert truth["delivered"] == sum(cell["delivered"] for cell in truth["cells"].values())
    assert (work / "world-test" / "fitzpatrick17k.csv").is_file() and "External test set `world-test`" in result.output
    assert "| AUROC V-VI ↑ |" in result.output and "mixed − real" in result.output
    lines = result.output.splitlines()
    timing = next(k for k, line in enumerate(lines) if "total" in line and "Outputs in" in line)
    assert "verdict" in lines[timing + 1] and lines[-1].startswith(("Be careful", "Nothing stands out"))  # the verdict ends it
    assert (work / "evaluation" / "evaluation.json").is_file() and (work / "report" / "index.html").is_file()
    state = json.loads((work / "run-state.json").read_text())
    assert all(entry["finished"] == entry["started"] for entry in state.values()) and len(state) == 8

    # run again: every stage is up to date; change the generation and only what follows it runs
    again = runner.invoke(app, ["demo", "--workdir", str(work), *tiny])
    assert again.exit_code == 0, again.output
    assert again.output.count("up to date") == 8, again.output
    # --full adds the ratio curve and the ablation as two more stages, reusing every finished one
    protocols = ["downstream.curve.ratios=[0,0.5]", "downstream.curve.epochs=1", "downstream.ablate.keep=[1,0]",
                 "downstream.ablate.epochs=1"]
    full = runner.invoke(app, ["demo", "--full", "--workdir", str(work), *tiny, *protocols])
    assert full.exit_code == 0, full.output
    assert full.output.count("up to date") == 7, full.output  # the report reads the new stages: it runs again
    assert json.loads((work / "downstream" / "ablate.json").read_text())["arms"] == ["real", "mixed", "oracle"]
    assert json.loads((work / "downstream" / "curve.json").read_text())["ratios"] == [0.0, 0.5]
    page = (work / "report" / "index.html").read_text()
    assert '<figure id="figure-ratio-curve">' in page and '<figure id="figure-ablation">' in page
    assert len(json.loads((work / "run-state.json").read_text())) == 10
    timing = next(line for line in full.output.splitlines() if "total" in line and "Outputs in" in line)
    assert "curve:" in timing and "ablate:" in timing
    rerun = runner.invoke(app, ["demo", "--full", "--workdir", str(work), *tiny, *protocols])
    assert rerun.exit_code == 0 and rerun.output.count("up to date") == 10, rerun.output
    changed = runner.invoke(app, ["demo", "--workdir", str(work), *tiny, "generate.guidance_scale=5.0", "--until", "generate"])
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("up to date") == 4 and "generate: settings or inputs changed" in changed.output
    assert any((work / "stale").glob("generate-*/generated/metadata.jsonl"))

