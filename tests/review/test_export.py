"""`review export`: stratified counts, blinding, the key apart, determinism, safe paths."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairsynth.config import ConfigError
from fairsynth.io import UnsafePathError
from fairsynth.review import ExportConfig, ReviewExportError, export_review
from fairsynth.review.sample import allocate

from .conftest import make_synthetic


def export(synthetic: Path, real: Path, output: Path, **options):
    return export_review(ExportConfig(synthetic=str(synthetic), real=str(real), output=str(output), **options))


def test_allocation_is_equal_with_the_remainder_to_the_first_strata():
    assert allocate(10, ["b", "a", "c"]) == {"a": 4, "b": 3, "c": 3}
    assert allocate(2, ["a", "b", "c"]) == {"a": 1, "b": 1, "c": 0}
    assert allocate(5, []) == {}


def test_equal_quotas_per_stratum_and_the_shortfall_reported(sets, tmp_path):
    synthetic, real = sets
    result = export(synthetic, real, tmp_path / "sheet", n=40, real_share=0.2, seed=1)
    key = json.loads(result.key.read_text())
    counts = Counter((e["source"], e["stratum"]) for e in key["images"])
    # 32 synthetic over 4 strata = 8 each; psoriasis on type VI has only 3 that passed: 5 short, not refilled
    assert counts[("synthetic", "label=melanoma, fst=1")] == 8
    assert counts[("synthetic", "label=melanoma, fst=6")] == 8
    assert counts[("synthetic", "label=psoriasis, fst=1")] == 8
    assert counts[("synthetic", "label=psoriasis, fst=6")] == 3
    assert result.shortfall == {"synthetic": {"label=psoriasis, fst=6": 5}, "real": {}}
    assert key["shortfall"] == result.shortfall
    # 8 real over the same 4 strata = 2 each, all from the test split
    assert all(counts[("real", s)] == 2 for s in key["quotas"]["real"]) and result.real == 8
    assert result.synthetic == 27 and len(key["images"]) == 35
    assert any("5 images short of n = 40" in note for note in result.notes)
    # only images that passed the filters, and the output says so
    synthetic_rows = {json.loads(line)["file_name"]: json.loads(line) for line in synthetic.read_text().splitlines()}
    assert all(synthetic_rows[e["file_name"]]["accepted"] for e in key["images"] if e["source"] == "synthetic")
    assert any("only images that passed the filters are drawn (63 passed, 8 rejected" in note for note in result.notes)
    real_split = {json.loads(line)["file_name"]: json.loads(line)["split"] for line in real.read_text().splitlines()}
    assert {real_split[e["file_name"]] for e in key["images"] if e["source"] == "real"} == {"test"}
    # the key says where each image came from
    first = key["images"][0]
    assert {"id", "source", "file", "label", "fst", "seed", "stratum"} <= set(first)
    assert Path(first["file"]).is_file()


def test_no_file_name_or_metadata_tells_the_source(sets, tmp_path):
    synthetic, real = sets
    result = export(synthetic, real, tmp_path / "sheet", n=40, real_share=0.2, seed=1)
    folder = tmp_path / "sheet"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        ["ratings.csv", "gallery.html", "README.txt", *(f"images/{i:04d}.png" for i in range(1, 36))]
    )
    key = {e["id"]: e for e in json.loads(result.key.read_text())["images"]}
    for path in (folder / "images").iterdir():
        data = path.read_bytes()
        for hint in (b"RealCameraMaker", b"parameters", b"melanoma", b"psoriasis", b"synthetic", b"Exif", b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"):
            assert hint not in data, (path.name, hint)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and not image.info and not image.getexif()
            assert image.size == (16, 16)  # the synthetic size; the 24 px real JPEGs were fitted to it
            pixels = np.asarray(image)
        entry = key[path.stem]
        if entry["source"] == "synthetic":  # same size: the pixels are exactly the source's
            with Image.open(entry["file"]) as source:
                assert np.array_equal(pixels, np.asarray(source.convert("RGB")))
    texts = " ".join((folder / name).read_text() for name in ("ratings.csv", "gallery.html", "README.txt"))
    for entry in key.values():
        assert entry["record_id"] not in texts and Path(entry["file"]).name not in texts
    for hint in ("melanoma", "psoriasis", "fst", "generated/", "prepared/", "seed", str(tmp_path)):
        assert hint not in texts
    sheet = list(csv.DictReader((folder / "ratings.csv").open()))
    assert list(sheet[0]) == ["id", "rating", "real_or_synthetic", "comment"]
    assert [row["id"] for row in sheet] == [f"{i:04d}" for i in range(1, 36)]
    assert all(row["rating"] == row["real_or_synthetic"] == row["comment"] == "" for row in sheet)
    gallery = (folder / "gallery.html").read_text()
    assert gallery.count('class="card"') == 35 and gallery.count('type="radio"') == 35 * 9
    assert "http://" not in gallery and "https://" not in gallery and "<script src" not in gallery and "<link" not in gallery
    readme = (folder / "README.txt").read_text()
    assert "1 = clearly wrong or implausible" in readme and "7 = indistinguishable from a real dermoscopic image" in readme


def test_the_key_stays_outside_the_rater_folder(sets, tmp_path):
    synthetic, real = sets
    result = export(synthetic, real, tmp_path / "sheet", n=10)
    assert result.key == tmp_path / "sheet.key.json" and result.key.is_file()
    assert not list((tmp_path / "sheet").rglob("*.json"))
    for inside in (tmp_path / "other" / "key.json", tmp_path / "other" / "images" / "k.json", tmp_path / "other"):
        with pytest.raises(ReviewExportError, match="must not be inside the rater folder"):
            export(synthetic, real, tmp_path / "other", key=str(inside), n=10)
    assert not (tmp_path / "other").exists()
    with pytest.raises(ReviewExportError, match="already exists"):  # never overwrite the key of a folder handed out
        export(synthetic, real, tmp_path / "again", key=str(result.key), n=10)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ReviewExportError, match="not an empty folder"):
        export(synthetic, real, tmp_path / "busy", n=10)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_the_same_seed_gives_the_same_folder_and_another_seed_another_order(sets, tmp_path):
    synthetic, real = sets

    def run(name: str, seed: int) -> tuple[dict[str, bytes], list]:
        result = export(synthetic, real, tmp_path / name, n=30, real_share=0.2, seed=seed)
        files = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file()}
        return files, [(e["id"], e["file"]) for e in json.loads(result.key.read_text())["images"]]

    first, again, other = run("a", 7), run("b", 7), run("c", 8)
    assert first == again
    assert first[1] != other[1]


def test_manifest_paths_must_stay_inside_their_dataset_root(sets, tmp_path):
    synthetic, real = sets
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    rows = [json.loads(line) for line in synthetic.read_text().splitlines()]
    rows[0]["file_name"] = "../outside.png"
    synthetic.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UnsafePathError, match="leaves the dataset root"):
        export(synthetic, real, tmp_path / "sheet", n=200, real_share=0.0)
    assert not (tmp_path / "sheet").exists()


def test_bad_requests_are_clear_errors(sets, tmp_path):
    synthetic, real = sets
    with pytest.raises(ConfigError, match="real_share must be in"):
        export(synthetic, real, tmp_path / "s", real_share=1.0)
    with pytest.raises(ConfigError, match="n must be positive"):
        export(synthetic, real, tmp_path / "s", n=0)
    with pytest.raises(ReviewExportError, match=r"metadata.jsonl: row 1 \(id melanoma-fst1-000000\) has no 'site'"):
        export(synthetic, real, tmp_path / "s", by=["label", "site"])
    none_passed = make_synthetic(tmp_path / "bad", {("melanoma", 1): 0}, rejected=3)
    with pytest.raises(ReviewExportError, match="no synthetic image passed the filters"):
        export(none_passed, real, tmp_path / "s")


def test_synthetic_only_and_a_real_set_without_a_test_split(sets, tmp_path):
    synthetic, real = sets
    only = export(synthetic, real, tmp_path / "only", n=12, real_share=0.0)
    assert only.real == 0 and only.synthetic == 12
    rows = [json.loads(line) for line in real.read_text().splitlines()]
    for row in rows:
        row["split"] = "train"
    real.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mixed = export(synthetic, real, tmp_path / "mixed", n=20, real_share=0.2)
    assert mixed.real == 4 and any("every split" in note for note in mixed.notes)
