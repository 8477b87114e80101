"""One whole tiny study per test session, shared by the report's tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairsynth.cli import app

#: The demo recipe with seconds-long settings (as in tests/test_cli.py's whole-study test), with
#: every training step logged and a fast evaluation on the downstream classifier's features.
TINY = [
    "world.n=96", "world.size=64", "prepare.resolution=[32]", "train.steps=4", "train.options.ti_steps=2",
    "train.options.lora_steps=2", "train.batch_size=4", "train.log_every=1", "generate.plan.total=24",
    "generate.plan.max_attempts=1.5", "generate.steps=2", "generate.batch_size=12", "downstream.epochs=1",
    "downstream.seeds=[0,1]", "downstream.bootstrap_resamples=20", "downstream.image_size=32",
    # random weights: most images would fail the other checks
    "filter.checks=[resolution]", "filter.options={}",
    "evaluate.metrics=[fd@classifier, vendi@classifier]",
    "evaluate.extractor_options={classifier: {arch: test_resnet, size: 32}}", "evaluate.bootstrap=10",
]


#: The file beside the study's folder that holds what `fairsynth demo` printed.
DEMO_OUTPUT = "demo-output.txt"


@pytest.fixture(scope="session")
def study(tmp_path_factory, tiny_base) -> Path:
    """A whole tiny study (`fairsynth demo` on the random tiny base), its report included; do not modify it.
    What the command printed is in ``DEMO_OUTPUT`` beside the study's folder."""
    work = tmp_path_factory.mktemp("report") / "study"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(work), f"train.base.source={tiny_base}", *TINY])
    assert result.exit_code == 0, result.output
    (work.parent / DEMO_OUTPUT).write_text(result.output, encoding="utf-8")
    return work


def copy_study(study: Path, target: Path, *parts: str) -> Path:
    """A copy of the study's outputs (``parts``: only these top-level folders) without weights and caches."""
    names = parts or tuple(p.name for p in study.iterdir() if p.name not in ("cache", "world", "report"))
    for name in names:
        source = study / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("*.safetensors", "checkpoints"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target
