"""`fairsynth prepare`: outputs, refusal of invalid data, --drop-invalid, conversions, crash resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.data.records import read_manifest
from fairsynth.recipe import load_recipe
from fairsynth.world.derm import generate_world
from tests.helpers import make_image

runner = CliRunner()


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_world(root, n=60, seed=3, size=64)
    return root


def write_recipe(path: Path, world: Path, output: Path, **prepare) -> Path:
    recipe = {
        "name": "t",
        "data": {
            "reader": "fitzpatrick17k",
            "path": str(world / "fitzpatrick17k.csv"),
            "caption_template": "A dermoscopic image of {diagnosis} on Fitzpatrick skin type {fst_roman}",
        },
        "prepare": {"output": str(output), "resolution": [32], "hair_removal": {"enabled": True}, **prepare},
    }
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def test_prepare_writes_a_complete_imagefolder(tmp_path, small_world):
    out = tmp_path / "prepared"
    recipe = write_recipe(tmp_path / "r.yaml", small_world, out)
    result = runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    records = read_manifest(out / "metadata.jsonl")
    assert len(records) == 60
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(r.caption.startswith("A dermoscopic image of ") for r in records)
    assert all(isinstance(r.attributes["ita"], float) and 1 <= r.attributes["fst_ita"] <= 6 for r in records)
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(files) == 60 and all(f.endswith(".png") for f in files)
    with Image.open(out / records[0].image) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    counts = pd.read_csv(out / "counts.csv", index_col=0)
    assert counts.loc["total", "total"] == 60
    assert load_recipe(out / "config.yaml").prepare.resolution == [32]  # the resolved config is beside it
    assert "class x Fitzpatrick skin type" in result.output and "total" in result.output
    assert not (tmp_path / ".prepared.partial").exists()


def test_overrides_reach_the_stage(tmp_path, small_world):
    out = tmp_path / "prepared"
    recipe = write_recipe(tmp_path / "r.yaml", small_world, out)
    result = runner.invoke(app, ["prepare", "--config", str(recipe), "prepare.resolution=[48, 32]", "prepare.crop=none"])
    assert result.exit_code == 0, result.output
    first = read_manifest(out / "metadata.jsonl")[0]
    with Image.open(out / first.image) as image:
        assert image.size == (48, 32)


def break_world(src: Path, dst: Path) -> tuple[str, str]:
    """Copy a world and break two images: one missing, one truncated."""
    import shutil

    shutil.copytree(src, dst)
    frame = pd.read_csv(dst / "fitzpatrick17k.csv")
    missing, truncated = frame.md5hash[0], frame.md5hash[1]
    (dst / "images" / f"{missing}.jpg").unlink()
    path = dst / "images" / f"{truncated}.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return missing, truncated


def test_invalid_dataset_is_refused_and_nothing_is_written(tmp_path, small_world):
    missing, truncated = break_world(small_world, tmp_path / "w")
    out = tmp_path / "prepared"
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "w", out)
    result = runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert result.exit_code == 1
    assert missing in result.output and truncated in result.output and "--drop-invalid" in result.output
    assert not out.exists() and not (tmp_path / ".prepared.partial").exists()


def test_drop_invalid_writes_rejects(tmp_path, small_world):
    missing, truncated = break_world(small_world, tmp_path / "w")
    out = tmp_path / "prepared"
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "w", out)
    result = runner.invoke(app, ["prepare", "--config", str(recipe), "--drop-invalid"])
    assert result.exit_code == 0, result.output
    rejects = pd.read_csv(out / "rejects.csv")
    assert set(rejects.id) == {missing, truncated}
    assert set(rejects.kind) == {"missing_file", "truncated"}
    ids = {r.id for r in read_manifest(out / "metadata.jsonl")}
    assert len(ids) == 58 and missing not in ids


def test_unusual_modes_and_exif_are_converted(tmp_path):
    root = tmp_path / "ds"
    Image.new("L", (64, 64), 90).save(root.mkdir() or root / "gray.png")
    Image.new("CMYK", (64, 64), (0, 80, 160, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((64, 64), 50000, dtype=np.uint16)).save(root / "deep.png")
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(root / "clear.png")
    # A landscape image stored with EXIF orientation 6 (rotate 90 degrees clockwise to view).
    wide = Image.new("RGB", (96, 64), (0, 0, 255))
    wide.paste((255, 255, 0), (0, 0, 48, 64))  # left half yellow in storage
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(root / "rotated.jpg", exif=exif.tobytes(), quality=100)
    names = ["gray.png", "cmyk.jpg", "deep.png", "clear.png", "rotated.jpg"]
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "label": "x"}) + "\n" for n in names))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "data": {"reader": "imagefolder", "path": str(root)},
        "prepare": {"output": str(tmp_path / "out"), "resolution": [32], "crop": "none", "estimate_fst": False,
                    "split": {"stratify": []}},
    }))
    result = runner.invoke(app, ["prepare", "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    by_source = {r.attributes["source_file"]: r for r in read_manifest(tmp_path / "out" / "metadata.jsonl")}
    load = lambda n: np.asarray(Image.open(tmp_path / "out" / by_source[n].image))  # noqa: E731
    assert all(load(n).shape == (32, 32, 3) for n in names)
    assert abs(int(load("deep.png")[0, 0, 0]) - round(50000 / 65535 * 255)) <= 1  # 16-bit rescaled, not clipped
    assert tuple(load("clear.png")[0, 0]) == (255, 255, 255)  # transparent -> white
    rotated = load("rotated.jpg")
    # After applying orientation 6 the stored left half (yellow) is on top.
    assert rotated[4, 16, 0] > 200 and rotated[4, 16, 2] < 60 and rotated[28, 16, 2] > 200
    notes = (tmp_path / "out" / "notes.txt").read_text()
    assert notes.count("[converted]") == 4


def test_killed_prepare_resumes_without_duplicates(tmp_path):
    world = tmp_path / "world"
    generate_world(world, n=240, seed=1, size=128)
    out = tmp_path / "prepared"
    recipe = write_recipe(tmp_path / "r.yaml", world, out)
    command = [sys.executable, "-m", "fairsynth.cli", "prepare", "--config", str(recipe)]
    partial = tmp_path / ".prepared.partial" / "images"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if partial.is_dir() and len(os.listdir(partial)) >= 40:
            break
        time.sleep(0.05)
    assert process.poll() is None, "prepare finished before it could be killed; make the world larger"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    done_before = {p.name: p.stat().st_mtime_ns for p in partial.iterdir() if p.suffix == ".png"}
    assert len(done_before) >= 40

    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    records = read_manifest(out / "metadata.jsonl")
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(records) == 240 and len({r.id for r in records}) == 240
    assert len(files) == 240 and all(f.endswith(".png") for f in files)  # no temp files, no duplicates
    for name, mtime in done_before.items():  # finished work was kept, not redone
        assert (out / "images" / name).stat().st_mtime_ns == mtime
    for record in records:
        with Image.open(out / record.image) as image:
            image.load()  # every file complete
