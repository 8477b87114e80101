"""`fairsynth validate`: clean data passes; each kind of bad input fails naming its row and file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fairsynth.cli import app
from tests.helpers import fitz_rows, make_image

runner = CliRunner()


def run_validate(*args: str):
    result = runner.invoke(app, ["validate", *args])
    return result.exit_code, result.output


def test_clean_dataset_passes(tiny_fitz):
    csv, images, _ = tiny_fitz
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 0, out
    assert "valid: 12 rows" in out


def break_one(tiny_fitz, breaker):
    csv, images, frame = tiny_fitz
    md5 = frame.md5hash[3]
    breaker(images / f"{md5}.jpg")
    return csv, images, md5


@pytest.mark.parametrize(
    "kind, breaker",
    [
        ("missing_file", lambda p: p.unlink()),
        ("empty_file", lambda p: p.write_bytes(b"")),
        ("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        ("not_an_image", lambda p: p.write_text("<html>not an image</html>")),
        ("too_small", lambda p: make_image(p, size=16)),
    ],
)
def test_each_broken_image_is_named(tiny_fitz, kind, breaker):
    csv, images, md5 = break_one(tiny_fitz, breaker)
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images), "--min-size", "64")
    assert code == 1, out
    assert f"[{kind}]" in out and md5 in out and f"{md5}.jpg" in out


def test_every_problem_is_reported_not_just_the_first(tiny_fitz):
    csv, images, frame = tiny_fitz
    (images / f"{frame.md5hash[0]}.jpg").unlink()
    (images / f"{frame.md5hash[5]}.jpg").write_bytes(b"")
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 1
    assert frame.md5hash[0] in out and frame.md5hash[5] in out
    assert "2 problems in 2 of 12 rows" in out


@pytest.mark.parametrize(
    "column, value, kind",
    [
        ("fitzpatrick_scale", 7, "fst"),
        ("fitzpatrick_scale", "dark", "fst"),
    ],
)
def test_bad_skin_type_is_named(tiny_fitz, column, value, kind):
    csv, images, frame = tiny_fitz
    frame = frame.astype({column: object})
    frame.loc[2, column] = value
    frame.to_csv(csv, index=False)
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 1, out
    assert frame.md5hash[2] in out and str(csv) in out


def test_duplicate_id_is_named(tiny_fitz):
    csv, images, frame = tiny_fitz
    frame = pd.concat([frame, frame.iloc[[4]]])
    frame.to_csv(csv, index=False)
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 1 and frame.md5hash.iloc[4] in out and "duplicate" in out.lower()


def test_missing_required_column_is_named(tiny_fitz):
    csv, images, frame = tiny_fitz
    frame.drop(columns=["fitzpatrick_scale"]).to_csv(csv, index=False)
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 1 and "fitzpatrick_scale" in out


def test_unknown_label_value_is_named(tmp_path):
    frame = pd.DataFrame(
        {"lesion_id": ["HAM_1", "HAM_2"], "image_id": ["ISIC_1", "ISIC_2"], "dx": ["mel", "melanomaa"],
         "dx_type": ["histo", "histo"], "age": [50, 60], "sex": ["male", "female"], "localization": ["back", "face"]}
    )
    for image_id in frame.image_id:
        make_image(tmp_path / "images" / f"{image_id}.jpg")
    frame.to_csv(tmp_path / "meta.csv", index=False)
    code, out = run_validate("--reader", "ham10000", str(tmp_path / "meta.csv"), "--images", str(tmp_path / "images"))
    assert code == 1 and "melanomaa" in out and "ISIC_2" in out


def write_imagefolder(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_empty_caption_when_required(tmp_path):
    make_image(tmp_path / "ds" / "a.png")
    make_image(tmp_path / "ds" / "b.png")
    root = write_imagefolder(tmp_path / "ds", [{"file_name": "a.png", "text": "a jacket"}, {"file_name": "b.png", "text": ""}])
    code, out = run_validate("--reader", "imagefolder", str(root), "--require-captions")
    assert code == 1 and "[empty_caption]" in out and "b.png" in out
    code, _ = run_validate("--reader", "imagefolder", str(root))
    assert code == 0


@pytest.mark.parametrize("name", ["../outside.png", "/etc/hostname", "sub/../../outside.png"])
def test_paths_leaving_the_root_are_refused(tmp_path, name):
    make_image(tmp_path / "outside.png")
    make_image(tmp_path / "ds" / "a.png")
    root = write_imagefolder(tmp_path / "ds", [{"file_name": "a.png"}, {"file_name": name}])
    code, out = run_validate("--reader", "imagefolder", str(root))
    assert code == 1 and "[unsafe_path]" in out and name in out


def test_symlink_out_of_the_root_is_refused(tmp_path):
    outside = make_image(tmp_path / "secret.png")
    make_image(tmp_path / "ds" / "a.png")
    os.symlink(outside, tmp_path / "ds" / "link.png")
    root = write_imagefolder(tmp_path / "ds", [{"file_name": "a.png"}, {"file_name": "link.png"}])
    code, out = run_validate("--reader", "imagefolder", str(root))
    assert code == 1 and "[unsafe_path]" in out and "link.png" in out


def test_bom_and_crlf_csv_is_read(tiny_fitz):
    csv, images, frame = tiny_fitz
    text = frame.to_csv(index=False).replace("\n", "\r\n")
    csv.write_bytes("\ufeff".encode() + text.encode())
    code, out = run_validate("--reader", "fitzpatrick17k", str(csv), "--images", str(images))
    assert code == 0, out


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda p: Image.new("L", (80, 80), 120).save(p)),
        ("CMYK", lambda p: Image.new("CMYK", (80, 80), (10, 20, 30, 0)).save(p)),
        ("RGBA", lambda p: Image.new("RGBA", (80, 80), (200, 100, 50, 128)).save(p)),
        ("I;16", lambda p: Image.fromarray(np.full((80, 80), 40000, dtype=np.uint16)).save(p)),
    ],
)
def test_unusual_modes_are_notes_not_errors(tmp_path, mode, make):
    root = tmp_path / "ds"
    root.mkdir()
    suffix = ".jpg" if mode == "CMYK" else ".png"
    make(root / f"a{suffix}")
    write_imagefolder(root, [{"file_name": f"a{suffix}"}])
    code, out = run_validate("--reader", "imagefolder", str(root))
    assert code == 0, out
    assert "[converted]" in out and "RGB" in out


def test_unknown_reader_lists_the_valid_ones(tiny_fitz):
    csv, images, _ = tiny_fitz
    code, out = run_validate("--reader", "fitz", str(csv))
    assert code == 2 and "fitzpatrick17k" in out and "ddi" in out
