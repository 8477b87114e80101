"""`fairsynth review export` then `fairsynth review import`, end to end through the command line."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from fairsynth.cli import app

from .conftest import write_sheet

runner = CliRunner()


def test_export_fill_and_import_through_the_command_line(sets, tmp_path):
    synthetic, real = sets
    out = tmp_path / "review"
    result = runner.invoke(app, ["review", "export", str(out), "--synthetic", str(synthetic), "--real", str(real),
                                 "--n", "20", "--real-share", "0.25", "--seed", "3"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "15 synthetic and 5 real images" in text and "key (keep it from the raters)" in text
    assert "only images that passed the filters are drawn" in text
    key_path = tmp_path / "review.key.json"
    key = {e["id"]: e["source"] for e in json.loads(key_path.read_text())["images"]}
    ids = [row["id"] for row in csv.DictReader((out / "ratings.csv").open())]
    assert sorted(ids) == sorted(key) and len(ids) == 20
    # two raters: alice rates synthetic 6 and real 7 and guesses right; bob rates everything 6 and guesses "real"
    alice = write_sheet(tmp_path / "alice" / "ratings.csv", [(i, "6" if key[i] == "synthetic" else "7", key[i]) for i in ids])
    bob = write_sheet(tmp_path / "bob" / "ratings.csv", [(i, "6", "real") for i in ids])
    result = runner.invoke(app, ["review", "import", str(alice), str(bob), "--key", str(key_path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "ACCEPTED: synthetic mean rating > 5" in text and "NOT ACCEPTED" not in text
    assert "alice" in text and "bob" in text and "Krippendorff" in text
    report = json.loads((tmp_path / "review.json").read_text())
    assert report["synthetic"]["mean"] == 6.0 and report["real"]["mean"] == 6.5
    assert report["raters"]["alice"]["guess_accuracy"] == 1.0 and report["raters"]["bob"]["guess_accuracy"] == 0.25
    assert report["discrimination"]["accuracy"] == (20 + 5) / 40
    # a stricter rule, through the options
    result = runner.invoke(app, ["review", "import", str(alice), str(bob), "--key", str(key_path), "--acceptance-mean", "6.5",
                                 "-o", str(tmp_path / "strict.json")])
    assert result.exit_code == 0 and "NOT ACCEPTED" in result.output
    assert json.loads((tmp_path / "strict.json").read_text())["acceptance"]["accepted"] is False


def test_export_from_a_recipe_and_clear_errors(sets, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"workdir: {tmp_path}\n")  # generated/ and prepared/ of the fixture are its stage folders
    result = runner.invoke(app, ["review", "export", str(tmp_path / "sheet"), "--config", str(recipe), "--n", "10"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sheet.key.json").is_file() and len(list((tmp_path / "sheet" / "images").iterdir())) == 10
    inside = runner.invoke(app, ["review", "export", str(tmp_path / "s2"), "--config", str(recipe), "--key", str(tmp_path / "s2" / "k.json")])
    assert inside.exit_code == 2 and "must not be inside the rater folder" in inside.output
    short = runner.invoke(app, ["review", "export", str(tmp_path / "s3"), "--config", str(recipe), "--n", "100", "--real-share", "0"])
    text = " ".join(short.output.split())
    assert short.exit_code == 0 and "warning: synthetic strata short of their quota: label=melanoma, fst=1 by 5;" in text
    assert "label=psoriasis, fst=6 by 22" in text and "37 images short of n = 100" in text
    bad = write_sheet(tmp_path / "bad.csv", [("0001", "8")])
    result = runner.invoke(app, ["review", "import", str(bad), "--key", str(tmp_path / "sheet.key.json")])
    assert result.exit_code == 2 and "bad.csv, line 2: rating '8'" in " ".join(result.output.split())
    result = runner.invoke(app, ["review", "import", str(bad), "--key", str(tmp_path / "nokey.json")])
    assert result.exit_code == 2 and "does not exist" in result.output
