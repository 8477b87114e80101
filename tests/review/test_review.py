"""The expert-review protocol: a blinded stratified sample, the key apart, ratings read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.data.records import Record, write_manifest
from fairsynth.review import ReviewError, export_review, import_ratings
from fairsynth.review.ratings import krippendorff_ordinal, Rating
from fairsynth.review.sample import ReviewExportError

runner = CliRunner()


def make_set(root: Path, prefix: str, cells: dict[tuple[str, int], int], split: str | None = None) -> Path:
    """A manifest with ``count`` PNGs (with a revealing text chunk and name) per (label, fst) cell."""
    from PIL.PngImagePlugin import PngInfo

    records = []
    rng = np.random.default_rng(len(prefix))
    for (label, fst), count in cells.items():
        for i in range(count):
            name = f"images/{prefix}-{label}-{fst}-{i}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            info = PngInfo()
            info.add_text("source", prefix)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name, pnginfo=info)
            attributes = {"fst": fst, "seed": i}
            if split:
                attributes["split"] = split
            records.append(Record(f"{prefix}-{label}-{fst}-{i}", name, label, None, attributes))
    return write_manifest(records, root / "metadata.jsonl")


@pytest.fixture
def sets(tmp_path):
    synthetic = make_set(tmp_path / "gen", "synthetic", {("melanoma", 1): 20, ("melanoma", 6): 20, ("psoriasis", 1): 20, ("psoriasis", 6): 3})
    real = make_set(tmp_path / "real", "real", {("melanoma", 1): 10, ("melanoma", 6): 10, ("psoriasis", 1): 10, ("psoriasis", 6): 10}, "test")
    return synthetic, real


def test_export_is_stratified_blinded_seeded_and_keeps_the_key_apart(sets, tmp_path):
    synthetic, real = sets
    result = export_review(synthetic, real, tmp_path / "sheet", n=40, real_share=0.2, seed=1)
    key = json.loads(result.key.read_text())
    images = key["images"]
    by_source_cell: dict[tuple[str, str], int] = {}
    for entry in images:
        by_source_cell[(entry["source"], entry["stratum"])] = by_source_cell.get((entry["source"], entry["stratum"]), 0) + 1
    # 32 synthetic over 4 strata = 8 each, but psoriasis on type VI has only 3: shortfall 5, not filled from elsewhere
    assert by_source_cell[("synthetic", "label=melanoma, fst=1")] == 8
    assert by_source_cell[("synthetic", "label=psoriasis, fst=6")] == 3
    assert result.shortfall["synthetic"] == {"label=psoriasis, fst=6": 5}
    assert sum(v for (s, _), v in by_source_cell.items() if s == "real") == 8 and result.real == 8
    assert result.synthetic == 27
    # the key is beside, not inside, the rater folder; ids are opaque and the files carry no hint
    assert result.key == tmp_path / "sheet.key.json" and not list((tmp_path / "sheet").rglob("*.json"))
    files = sorted(p.name for p in (tmp_path / "sheet" / "images").iterdir())
    assert files == [f"{i:04d}.png" for i in range(1, 36)]
    for path in (tmp_path / "sheet" / "images").iterdir():
        with Image.open(path) as image:
            assert not image.info and not image.text
    sheet = list(csv.DictReader((tmp_path / "sheet" / "ratings.csv").open()))
    assert [row["id"] for row in sheet] == [f"{i:04d}" for i in range(1, 36)] and all(row["rating"] == "" for row in sheet)
    gallery = (tmp_path / "sheet" / "gallery.html").read_text()
    assert gallery.count('class="card"') == 35 and "synthetic-" not in gallery and "real-" not in gallery
    # the same seed draws the same sample in the same order
    again = export_review(synthetic, real, tmp_path / "sheet2", n=40, real_share=0.2, seed=1)
    assert [e["record_id"] for e in json.loads(again.key.read_text())["images"]] == [e["record_id"] for e in images]


def test_export_refuses_a_key_inside_the_folder_and_a_folder_with_files(sets, tmp_path):
    synthetic, real = sets
    with pytest.raises(ReviewExportError, match="must not be inside"):
        export_review(synthetic, real, tmp_path / "sheet", key=tmp_path / "sheet" / "key.json", n=10)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ReviewExportError, match="not empty"):
        export_review(synthetic, real, tmp_path / "busy", n=10)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def _key(tmp_path: Path, sources: dict[str, str]) -> Path:
    images = [{"id": i, "source": s, "stratum": f"label=x, fst={1 if int(i) % 2 else 6}", "fst": 1 if int(i) % 2 else 6}
              for i, s in sources.items()]
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"images": images}))
    return path


def _sheet(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "rating", "real_or_synthetic", "comment"])
        writer.writerows([(*row, "") for row in rows])
    return path


def test_import_statistics_match_hand_computed_values(tmp_path):
    from sklearn.metrics import roc_auc_score

    key = _key(tmp_path, {"01": "synthetic", "02": "synthetic", "03": "synthetic", "04": "synthetic", "05": "real", "06": "real"})
    alice = _sheet(tmp_path / "alice" / "ratings.csv", [("01", "6", "real"), ("02", "2", "synthetic"), ("03", "7", "real"),
                                                        ("04", "5", ""), ("05", "7", "real"), ("06", "6", "synthetic")])
    bob = _sheet(tmp_path / "bob" / "ratings.csv", [("01", "5", "synthetic"), ("02", "1", "synthetic"), ("03", "", ""),
                                                    ("04", "6", "real"), ("05", "6", "real"), ("06", "7", "real")])
    report = import_ratings([alice, bob], key)
    synthetic = [6, 2, 7, 5, 5, 1, 6]
    assert report["synthetic"]["n"] == 7 and report["synthetic"]["mean"] == pytest.approx(sum(synthetic) / 7)
    assert report["synthetic"]["share_below_3"] == pytest.approx(2 / 7)
    assert report["real"]["mean"] == pytest.approx(26 / 4)
    # guesses: alice 01 wrong, 02 right, 03 wrong, 05 right, 06 wrong; bob 01 right, 02 right, 04 wrong, 05 right, 06 right
    assert report["discrimination"]["guesses"] == 10 and report["discrimination"]["guess_accuracy"] == pytest.approx(0.6)
    labels = [0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1]
    scores = [6, 2, 7, 5, 7, 6, 5, 1, 6, 6, 7]
    assert report["discrimination"]["rating_auroc_real_vs_synthetic"] == pytest.approx(roc_auc_score(labels, scores))
    # ids 01 and 03 are type I: alice 6 and 7, bob 5 (03 unrated)
    assert report["synthetic_by_fst"]["1"]["n"] == 3 and report["synthetic_by_fst"]["1"]["mean"] == pytest.approx(6.0)
    assert report["acceptance"]["accepted"] is False  # mean 4.57 and 29 % below 3
    assert json.loads((tmp_path / "review.json").read_text())["synthetic"]["n"] == 7


def test_krippendorffs_alpha_matches_the_published_example():
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability': 4 coders, 12 units; ordinal alpha 0.815."""
    nan = None
    data = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        "C": [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    }
    ratings = [Rating(rater, f"{unit:02d}", score, None) for rater, scores in data.items()
               for unit, score in enumerate(scores) if score is not None]
    # the published ordinal value uses the values that occur (1-5) as the ordinal scale
    import krippendorff

    matrix = np.array([[np.nan if v is None else v for v in row] for row in data.values()], dtype=float)
    assert krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal") == pytest.approx(0.815, abs=1e-3)
    assert krippendorff_ordinal(ratings, list(data)) == pytest.approx(
        krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=list(range(1, 8))))
    assert krippendorff_ordinal(ratings[:3], ["A"]) is None  # one rater: no agreement to measure


def test_acceptance_verdict_both_ways(tmp_path):
    key = _key(tmp_path, {f"{i:02d}": "synthetic" for i in range(1, 11)})
    good = _sheet(tmp_path / "g.csv", [(f"{i:02d}", "6", "") for i in range(1, 11)])
    assert import_ratings([good], key)["acceptance"]["accepted"] is True
    one_low = _sheet(tmp_path / "l.csv", [(f"{i:02d}", "7" if i > 1 else "2", "") for i in range(1, 11)])
    assert import_ratings([one_low], key)["acceptance"]["accepted"] is False  # 10 % below 3 is not < 10 %


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([("01", "8", "")], None, r"line 2: rating '8' is not an integer 1-7"),
        ([("99", "5", "")], None, r"line 2: id '99' is not in the key"),
        ([("01", "5", ""), ("01", "4", "")], None, r"line 3: id 01 is rated twice"),
        ([("01", "5", "maybe")], None, r"line 2: real_or_synthetic 'maybe'"),
        ([("01", "5")], ["id", "score"], r"missing column\(s\) rating, real_or_synthetic"),
    ],
)
def test_bad_sheets_name_the_file_and_line(tmp_path, rows, header, message):
    key = _key(tmp_path, {"01": "synthetic"})
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["id", "rating", "real_or_synthetic"])
        writer.writerows(rows)
    with pytest.raises(ReviewError, match=rf"bad\.csv.*{message}" if "missing" not in message else message):
        import_ratings([path], key)


def test_export_and_import_through_the_command_line(sets, tmp_path):
    synthetic, real = sets
    out = tmp_path / "review"
    result = runner.invoke(app, ["review", "export", str(out), "--synthetic", str(synthetic), "--real", str(real),
                                 "--n", "20", "--real-share", "0.25", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "15 synthetic and 5 real images" in result.output.replace("\n", " ")
    key = tmp_path / "review.key.json"
    sheet = list(csv.DictReader((out / "ratings.csv").open()))
    filled = _sheet(tmp_path / "filled.csv", [(row["id"], "6", "real") for row in sheet])
    result = runner.invoke(app, ["review", "import", str(filled), "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert "synthetic: mean 6.00" in result.output and "ACCEPTED" in result.output
    bad = runner.invoke(app, ["review", "import", str(filled), "--key", str(tmp_path / "nokey.json")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
