from __future__ import annotations

from collections import Counter

import pytest

from fairsynth.config import SplitConfig
from fairsynth.data.records import Record
from fairsynth.data.splits import assign_splits


def make_records(n: int = 600) -> list[Record]:
    return [
        Record(f"r{i}", f"{i}.png", label=["mel", "nev", "bcc"][i % 3],
               attributes={"fst": (i // 3) % 6 + 1, "lesion_id": f"L{i // 4}"})
        for i in range(n)
    ]


def test_fractions_hold_in_every_class_x_skin_type_cell():
    records = assign_splits(make_records(1800), SplitConfig(val=0.1, test=0.2, seed=0))
    cells: dict[tuple, Counter] = {}
    for r in records:
        cells.setdefault((r.label, r.fst), Counter())[r.split] += 1
    assert len(cells) == 18
    for cell, counts in cells.items():
        n = sum(counts.values())  # 100: every fraction of the whole cell, rounded at most one image off
        assert abs(counts["test"] - 0.2 * n) < 1, (cell, counts)
        assert abs(counts["val"] - 0.1 * n) < 1, (cell, counts)
        assert counts["train"] == n - counts["test"] - counts["val"]


def test_fractions_hold_over_many_tiny_cells():
    """Cells of 3 images cannot hold 20 % each; rounded at random, they hold it over the set
    (always rounding down would give no test image at all, rounding to nearest one in three)."""
    records = [Record(f"r{i}", f"{i}.png", label=f"c{i // 3}") for i in range(3000)]
    assign_splits(records, SplitConfig(val=0.1, test=0.2, seed=0, stratify=["label"]))
    counts = Counter(r.split for r in records)
    assert abs(counts["test"] / 3000 - 0.2) < 0.02 and abs(counts["val"] / 3000 - 0.1) < 0.02, counts


def test_same_seed_same_split_other_seed_other_split():
    a = [r.split for r in assign_splits(make_records(), SplitConfig(seed=1))]
    b = [r.split for r in assign_splits(make_records(), SplitConfig(seed=1))]
    c = [r.split for r in assign_splits(make_records(), SplitConfig(seed=2))]
    assert a == b and a != c


def test_split_does_not_depend_on_row_order():
    forward = {r.id: r.split for r in assign_splits(make_records(), SplitConfig(seed=5))}
    backward = {r.id: r.split for r in assign_splits(make_records()[::-1], SplitConfig(seed=5))}
    assert forward == backward


def test_grouped_split_keeps_each_lesion_in_one_split():
    records = assign_splits(make_records(), SplitConfig(seed=0, group_by="lesion_id", stratify=["label"]))
    by_lesion: dict[str, set[str]] = {}
    for r in records:
        by_lesion.setdefault(r.attributes["lesion_id"], set()).add(r.split)
    assert all(len(s) == 1 for s in by_lesion.values())
    assert Counter(r.split for r in records)["test"] > 0


def test_holdout_by_skin_type():
    cfg = SplitConfig(seed=0, holdout_column="fst", holdout_values=[5, 6], val=0.1, test=0.2)
    records = assign_splits(make_records(), cfg)
    assert all(r.split == "test" for r in records if r.fst in (5, 6))
    assert all(r.split in ("train", "val") for r in records if r.fst not in (5, 6))
    assert any(r.split == "val" for r in records)


def test_existing_split_is_kept():
    records = make_records(30)
    records[0].attributes["split"] = "test"
    records[1].attributes["split"] = "train"
    assign_splits(records, SplitConfig(seed=0, test=0.0, val=0.0))
    assert records[0].split == "test" and records[1].split == "train"
    assert all(r.split == "train" for r in records[2:])


@pytest.mark.parametrize("val,test", [(0.5, 0.5), (-0.1, 0.2)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError):
        SplitConfig(val=val, test=test)
