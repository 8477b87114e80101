"""The oracle pool (true world images in the synthetic set's cells) and the truth read per cell."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import torch
import pytest
from PIL import Image

from fairsynth.config import PrepareConfig
from fairsynth.data.records import Record, read_manifest, write_manifest
from fairsynth.world.derm import generate_world, render_layers
from fairsynth.world.judge import JUDGE_CLASSES, shipped_judge
from fairsynth.world.oracle import OracleError, build_oracle_images, world_config
from fairsynth.world.truth import in_support, read_generated, summary_line, true_render_features


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


class _Always(torch.nn.Module):
    """A stand-in second judge that reads one class in every image."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.index = JUDGE_CLASSES.index(label)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3)) * self.scale  # (B, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(images),), self.index), len(JUDGE_CLASSES)).float()


def _write_set(folder, cells: dict[tuple[str, int], list[np.ndarray]]) -> None:
    (folder / "images").mkdir()
    rows = []
    for (label, fst), images in cells.items():
        for image in images:
            name = f"images/{len(rows)}.png"
            Image.fromarray(image).save(folder / name)
            rows.append({"file_name": name, "label": label, "fst": fst, "accepted": True, "selected": True})
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _renders(label: str, fst: int, n: int, seed: int) -> list[np.ndarray]:
    return [render_layers(label, fst, np.random.default_rng((seed, i)), size=64, skin_type_effect=1.0).image
            for i in range(n)]


def test_a_second_judge_is_read_beside_the_first_and_both_must_agree(tmp_path):
    """Six true melanoma renders on type VI asked as melanoma, six true psoriasis renders asked as
    psoriasis; a second judge that reads psoriasis everywhere agrees on the psoriasis cell only."""
    _write_set(tmp_path, {("melanoma", 6): _renders("melanoma", 6, 6, 7), ("psoriasis", 6): _renders("psoriasis", 6, 6, 8)})
    judge, report = shipped_judge(1.0)
    truth = read_generated(tmp_path, judge, report, second=(_Always("psoriasis"), {"held_out_accuracy": 0.5}))
    assert truth["class_as_asked_V_VI"] == 1.0
    assert truth["cells"]["melanoma|6"]["second_class_as_asked"] == 0.0
    assert truth["cells"]["psoriasis|6"]["second_class_as_asked"] == 1.0
    assert truth["cells"]["melanoma|6"]["both_as_asked"] == 0.0 and truth["both_as_asked_V_VI"] == 0.5
    assert truth["second_class_as_asked_V_VI"] == 0.5
    assert "both in 50% (50% on V-VI)" in summary_line(truth)


def test_in_support_tells_true_renders_of_a_cell_from_images_a_judge_merely_reads_as_it(tmp_path):
    """An image can be read as the asked class and still look like nothing of its cell: true
    renders of melanoma on type VI are inside the support of that cell's true renders; the same
    cell asked with psoriasis renders, and with melanoma renders whose texture is replaced by
    noise of the same colours, is not."""
    judge, report = shipped_judge(1.0)
    support = true_render_features([judge, judge], 1.0, per_cell=30)
    true_vi = _renders("melanoma", 6, 10, 21)
    rng = np.random.default_rng(0)
    shuffled = [image.reshape(-1, 3)[rng.permutation(64 * 64)].reshape(64, 64, 3) for image in true_vi]
    folders = {}
    for name, images in (("true", true_vi), ("other class", _renders("psoriasis", 6, 10, 22)), ("noise", shuffled)):
        folders[name] = tmp_path / name.replace(" ", "-")
        folders[name].mkdir()
        _write_set(folders[name], {("melanoma", 6): images})
    read = {name: read_generated(folder, judge, report, second=(judge, report), support=support)
            for name, folder in folders.items()}
    assert read["true"]["cells"]["melanoma|6"]["in_support"] >= 0.7
    assert read["other class"]["cells"]["melanoma|6"]["in_support"] <= 0.1
    assert read["noise"]["cells"]["melanoma|6"]["in_support"] <= 0.1
    # the calibration: held-out true renders of every cell, inside their own cell's support
    assert read["true"]["in_support_true"] >= 0.85
    assert in_support(support["melanoma|6"], support["psoriasis|6"]["held_out"]).count(True) <= 3
