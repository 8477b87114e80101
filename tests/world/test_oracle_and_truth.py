"""The oracle pool (true world images in the synthetic set's cells) and the truth read per cell."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from fairsynth.config import PrepareConfig
from fairsynth.data.records import Record, read_manifest, write_manifest
from fairsynth.world.derm import generate_world, render_layers
from fairsynth.world.judge import shipped_judge
from fairsynth.world.oracle import OracleError, build_oracle_images, world_config
from fairsynth.world.truth import read_generated, summary_line


def _synthetic(path, cells: dict[tuple[str, int], int]):
    records = [Record(f"s-{label}-{fst}-{i}", f"images/{i}.png", label, None, {"fst": fst})
               for (label, fst), n in cells.items() for i in range(n)]
    return write_manifest(records, path)


@pytest.fixture(scope="module")
def world_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    generate_world(folder, n=12, size=32, seed=0, skin_type_effect=1.0)
    return folder / "world.json"


def test_the_oracle_pool_has_the_synthetic_sets_count_in_every_cell(world_json, tmp_path):
    cells = {("melanoma", 6): 3, ("psoriasis", 1): 2}
    synthetic = _synthetic(tmp_path / "synthetic.jsonl", cells)
    prepare = PrepareConfig(resolution=[32])
    manifest = build_oracle_images(world_json, synthetic, prepare, tmp_path / "oracle")
    records = read_manifest(manifest)
    assert Counter((r.label, r.fst) for r in records) == Counter(cells)
    for record in records:
        with Image.open(tmp_path / "oracle" / record.image) as image:
            assert image.size == (32, 32)
    assert len({r.image for r in records}) == 5  # five different true images
    assert json.loads((tmp_path / "oracle" / "oracle.json").read_text())["world"]["skin_type_effect"] == 1.0

    # the same request reuses the pool; another one draws it again
    written = {r.image: (tmp_path / "oracle" / r.image).stat().st_mtime_ns for r in records}
    assert build_oracle_images(world_json, synthetic, prepare, tmp_path / "oracle") == manifest
    assert all((tmp_path / "oracle" / name).stat().st_mtime_ns == mtime for name, mtime in written.items())
    more = _synthetic(tmp_path / "more.jsonl", {("melanoma", 6): 4})
    build_oracle_images(world_json, more, prepare, tmp_path / "oracle")
    assert Counter((r.label, r.fst) for r in read_manifest(manifest)) == Counter({("melanoma", 6): 4})


def test_the_oracle_refuses_data_that_is_not_a_world(tmp_path):
    (tmp_path / "world.json").write_text(json.dumps({"generator": "someone else"}))
    with pytest.raises(OracleError, match="real data has no truth to draw more of"):
        world_config(tmp_path / "world.json")


def test_an_unknown_class_in_the_synthetic_set_names_the_row(world_json, tmp_path):
    synthetic = _synthetic(tmp_path / "synthetic.jsonl", {("lichen planus", 5): 1})
    with pytest.raises(OracleError, match="row 1 .*'lichen planus'"):
        build_oracle_images(world_json, synthetic, PrepareConfig(resolution=[32]), tmp_path / "oracle")


def test_the_truth_is_read_per_cell_for_candidates_and_delivered_images(tmp_path):
    """Psoriasis on type II asked 8 times: 4 true psoriasis renders and 4 true nevus renders, half
    of each delivered; the judge must read half of either group as asked."""
    (tmp_path / "images").mkdir()
    rows = []
    for i, painted in enumerate(["psoriasis"] * 4 + ["nevocytic nevus"] * 4):
        image = render_layers(painted, 2, np.random.default_rng(100 + i), size=64, hair=False, skin_type_effect=1.0).image
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        selected = i % 2 == 0
        rows.append({"file_name": f"images/{i}.png", "label": "psoriasis", "fst": 2, "accepted": selected,
                     "selected": selected})
    (tmp_path / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge, report = shipped_judge(1.0)
    truth = read_generated(tmp_path, judge, report)
    cell = truth["cells"]["psoriasis|2"]
    assert (cell["candidates"], cell["delivered"]) == (8, 4)
    assert cell["candidates_class_as_asked"] == 0.5 and cell["class_as_asked"] == 0.5
    assert cell["accepted_class_as_asked"] == 0.5 and cell["rejected_class_as_asked"] == 0.5
    assert cell["fst_within_one"] == 1.0 and truth["delivered_V_VI"] == 0 and truth["class_as_asked_V_VI"] is None
    assert truth["judge"]["held_out_min_cell"] == min(report["held_out_accuracy_by_cell"].values())
    assert "reads the asked class in 50% of the 4 delivered images" in summary_line(truth)
