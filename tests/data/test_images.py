"""Every image read is bounded and every hostile file is a problem naming it.

The hostile files come from :mod:`tests.hostile`: a 20000 x 20000 PNG bomb, PNG chunks that
inflate beyond Pillow's limit, broken EXIF, a zero-byte file, an HTML page named .jpg, a
symlink loop, a 5,000-character path, a NUL byte. The formats that must keep working (CMYK,
16-bit, RGBA, GIF, WebP, TIFF, EXIF rotation) are read, not refused.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, image_size, max_image_pixels, read_image, set_max_image_pixels,
)
from fairsynth.data.preprocess import load_rgb
from tests import hostile
from tests.helpers import fitz_rows, make_image

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src" / "fairsynth"


def imagefolder(root: Path, names: list[str]) -> Path:
    """An imagefolder dataset: a good image plus ``names``, one row each."""
    make_image(root / "good.png")
    rows = [{"file_name": "good.png"}] + [{"file_name": name} for name in names]
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


HOSTILE = {
    # case: (maker(folder) -> name, expected kind, words the message must hold)
    "bomb": (lambda d: hostile.image_bomb(d), "too_large", "20000 x 20000"),
    "huge iCCP": (lambda d: hostile.png_with_huge_chunk(d, "profile.png", b"iCCP"), "bad_metadata", "MAX_TEXT_CHUNK"),
    "huge zTXt": (lambda d: hostile.png_with_huge_chunk(d, "text.png", b"zTXt"), "bad_metadata", "MAX_TEXT_CHUNK"),
    "EXIF orientation 9": (lambda d: hostile.jpeg_with_orientation(d, "turned.jpg", 9), "bad_exif", "orientation is 9"),
    "zero bytes": (lambda d: hostile.zero_byte(d), "empty_file", "0 bytes"),
    "HTML as .jpg": (lambda d: hostile.html_named_jpg(d), "not_an_image", "HTML page"),
    "symlink loop": (lambda d: hostile.symlink_loop(d), "unreadable", "loop"),
    "5,000-character path": (lambda d: hostile.long_path(5000), "unreadable", "too long"),
    "NUL byte": (lambda d: "a\x00b.jpg", "unreadable", "NUL byte"),
    "truncated JPEG": (lambda d: hostile.truncated_jpeg(d), "truncated", "cannot be decoded"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_validate_names_each_hostile_file(tmp_path, case):
    make, kind, words = HOSTILE[case]
    root = tmp_path / "ds"
    root.mkdir()
    name = make(root)
    imagefolder(root, [name])
    result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    line = next(line for line in result.output.splitlines() if f"[{kind}]" in line)
    assert words in line
    shown = name.replace("\x00", "\\x00")
    assert shown[:60] in line  # the file is named
    assert "invalid: 1 problems in 1 of 2 rows" in result.output


def test_fitzpatrick_bomb_is_a_problem_listed_with_the_others(tiny_fitz):
    """The case that used to end in a raw DecompressionBombError traceback."""
    csv, images, frame = tiny_fitz
    bomb, missing = frame.md5hash[2], frame.md5hash[7]
    (images / f"{bomb}.jpg").unlink()
    hostile.image_bomb(images, f"{bomb}.jpg")  # a PNG named .jpg, as scraped files often are
    (images / f"{missing}.jpg").unlink()
    before = Image.MAX_IMAGE_PIXELS
    result = runner.invoke(app, ["validate", "--reader", "fitzpatrick17k", str(csv), "--images", str(images)])
    assert result.exit_code == 1, result.output
    assert "DecompressionBomb" not in result.output and "Traceback" not in result.output
    assert re.search(rf"{bomb}\.jpg \(row {bomb}\): \[too_large\] image is 20000 x 20000 = 400,000,000 pixels", result.output)
    assert f"row {missing}" in result.output and "[missing_file]" in result.output
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's global bound untouched


def test_prepare_stops_on_a_bomb_or_drops_it_as_the_recipe_says(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        make_image(root / f"ok{i}.png", size=64, seed=i)
    hostile.image_bomb(root)
    names = [f"ok{i}.png" for i in range(4)] + ["bomb.png"]
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "label": "x"}) + "\n" for n in names))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "data": {"reader": "imagefolder", "path": str(root)},
        "prepare": {"output": str(tmp_path / "out"), "resolution": [32], "estimate_fst": False,
                    "split": {"val": 0.0, "test": 0.0, "stratify": []}},
    }))
    stopped = runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert stopped.exit_code == 1 and "[too_large]" in stopped.output and "bomb.png" in stopped.output
    assert not (tmp_path / "out").exists()
    dropped = runner.invoke(app, ["prepare", "--config", str(recipe), "--drop-invalid"])
    assert dropped.exit_code == 0, dropped.output
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert list(rejects.kind) == ["too_large"] and rejects.file[0].endswith("bomb.png")
    assert len((tmp_path / "out" / "metadata.jsonl").read_text().splitlines()) == 4


def test_the_limit_is_a_recipe_knob(tmp_path):
    root = tmp_path / "ds"
    make_image(root / "a.png", size=40)
    Image.new("RGB", (40, 30)).save(root / "wide.png")
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "label": "x"}) + "\n" for n in ("a.png", "wide.png")))
    code = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root), "--max-image-pixels", "1500"])
    refused = [line for line in code.output.splitlines() if "[too_large]" in line]
    assert code.exit_code == 1 and len(refused) == 1 and "a.png" in refused[0]  # 40 x 30 = 1,200 passes
    assert "40 x 40 = 1,600 pixels, above the limit of 1,500" in refused[0]
    assert runner.invoke(app, ["validate", "--reader", "imagefolder", str(root), "--max-image-pixels", "1600"]).exit_code == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "data": {"reader": "imagefolder", "path": str(root), "max_image_pixels": 1500},
        "prepare": {"output": str(tmp_path / "out"), "resolution": [16], "estimate_fst": False,
                    "split": {"val": 0.0, "test": 0.0, "stratify": []}, "drop_invalid": True},
    }))
    try:
        result = runner.invoke(app, ["prepare", "--config", str(recipe)])
        assert result.exit_code == 0, result.output
        assert max_image_pixels() == 1500  # the command applies the recipe's bound to every read
        assert list(pd.read_csv(tmp_path / "out" / "rejects.csv").kind) == ["too_large"]
    finally:
        set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


def test_a_limit_above_pillows_raises_pillows_with_a_warning(tmp_path, caplog):
    before = Image.MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_IMAGE_PIXELS == 2 * before  # the default is Pillow's own hard bound
    path = tmp_path / "bomb.png"
    hostile.image_bomb(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="fairsynth.data.images"):
            set_max_image_pixels(400_000_000)
        assert Image.MAX_IMAGE_PIXELS == 200_000_000
        assert "raising PIL.Image.MAX_IMAGE_PIXELS to 200000000" in caplog.text
        assert image_size(path) == (20000, 20000)  # allowed now: the header is read, nothing decoded
        with pytest.raises(ImageReadError, match="20000 x 20000"):
            image_size(path, max_pixels=100_000_000)  # an explicit bound still applies
    finally:
        set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)
        Image.MAX_IMAGE_PIXELS = before
    with pytest.raises(ValueError, match="positive"):
        set_max_image_pixels(0)


def test_every_reader_of_user_images_refuses_the_bomb_before_decoding(tmp_path):
    """The shells that open images all go through the one bounded opener."""
    from fairsynth.data.records import Record
    from fairsynth.downstream.data import ImageSet, Sample, _image_size
    from fairsynth.report.collect import ReportInputError
    from fairsynth.report.sections import thumbnail
    from fairsynth.review.export import plain_png
    from fairsynth.training.data import make_examples, load_pixels
    from fairsynth.world.truth import _load

    name = hostile.image_bomb(tmp_path)
    path = tmp_path / name
    sample = Sample(path, "x", "all", False, "bomb")
    readers = {
        "load_rgb (prepare, generate sources, evaluate, filter)": lambda: load_rgb(path),
        "training examples": lambda: make_examples([Record("b", name)], tmp_path, (64, 64)),
        "training pixels": lambda: load_pixels(path, (64, 64)),
        "downstream sizes": lambda: _image_size(path),
        "downstream images": lambda: ImageSet([sample], ["x"], 32).load(0),
        "review export": lambda: plain_png(path, (64, 64)),
        "world truth": lambda: _load(tmp_path, [{"file_name": name}], 32),
    }
    for what, read in readers.items():
        with pytest.raises(ImageReadError, match=r"bomb\.png: image is 20000 x 20000") as caught:
            read()
        assert caught.value.kind == "too_large", what
    with pytest.raises(ReportInputError, match="20000 x 20000"):
        thumbnail(path)


def test_no_module_opens_an_image_file_but_the_bounded_opener():
    opened = {
        str(path.relative_to(SRC)): path.read_text().count("Image.open(")
        for path in SRC.rglob("*.py")
        if "Image.open(" in path.read_text()
    }
    # world/oracle.py decodes a JPEG it has just encoded in memory, never a file
    assert opened == {"data/images.py": 1, "world/oracle.py": 1}
    assert "io.BytesIO(encode_jpeg(" in (SRC / "world" / "oracle.py").read_text()


def test_good_formats_are_read_and_converted(tmp_path):
    root = tmp_path / "ds"
    made = hostile.good_formats(root)
    imagefolder(root, list(made.values()))
    result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
    assert result.exit_code == 0, result.output
    for what, name in made.items():
        image = load_rgb(root / name)
        assert image.mode == "RGB", what
        assert image.size == ((64, 96) if what == "EXIF-rotated JPEG" else (80, 80)), what
    rotated = np.asarray(load_rgb(root / made["EXIF-rotated JPEG"]))
    assert rotated[4, 32, 0] > 200 and rotated[4, 32, 2] < 80  # the stored left (yellow) half is on top
    assert image_size(root / made["EXIF-rotated JPEG"], oriented=True) == (64, 96)
    deep = np.asarray(load_rgb(root / made["16-bit PNG"]))
    assert abs(int(deep[0, 0, 0]) - round(50000 / 65535 * 255)) <= 1


def test_corrupt_exif_without_orientation_is_a_note_and_the_image_is_kept(tmp_path):
    root = tmp_path / "ds"
    name = hostile.jpeg_with_corrupt_exif(root, "odd.jpg")
    imagefolder(root, [name])
    result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
    assert result.exit_code == 0, result.output
    assert "note:" in result.output and "[bad_exif]" in result.output and "odd.jpg" in result.output
    assert load_rgb(root / name).size == (96, 96)


def test_read_image_decodes_within_the_limit(tmp_path):
    path = make_image(tmp_path / "a.png", size=50)
    assert read_image(path).size == (50, 50)
    with pytest.raises(ImageReadError) as caught:
        read_image(path, max_pixels=2499)
    assert caught.value.kind == "too_large" and "50 x 50 = 2,500 pixels" in str(caught.value)
    assert str(path) in str(caught.value)
