"""Manifests round-trip through JSONL, CSV and Parquet, and are a Hugging Face imagefolder."""

from __future__ import annotations

import pandas as pd
import pytest

from fairsynth.data.records import Record, read_manifest, write_manifest
from tests.helpers import make_image


def sample_records() -> list[Record]:
    return [
        Record("a1", "images/a.png", "melanoma", "a melanoma on FST VI", {"fst": 6, "split": "train", "ita": -12.5}),
        Record("b2", "images/b.png", "nevus", None, {"fst": None, "split": "test", "lesion_id": "L1"}),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = write_manifest(sample_records(), tmp_path / f"metadata{suffix}")
    back = read_manifest(path)
    assert [r.id for r in back] == ["a1", "b2"]
    assert back[0].attributes["fst"] == 6 and back[1].attributes["fst"] is None
    assert back[0].caption == "a melanoma on FST VI" and back[1].caption is None
    assert back[1].attributes["lesion_id"] == "L1" and back[0].attributes["ita"] == -12.5


def test_pandas_reads_the_jsonl(tmp_path):
    path = write_manifest(sample_records(), tmp_path / "metadata.jsonl")
    frame = pd.read_json(path, lines=True)
    assert list(frame.columns[:4]) == ["file_name", "id", "label", "caption"]
    assert frame.loc[0, "fst"] == 6


def test_datasets_imagefolder_reads_the_manifest(tmp_path):
    datasets = pytest.importorskip("datasets")
    for name in ("a", "b"):
        make_image(tmp_path / "images" / f"{name}.png", size=32)
    write_manifest(sample_records(), tmp_path / "metadata.jsonl")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path), split="train")
    assert loaded.num_rows == 2
    assert set(loaded.column_names) >= {"image", "label", "caption", "fst"}
    assert loaded[0]["image"].size == (32, 32)


def test_unknown_suffix_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        write_manifest(sample_records(), tmp_path / "m.txt")


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"file_name": "a.png"}\n{broken\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_manifest(path)


@pytest.mark.parametrize("fst, words", [("Infinity", "inf is not a whole number"), ("9", "outside 1-6"),
                                        ("3.5", "not a whole number"), ("9" * 5000, "cannot be read")])
def test_a_manifest_skin_type_that_is_none_is_named_with_its_row(tmp_path, fst, words):
    """A user's manifest (a downstream test set) with a skin type that is not one."""
    path = tmp_path / "test.jsonl"
    path.write_text('{"file_name": "a.png", "fst": 3}\n' + f'{{"file_name": "b.png", "fst": {fst}}}\n')
    with pytest.raises(ValueError, match=rf"test\.jsonl.*2.*{words}"):
        read_manifest(path)


def test_csv_manifests_read_whole_skin_types_back(tmp_path):
    records = [Record("a", "a.png", "x", attributes={"fst": 3}), Record("b", "b.png", "x", attributes={"fst": None})]
    write_manifest(records, tmp_path / "m.csv")
    assert [r.fst for r in read_manifest(tmp_path / "m.csv")] == [3, None]
