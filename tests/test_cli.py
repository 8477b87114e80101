"""The command line: every command has --help with an example; ls lists registries; demo runs."""

from __future__ import annotations

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
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "world.n=48", "world.size=64"])
    assert result.exit_code == 0, result.output
    counts = pd.read_csv(tmp_path / "demo" / "prepared" / "counts.csv", index_col=0)
    assert counts.loc["total", "total"] == 48
    assert "class x Fitzpatrick skin type" in result.output
    assert "ITA skin-type estimate vs labelled skin type" in result.output
    assert (tmp_path / "demo" / "prepared" / "config.yaml").exists()
