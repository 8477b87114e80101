"""Dataset readers: the real public metadata files, small synthetic layouts, and bad input.

Expected numbers for the real files are computed here with pandas, independently of the
readers (which parse with the ``csv`` module), and the counts the dataset papers state are
asserted as well.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from fairsynth.config import DataConfig
from fairsynth.data.fst import group_of
from fairsynth.data.problems import Problem
from fairsynth.data.readers import READERS, ReadResult, read_dataset
from fairsynth.data.readers.kohya import expand_repeats
from fairsynth.io import resolve_inside
from tests.helpers import make_image

ALL_READERS = ("csv", "ddi", "deepfashion", "fitzpatrick17k", "ham10000", "imagefolder", "isic2019", "kohya", "mvtec")

FITZ_HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum"
)
DDI_HEADER = ",DDI_ID,DDI_file,skin_tone,malignant,disease"
HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"
ISIC_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"


def read(reader: str, path: Path, images: Path | None = None, **options) -> ReadResult:
    """Call a registered reader the way ``read_dataset`` does."""
    return READERS.get(reader)(path, images, DataConfig(reader=reader, path=str(path), **options))


def write(path: Path, *lines: str, newline: str = "\n", bom: bool = False) -> Path:
    """A text file of ``lines``; optionally with CRLF line ends and a UTF-8 byte-order mark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def only(result: ReadResult, kind: str) -> list[Problem]:
    return [p for p in result.problems if p.kind == kind]


def fitz_row(md5: str, scale: str = "3", label: str = "psoriasis") -> str:
    return f"{md5},{scale},{scale},{label},inflammatory,non-neoplastic,,https://x.org/{md5}.jpg,x{md5}jpg.jpg"


def ham_row(image_id: str, dx: str = "nv", lesion: str = "HAM_0000001", age: str = "45.0") -> str:
    return f"{lesion},{image_id},{dx},histo,{age},female,back,vidir_modern"


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


def test_every_reader_registers_itself_with_help():
    assert set(ALL_READERS) <= set(READERS.names())
    for entry in READERS.entries():
        assert entry.help, f"reader {entry.name} has no help text"


# --------------------------------------------------------------------------------------
# Real metadata files (../shared/data)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitzpatrick(shared_data: Path) -> tuple[ReadResult, pd.DataFrame]:
    path = shared_data / "fitzpatrick17k.csv"
    return read("fitzpatrick17k", path), pd.read_csv(path)


def test_fitzpatrick17k_rows_and_skin_types(fitzpatrick, shared_data):
    result, frame = fitzpatrick
    assert result.problems == []
    assert len(result.records) == len(frame) == 16_577
    assert [r.id for r in result.records] == frame.md5hash.tolist()
    assert all(r.image == f"{r.id}.jpg" for r in result.records)
    assert result.root == shared_data / "images"

    counts = frame.fitzpatrick_scale.value_counts()
    expected = Counter({None if scale == -1 else int(scale): n for scale, n in counts.items()})
    assert Counter(r.fst for r in result.records) == expected
    assert expected[None] == 565
    assert all(r.attributes["fst_group"] == group_of(r.fst) for r in result.records)
    centaur = Counter(None if v == -1 else int(v) for v in frame.fitzpatrick_centaur)
    assert Counter(r.attributes["fitzpatrick_centaur"] for r in result.records) == centaur


def test_fitzpatrick17k_labels_and_attributes(fitzpatrick):
    result, frame = fitzpatrick
    labels = Counter(r.label for r in result.records)
    assert len(labels) == frame.label.nunique() == 114
    assert labels == Counter(frame.label)
    assert all(r.attributes["diagnosis"] == r.label for r in result.records)
    three = Counter(r.attributes["three_partition_label"] for r in result.records)
    assert three == Counter(frame.three_partition_label)
    assert sum(r.attributes["qc"] is not None for r in result.records) == frame.qc.notna().sum()
    assert {r.attributes["source"] for r in result.records} == {"fitzpatrick17k"}


@pytest.mark.parametrize("column", ["three_partition_label", "nine_partition_label"])
def test_fitzpatrick17k_label_column(shared_data, column):
    path = shared_data / "fitzpatrick17k.csv"
    result = read("fitzpatrick17k", path, label_column=column)
    frame = pd.read_csv(path)
    assert Counter(r.label for r in result.records) == Counter(frame[column])
    # the condition name stays available to caption templates
    assert Counter(r.attributes["diagnosis"] for r in result.records) == Counter(frame.label)


def test_fitzpatrick17k_unknown_label_column_names_the_valid_ones(shared_data):
    result = read("fitzpatrick17k", shared_data / "fitzpatrick17k.csv", label_column="diagnosis")
    (problem,) = result.problems
    assert problem.kind == "bad_label_column"
    for valid in ("label", "nine_partition_label", "three_partition_label"):
        assert valid in problem.message
    assert result.records == []


def test_skin_diff_subset_drops_its_index_column(shared_data):
    path = shared_data / "skin-diff_Fitz_subset.csv"
    frame = pd.read_csv(path, index_col=0)
    result = read("fitzpatrick17k", path)
    assert result.problems == []
    assert len(result.records) == len(frame) == 2_707
    assert [r.id for r in result.records] == frame.md5hash.tolist()
    assert Counter(r.fst for r in result.records) == Counter(frame.fitzpatrick_scale.astype(int))
    assert len({r.label for r in result.records}) == frame.label.nunique() == 7
    assert not any(key.startswith("Unnamed") or key == "" for r in result.records for key in r.attributes)


def test_ddi_rows_groups_and_malignancy(shared_data):
    path = shared_data / "ddi_metadata.csv"
    frame = pd.read_csv(path, index_col=0)
    result = read("ddi", path)
    assert result.problems == []
    assert len(result.records) == len(frame) == 653
    assert result.root == shared_data / "images"

    groups = {12: "I-II", 34: "III-IV", 56: "V-VI"}
    assert Counter(r.attributes["fst_group"] for r in result.records) == Counter(frame.skin_tone.map(groups))
    assert all(r.fst is None for r in result.records)
    assert Counter(r.attributes["malignant"] for r in result.records) == Counter(frame.malignant.astype(bool))
    assert all(isinstance(r.attributes["malignant"], bool) for r in result.records)
    assert [r.image for r in result.records] == frame.DDI_file.tolist()
    assert [r.label for r in result.records] == frame.disease.tolist()
    assert {"8", "54", "55"}.isdisjoint(r.id for r in result.records)


HAM_DIAGNOSES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


def test_ham10000_rows_and_dx_mapping(shared_data):
    path = shared_data / "HAM10000_metadata.csv"
    frame = pd.read_csv(path)
    result = read("ham10000", path)
    assert result.problems == []
    assert len(result.records) == len(frame) == 10_015
    assert Counter(r.label for r in result.records) == Counter(frame.dx)
    for record in result.records:
        assert record.attributes["diagnosis"] == HAM_DIAGNOSES[record.label]
        assert record.image == f"{record.id}.jpg"
        assert record.fst is None
    assert [r.attributes["lesion_id"] for r in result.records] == frame.lesion_id.tolist()
    assert sum(r.attributes["age"] is None for r in result.records) == frame.age.isna().sum()
    assert Counter(r.attributes["dataset"] for r in result.records) == Counter(frame.dataset)


def test_ham10000_kaggle_copy_without_dataset_column(shared_data, tmp_path):
    frame = pd.read_csv(shared_data / "HAM10000_metadata.csv").drop(columns="dataset")
    path = tmp_path / "HAM10000_metadata.csv"
    frame.to_csv(path, index=False)
    result = read("ham10000", path)
    assert result.problems == []
    assert len(result.records) == 10_015
    assert "dataset" not in result.records[0].attributes


def test_image_paths_resolve_under_the_root(shared_data, tmp_path):
    """Record.image is relative to ReadResult.root: placeholder images for five real rows."""
    frame = pd.read_csv(shared_data / "ddi_metadata.csv", index_col=0).head(5)
    path = tmp_path / "ddi_metadata.csv"
    frame.to_csv(path)  # with pandas' index column, as the real file
    for name in frame.DDI_file:
        make_image(tmp_path / "DDI" / "images" / name, size=8)
    result = read_dataset(DataConfig(reader="ddi", path=str(path), images=str(tmp_path / "DDI" / "images")))
    assert len(result.records) == 5
    assert all(resolve_inside(result.root, r.image).is_file() for r in result.records)


# --------------------------------------------------------------------------------------
# CSV quirks
# --------------------------------------------------------------------------------------


def test_bom_and_crlf_read_correctly(tmp_path):
    rows = (HAM_HEADER, ham_row("ISIC_1"), ham_row("ISIC_2", dx="mel"))
    path = write(tmp_path / "meta.csv", *rows, newline="\r\n", bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbflesion_id,") and b"\r\n" in path.read_bytes()
    result = read("ham10000", path)
    assert result.problems == []
    assert [(r.id, r.label, r.attributes["lesion_id"], r.attributes["dataset"]) for r in result.records] == [
        ("ISIC_1", "nv", "HAM_0000001", "vidir_modern"),
        ("ISIC_2", "mel", "HAM_0000001", "vidir_modern"),
    ]


@pytest.mark.parametrize("index_header", ["", "Unnamed: 0"])
def test_leading_index_column_is_dropped(tmp_path, index_header):
    path = write(
        tmp_path / "ddi.csv",
        f"{index_header},DDI_ID,DDI_file,skin_tone,malignant,disease",
        "0,1,000001.png,56,TRUE,melanoma-in-situ",
        "1,2,000002.png,12,FALSE,verruca-vulgaris",
    )
    result = read("ddi", path)
    assert result.problems == []
    assert [(r.id, r.image, r.attributes["fst_group"], r.attributes["malignant"]) for r in result.records] == [
        ("1", "000001.png", "V-VI", True),
        ("2", "000002.png", "I-II", False),
    ]


def test_blank_lines_padding_and_quoted_newlines_keep_line_numbers(tmp_path):
    path = write(
        tmp_path / "meta.csv",
        HAM_HEADER,
        "",
        'HAM_1 , ISIC_1 ,nv,histo,40,female,"back,\nlower",vidir_modern',
        ham_row("ISIC_2", dx="bad"),
    )
    result = read("ham10000", path)
    assert result.records[0].id == "ISIC_1"
    assert result.records[0].attributes["localization"] == "back,\nlower"
    (problem,) = result.problems
    assert (problem.row_id, problem.line) == ("ISIC_2", 5)


# --------------------------------------------------------------------------------------
# Table-level problems: every one reported, naming the row id and the metadata file
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reader, header, row, dropped",
    [
        ("fitzpatrick17k", FITZ_HEADER, fitz_row("a" * 32), "fitzpatrick_scale"),
        ("ddi", DDI_HEADER, "0,1,000001.png,56,TRUE,melanoma-in-situ", "skin_tone"),
        ("ham10000", HAM_HEADER, ham_row("ISIC_1"), "dx"),
        ("isic2019", ISIC_HEADER, "ISIC_1,1,0,0,0,0,0,0,0,0", "SCC"),
    ],
)
def test_missing_column_is_named(tmp_path, reader, header, row, dropped):
    columns = header.split(",")
    keep = [i for i, name in enumerate(columns) if name != dropped]
    path = write(tmp_path / "meta.csv", *(",".join(line.split(",")[i] for i in keep) for line in (header, row)))
    result = read(reader, path)
    (problem,) = result.problems
    assert problem.kind == "missing_column"
    assert repr(dropped) in problem.message
    assert problem.file == str(path)
    assert result.records == []


def test_every_missing_column_is_reported(tmp_path):
    path = write(tmp_path / "meta.csv", "lesion_id,image_id,dx_type,age,sex", "HAM_1,ISIC_1,histo,40,male")
    result = read("ham10000", path)
    assert sorted(p.message.split("'")[1] for p in only(result, "missing_column")) == ["dx", "localization"]


def test_fitzpatrick17k_bad_skin_types_and_duplicates(tmp_path):
    path = write(
        tmp_path / "fitzpatrick17k.csv",
        FITZ_HEADER,
        fitz_row("a" * 32, "7"),
        fitz_row("b" * 32, "abc"),
        fitz_row("c" * 32, "-1"),
        fitz_row("d" * 32, "2.5"),
        fitz_row("c" * 32, "4"),
        fitz_row("e" * 32, "6"),
        fitz_row("f" * 32, "0"),
    )
    result = read("fitzpatrick17k", path)
    bad = only(result, "bad_fst")
    # fitzpatrick_scale and fitzpatrick_centaur are both checked: two problems per bad row
    assert Counter(p.row_id for p in bad) == {"a" * 32: 2, "b" * 32: 2, "d" * 32: 2, "f" * 32: 2}
    assert {p.line for p in bad} == {2, 3, 5, 8}
    assert all(p.file == str(path) for p in result.problems)
    assert "outside 1-6" in bad[0].message and "not a number" in bad[2].message

    (duplicate,) = only(result, "duplicate_id")
    assert (duplicate.row_id, duplicate.line) == ("c" * 32, 6)
    assert "line 4" in duplicate.message
    assert [(r.id, r.fst) for r in result.records] == [("c" * 32, None), ("e" * 32, 6)]


def test_ddi_bad_values_and_duplicates(tmp_path):
    path = write(
        tmp_path / "ddi.csv",
        DDI_HEADER,
        "0,1,000001.png,56,TRUE,melanoma-in-situ",
        "1,2,000002.png,78,TRUE,melanoma",
        "2,3,000003.png,34,maybe,melanoma",
        "3,1,000004.png,12,FALSE,verruca-vulgaris",
        "4,5,000005.png,abc,yes,",
    )
    result = read("ddi", path)
    found = {(p.kind, p.row_id, p.line) for p in result.problems}
    assert found == {
        ("bad_fst", "2", 3),
        ("bad_value", "3", 4),
        ("duplicate_id", "1", 5),
        ("bad_fst", "5", 6),
        ("bad_value", "5", 6),
        ("missing_value", "5", 6),
    }
    assert all(p.file == str(path) for p in result.problems)
    assert [r.id for r in result.records] == ["1"]


def test_ham10000_unknown_dx_bad_age_and_duplicates(tmp_path):
    path = write(
        tmp_path / "ham.csv",
        HAM_HEADER,
        ham_row("ISIC_1"),
        ham_row("ISIC_2", dx="melanoma"),
        ham_row("ISIC_3", age="old"),
        ham_row("ISIC_1", dx="mel"),
        ham_row("ISIC_5", age=""),
    )
    result = read("ham10000", path)
    assert {(p.kind, p.row_id, p.line) for p in result.problems} == {
        ("unknown_label", "ISIC_2", 3),
        ("bad_value", "ISIC_3", 4),
        ("duplicate_id", "ISIC_1", 5),
    }
    unknown = only(result, "unknown_label")[0]
    assert "'melanoma'" in unknown.message and "akiec" in unknown.message
    assert [(r.id, r.attributes["age"]) for r in result.records] == [("ISIC_1", 45), ("ISIC_5", None)]


def test_not_utf8_is_unparseable_with_its_line(tmp_path):
    path = tmp_path / "ham.csv"
    latin1_row = "HAM_2,ISIC_2,nv,histo,40,male,cuissé,vidir_modern\n".encode("latin-1")
    path.write_bytes(f"{HAM_HEADER}\n{ham_row('ISIC_1')}\n".encode() + latin1_row)
    result = read("ham10000", path)
    (problem,) = result.problems
    assert (problem.kind, problem.line, problem.file) == ("unparseable_csv", 3, str(path))
    assert "UTF-8" in problem.message


def test_malformed_rows_are_each_reported(tmp_path):
    path = write(
        tmp_path / "ham.csv",
        HAM_HEADER,
        ham_row("ISIC_1"),
        "HAM_2,ISIC_2,nv,histo,40,female",  # two cells short
        ham_row("ISIC_3") + ",extra",
        ham_row("ISIC_4"),
        'HAM_5,ISIC_5,nv,histo,40,female,"back,vidir_modern',  # quote never closed
    )
    result = read("ham10000", path)
    problems = only(result, "unparseable_csv")
    assert [(p.row_id, p.line) for p in problems] == [("ISIC_2", 3), ("ISIC_3", 4), (None, 6)]
    assert [r.id for r in result.records] == ["ISIC_1", "ISIC_4"]


@pytest.mark.parametrize("reader", ["fitzpatrick17k", "ddi", "ham10000", "isic2019"])
def test_empty_or_absent_file(tmp_path, reader):
    empty = write(tmp_path / "empty.csv")
    (problem,) = read(reader, empty).problems
    assert problem.kind == "unparseable_csv" and problem.file == str(empty)
    (problem,) = read(reader, tmp_path / "absent.csv").problems
    assert problem.kind == "unreadable_file"


# --------------------------------------------------------------------------------------
# ISIC 2019
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hot, cold", [("1.0", "0.0"), ("1", "0")])
def test_isic2019_both_encodings(tmp_path, hot, cold):
    def row(image: str, column: str) -> str:
        return ",".join([image] + [hot if name == column else cold for name in ISIC_HEADER.split(",")[1:]])

    path = write(
        tmp_path / "gt.csv",
        ISIC_HEADER,
        row("ISIC_0000000", "NV"),
        row("ISIC_0000001_downsampled", "MEL"),
        row("ISIC_0000002", "SCC"),
    )
    result = read("isic2019", path)
    assert result.problems == []
    assert [(r.id, r.image, r.label, r.attributes["diagnosis"]) for r in result.records] == [
        ("ISIC_0000000", "ISIC_0000000.jpg", "NV", "melanocytic nevus"),
        ("ISIC_0000001_downsampled", "ISIC_0000001_downsampled.jpg", "MEL", "melanoma"),
        ("ISIC_0000002", "ISIC_0000002.jpg", "SCC", "squamous cell carcinoma"),
    ]
    assert result.root == tmp_path / "images"


def test_isic2019_bad_rows(tmp_path):
    path = write(
        tmp_path / "gt.csv",
        ISIC_HEADER + ",score_weight,XYZ",
        "ISIC_1,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.7,0",
        "ISIC_2,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0",  # no hot column
        "ISIC_3,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0",  # two
        "ISIC_4,2,0,0,0,0,0,0,0,0,1.0,0",
        "ISIC_1,0,1,0,0,0,0,0,0,0,1.0,0",
    )
    result = read("isic2019", path)
    assert {(p.kind, p.row_id, p.line) for p in result.problems} == {
        ("unknown_label", None, None),
        ("bad_label", "ISIC_2", 3),
        ("bad_label", "ISIC_3", 4),
        ("bad_value", "ISIC_4", 5),
        ("duplicate_id", "ISIC_1", 6),
    }
    assert "'XYZ'" in only(result, "unknown_label")[0].message
    assert "MEL, NV" in [p for p in only(result, "bad_label") if p.row_id == "ISIC_3"][0].message
    assert [(r.id, r.label, r.attributes["score_weight"]) for r in result.records] == [("ISIC_1", "MEL", 0.7)]


# --------------------------------------------------------------------------------------
# MVTec AD
# --------------------------------------------------------------------------------------


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    """Two categories; bottle has a defect type with masks (one mask missing)."""
    root = tmp_path / "mvtec"
    for name in ("train/good/000.png", "train/good/001.png", "test/good/000.png",
                 "test/broken_large/000.png", "test/broken_large/001.png",
                 "ground_truth/broken_large/000_mask.png"):
        make_image(root / "bottle" / name, size=8)
    make_image(root / "screw" / "train" / "good" / "000.png", size=8)
    (root / "bottle" / "license.txt").write_text("CC BY-NC-SA 4.0")
    return root


def test_mvtec_dataset_root(mvtec):
    result = read("mvtec", mvtec)
    assert result.root == mvtec
    rows = {
        r.id: (r.image, r.label, r.attributes["category"], r.attributes["split"], r.attributes["mask"])
        for r in result.records
    }
    assert rows == {
        "bottle/train/good/000": ("bottle/train/good/000.png", "good", "bottle", "train", None),
        "bottle/train/good/001": ("bottle/train/good/001.png", "good", "bottle", "train", None),
        "bottle/test/good/000": ("bottle/test/good/000.png", "good", "bottle", "test", None),
        "bottle/test/broken_large/000": (
            "bottle/test/broken_large/000.png",
            "broken_large",
            "bottle",
            "test",
            "bottle/ground_truth/broken_large/000_mask.png",
        ),
        "bottle/test/broken_large/001": ("bottle/test/broken_large/001.png", "broken_large", "bottle", "test", None),
        "screw/train/good/000": ("screw/train/good/000.png", "good", "screw", "train", None),
    }
    (note,) = result.problems
    assert (note.kind, note.severity, note.row_id) == ("missing_mask", "note", "bottle/test/broken_large/001")
    assert all(resolve_inside(result.root, r.image).is_file() for r in result.records)


def test_mvtec_one_category(mvtec):
    result = read("mvtec", mvtec / "bottle")
    assert result.root == mvtec
    assert len(result.records) == 5
    assert {r.attributes["category"] for r in result.records} == {"bottle"}


def test_mvtec_unknown_folders(mvtec):
    make_image(mvtec / "bottle" / "train" / "scratch" / "000.png", size=8)
    make_image(mvtec / "bottle" / "validation" / "good" / "000.png", size=8)
    (mvtec / "bottle" / "ground_truth" / "dent").mkdir()
    result = read("mvtec", mvtec)
    errors = {(p.kind, Path(p.file).name) for p in result.problems if p.severity == "error"}
    assert errors == {("unknown_label", "scratch"), ("bad_layout", "validation")}
    assert not any(r.label == "scratch" for r in result.records)
    assert ("unknown_label", "note") in {(p.kind, p.severity) for p in result.problems if Path(p.file).name == "dent"}


def test_mvtec_without_categories(tmp_path):
    (problem,) = read("mvtec", tmp_path).problems
    assert problem.kind == "bad_layout"


# --------------------------------------------------------------------------------------
# DeepFashion-MultiModal
# --------------------------------------------------------------------------------------


def test_deepfashion_captions(tmp_path):
    captions = {
        "MEN-Denim-id_00000080-01_7_additional.jpg": "The man wears a short-sleeve shirt with solid color patterns.",
        "WOMEN-Dresses-id_00000002-02_1_front.jpg": "  Her dress is long.  ",
        "WOMEN-Tees-id_00000003-01_2_side.jpg": "",
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(captions, indent=2))
    for folder_or_file in (path, tmp_path):
        result = read("deepfashion", folder_or_file)
        assert result.problems == []
        assert result.root == tmp_path / "images"
        assert [(r.id, r.image, r.label) for r in result.records] == [(name, name, None) for name in captions]
        assert [r.caption for r in result.records] == [captions[next(iter(captions))], "Her dress is long.", None]


def test_deepfashion_bad_entries(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text('{"a.jpg": "one", "b.jpg": 3, "a.jpg": "again", "c.jpg": {"x": 1}}')
    result = read("deepfashion", path)
    assert {(p.kind, p.row_id) for p in result.problems} == {
        ("bad_value", "b.jpg"),
        ("duplicate_id", "a.jpg"),
        ("bad_value", "c.jpg"),
    }
    assert all(p.file == str(path) for p in result.problems)
    assert [(r.id, r.caption) for r in result.records] == [("a.jpg", "one")]

    path.write_text('{"a.jpg": "one",\n "b.jpg": }')
    (problem,) = read("deepfashion", path).problems
    assert (problem.kind, problem.line) == ("unparseable_json", 2)
    path.write_text('["a.jpg"]')
    assert read("deepfashion", path).problems[0].kind == "unparseable_json"


# --------------------------------------------------------------------------------------
# kohya folders
# --------------------------------------------------------------------------------------


def test_kohya_concepts_captions_and_repeats(tmp_path):
    make_image(tmp_path / "10_sks dog" / "001.jpg", size=8)
    write(tmp_path / "10_sks dog" / "001.txt", "a photo of sks dog on grass")
    make_image(tmp_path / "10_sks dog" / "002.png", size=8)
    make_image(tmp_path / "3_dog" / "003.jpg", size=8)
    write(tmp_path / "3_dog" / "003.caption", "a photo of a dog")
    result = read("kohya", tmp_path)
    assert result.problems == []
    assert result.root == tmp_path
    assert [(r.id, r.image, r.label, r.caption, r.attributes["repeats"]) for r in result.records] == [
        ("10_sks dog/001.jpg", "10_sks dog/001.jpg", "sks dog", "a photo of sks dog on grass", 10),
        ("10_sks dog/002.png", "10_sks dog/002.png", "sks dog", None, 10),
        ("3_dog/003.jpg", "3_dog/003.jpg", "dog", "a photo of a dog", 3),
    ]
    epoch = expand_repeats(result.records)
    assert len(epoch) == 23
    assert Counter(r.id for r in epoch) == {"10_sks dog/001.jpg": 10, "10_sks dog/002.png": 10, "3_dog/003.jpg": 3}


def test_kohya_bad_folder_names(tmp_path):
    make_image(tmp_path / "5_cat" / "a.jpg", size=8)
    make_image(tmp_path / "cat" / "b.jpg", size=8)
    make_image(tmp_path / "0_cat" / "c.jpg", size=8)
    make_image(tmp_path / "loose.jpg", size=8)
    result = read("kohya", tmp_path)
    bad = only(result, "bad_folder_name")
    assert sorted(Path(p.file).name for p in bad) == ["0_cat", "cat"]
    assert [p.kind for p in result.problems if p.severity == "note"] == ["bad_layout"]
    assert [r.id for r in result.records] == ["5_cat/a.jpg"]


# --------------------------------------------------------------------------------------
# Hugging Face imagefolder
# --------------------------------------------------------------------------------------


def test_imagefolder_jsonl(tmp_path):
    rows = [
        {"file_name": "0001.png", "label": "crack", "text": "a cracked tile", "fst": 5, "site": "kitchen"},
        {"file_name": "sub/0002.png", "label": "good", "text": "a clean tile", "fst": None, "site": None},
    ]
    write(tmp_path / "metadata.jsonl", *(json.dumps(row) for row in rows))
    result = read("imagefolder", tmp_path)
    assert result.problems == []
    assert result.root == tmp_path
    assert [(r.id, r.image, r.label, r.caption) for r in result.records] == [
        ("0001.png", "0001.png", "crack", "a cracked tile"),
        ("sub/0002.png", "sub/0002.png", "good", "a clean tile"),
    ]
    assert result.records[0].attributes == {"fst": 5, "fst_group": "V-VI", "site": "kitchen"}
    assert result.records[1].attributes == {"fst": None, "fst_group": None, "site": None}


def test_imagefolder_csv_in_split_folders_and_label_column(tmp_path):
    header = "file_name,defect,caption,label"
    write(tmp_path / "train" / "metadata.csv", header, "a.png,crack,a crack,x", "b.png,good,,y")
    write(tmp_path / "test" / "metadata.csv", header, "a.png,crack,another crack,x")
    result = read("imagefolder", tmp_path, label_column="defect")
    assert [(r.id, r.label, r.caption) for r in result.records] == [
        ("test/a.png", "crack", "another crack"),
        ("train/a.png", "crack", "a crack"),
        ("train/b.png", "good", None),
    ]
    # the unused `label` column would clash with the manifest's own label field
    assert {(p.kind, p.severity) for p in result.problems} == {("ignored_column", "note")}


def test_imagefolder_problems(tmp_path):
    write(
        tmp_path / "metadata.jsonl",
        '{"file_name": "a.png", "fst": 3}',
        "{not json",
        '{"file_name": "a.png"}',
        '{"fst": 9, "file_name": "b.png"}',
        '["c.png"]',
        '{"label": "x"}',
    )
    result = read("imagefolder", tmp_path)
    assert {(p.kind, p.row_id, p.line) for p in result.problems} == {
        ("unparseable_json", None, 2),
        ("duplicate_id", "a.png", 3),
        ("bad_fst", "b.png", 4),
        ("unparseable_json", None, 5),
        ("missing_value", None, 6),
    }
    assert [r.id for r in result.records] == ["a.png"]

    write(tmp_path / "other" / "metadata.csv", "image,label", "x.png,1")
    write(tmp_path / "other" / "metadata.jsonl", '{"image": "x.png"}')
    kinds = Counter(p.kind for p in read("imagefolder", tmp_path / "other").problems)
    assert kinds == {"bad_layout": 1, "missing_column": 1}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [p.kind for p in read("imagefolder", empty).problems] == ["bad_layout"]


# --------------------------------------------------------------------------------------
# Generic csv
# --------------------------------------------------------------------------------------


def test_csv_column_mapping(tmp_path):
    path = write(
        tmp_path / "photos.csv",
        "photo,condition,skin_type,note,partition,patient_sex",
        "img/1.jpg,eczema,V,itchy,train,F",
        "img/2.jpg,acne,-1,,test,M",
    )
    columns = {
        "image": "photo",
        "label": "condition",
        "fst": "skin_type",
        "caption": "note",
        "split": "partition",
        "sex": "patient_sex",
    }
    result = read("csv", path, columns=columns)
    assert result.problems == []
    assert result.root == tmp_path
    first, second = result.records
    assert (first.id, first.image, first.label, first.caption) == ("img/1.jpg", "img/1.jpg", "eczema", "itchy")
    assert first.attributes == {"fst": 5, "fst_group": "V-VI", "split": "train", "sex": "F"}
    assert (second.caption, second.fst, second.attributes["fst_group"]) == (None, None, None)


def test_csv_group_and_id_mapping(tmp_path):
    path = write(tmp_path / "p.csv", "key,file,tone", "k1,a.png,V-VI", "k1,b.png,I-II")
    result = read("csv", path, images=tmp_path / "imgs", columns={"id": "key", "image": "file", "group": "tone"})
    assert result.root == tmp_path / "imgs"
    assert [(r.id, r.attributes) for r in result.records] == [("k1", {"fst_group": "V-VI"})]
    (duplicate,) = result.problems
    assert (duplicate.kind, duplicate.row_id, duplicate.line, duplicate.file) == ("duplicate_id", "k1", 3, str(path))


def test_csv_mapping_problems(tmp_path):
    path = write(tmp_path / "p.csv", "file,skin", "a.png,8", "b.png,2")
    (problem,) = read("csv", path, columns={"label": "file"}).problems
    assert problem.kind == "missing_mapping" and "data.columns.image" in problem.message

    result = read("csv", path, columns={"image": "file", "label": "diagnosis", "fst": "skin"})
    (problem,) = result.problems
    assert problem.kind == "missing_column"
    assert "'diagnosis'" in problem.message and "data.columns.label" in problem.message

    result = read("csv", path, columns={"image": "file", "fst": "skin"})
    (problem,) = result.problems
    assert (problem.kind, problem.row_id, problem.line) == ("bad_fst", "a.png", 2)
    assert [r.id for r in result.records] == ["b.png"]
