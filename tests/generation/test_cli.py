"""`fairsynth generate` / `fairsynth filter` on the command line: --dry-run, exit codes, messages."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from tests.generation.conftest import overrides

runner = CliRunner()


def test_dry_run_prints_the_plan_without_loading_a_model(tmp_path, real_manifest) -> None:
    args = overrides(tmp_path, tmp_path / "no-such-base", real_manifest, None,
                     **{"plan.total": 600, "plan.distribution": "fairskin", "plan.oversample": 1.5, "steps": 20, "guidance_scale": 7.5})
    done = runner.invoke(app, ["generate", *args, "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "plan: 600 images in 12 cells" in done.output and "melanoma/fst=6" in done.output
    # FST VI: 25 % of 600 = 150, split over 2 diagnoses -> 75 each, 113 in the first round (1.5x), 40 UNet rows each
    assert "75" in done.output and "113" in done.output and f"{113 * 40:,}" in done.output
    assert "time: unknown until measured" in done.output
    timed = runner.invoke(app, ["generate", *args, "generate.seconds_per_unet_eval=0.01", "--dry-run"])
    assert timed.exit_code == 0 and " h" in timed.output


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["generate.plan.distribution=counts", "generate.plan.counts={melanoma/fst=9: 2}"], "do not exist"),
        (["generate.scheduler=heun"], "is not one of"),
        (["filter.checks=[blurry]"], "unknown check 'blurry'"),
        (["generate.plan.max_attempts=0.5"], "max_attempts"),
    ],
)
def test_bad_input_exits_2_with_one_message(tmp_path, real_manifest, extra, needle) -> None:
    args = overrides(tmp_path, tmp_path / "base", real_manifest, None) + extra
    done = runner.invoke(app, ["generate", *args, "--dry-run"])
    assert done.exit_code == 2 and needle in done.output and "Traceback" not in done.output


def test_shortfall_exits_1_and_filter_rethresholds(tmp_path, tiny_base, real_manifest) -> None:
    args = overrides(tmp_path, tiny_base, real_manifest, None, **{"plan.total": 2, "plan.by": "[]", "plan.max_attempts": 1.0})
    short = runner.invoke(app, ["generate", *args, "filter.options={brightness: {min: 0.99, max: 1.0}}"])
    assert short.exit_code == 1 and "short of the target in 2 cell(s)" in short.output
    fixed = runner.invoke(app, ["filter", *args])
    assert fixed.exit_code == 0, fixed.output
    assert "filtered: 2 of 2 images delivered" in fixed.output


def test_a_truncated_adapter_file_is_named_before_anything_is_generated(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    import shutil

    train_dir = tmp_path / "train"
    shutil.copytree(lora_output, train_dir)
    weights = train_dir / "model" / "pytorch_lora_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])  # a copy cut short
    done = runner.invoke(app, ["generate", *overrides(tmp_path, tiny_base, real_manifest, train_dir)])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert f"{weights} cannot be read" in done.output and "--resume latest" in done.output
    assert not (tmp_path / "generated" / "metadata.jsonl").exists()


def test_filter_before_generate_is_a_clear_error(tmp_path, real_manifest) -> None:
    done = runner.invoke(app, ["filter", *overrides(tmp_path, tmp_path / "base", real_manifest, None)])
    assert done.exit_code == 2 and "run `fairsynth generate` first" in done.output


def test_help_has_examples() -> None:
    for command in ("generate", "filter"):
        assert "Example: fairsynth " + command in runner.invoke(app, [command, "--help"]).output
