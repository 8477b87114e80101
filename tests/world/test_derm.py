"""The procedural dermatology world: format, skew, determinism, atomic re-runs, distinct classes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairsynth.config import ConfigError
from fairsynth.world import CONDITIONS, WorldConfig, generate_world, render, render_layers
from fairsynth.world.derm import FITZPATRICK17K_COLUMNS, plan_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n=300, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_csv_has_the_fitzpatrick17k_format(world):
    frame = pd.read_csv(world.csv)
    assert tuple(frame.columns) == FITZPATRICK17K_COLUMNS
    assert len(frame) == 300 and frame.md5hash.is_unique
    assert frame.md5hash.str.fullmatch(r"[0-9a-f]{32}").all()
    assert frame.qc.isna().all()
    assert set(frame.fitzpatrick_scale) == {-1, 1, 2, 3, 4, 5, 6}
    assert set(frame.label) == set(CONDITIONS)
    assert (frame.url_alphanum == frame.url.str.replace(r"[^0-9A-Za-z]", "", regex=True) + ".jpg").all()
    for md5 in frame.md5hash:  # md5hash is the md5 of the image file, as the name says
        assert hashlib.md5((world.images / f"{md5}.jpg").read_bytes()).hexdigest() == md5


def test_labels_and_partitions_are_those_of_the_real_file(world, shared_data):
    real_csv = shared_data / "fitzpatrick17k.csv"
    real = pd.read_csv(real_csv, usecols=["label", "nine_partition_label", "three_partition_label"])
    real_triples = set(real.drop_duplicates().itertuples(index=False, name=None))
    ours = pd.read_csv(world.csv, usecols=["label", "nine_partition_label", "three_partition_label"])
    assert set(ours.drop_duplicates().itertuples(index=False, name=None)) <= real_triples
    assert tuple(pd.read_csv(real_csv, nrows=0).columns) == FITZPATRICK17K_COLUMNS


def test_skin_type_skew_follows_fitzpatrick17k(world):
    shares = pd.read_csv(world.csv).fitzpatrick_scale.value_counts(normalize=True)
    expected = {1: 0.18, 2: 0.29, 3: 0.20, 4: 0.17, 5: 0.09, 6: 0.04, -1: 0.03}
    for fst, share in expected.items():
        assert shares[fst] == pytest.approx(share, abs=0.01), f"FST {fst}: {shares[fst]:.3f}"
    labels = pd.read_csv(world.csv).label.value_counts()
    assert labels.max() - labels.min() <= 1  # uniform by default


def test_world_json_holds_the_hidden_truth(world):
    meta = json.loads(world.metadata.read_text())
    frame = pd.read_csv(world.csv)
    truth = pd.DataFrame(meta["images"])
    assert meta["config"]["n"] == 300 and meta["config"]["seed"] == 0
    assert list(truth.md5hash) == list(frame.md5hash)
    assert (truth.fst_recorded == frame.fitzpatrick_scale).all()
    unknown = truth[truth.fst_recorded == -1]
    assert len(unknown) == 9 and unknown.fst.between(1, 6).all()  # a tone is painted anyway
    assert 0.2 < truth.hair.mean() < 0.4  # hair_probability 0.3


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = generate_world(tmp_path / "a", n=16, seed=5, size=64)
    second = generate_world(tmp_path / "b", n=16, seed=5, size=64)
    assert _files(first.root) == _files(second.root)
    other = generate_world(tmp_path / "c", n=16, seed=6, size=64)
    assert _files(other.root) != _files(first.root)


def test_render_is_deterministic_and_sized():
    a = render("psoriasis", 5, np.random.default_rng(42), size=96, hair=True)
    b = render("psoriasis", 5, np.random.default_rng(42), size=96, hair=True)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_hairs_do_not_change_the_rest_of_the_image():
    with_hair = render_layers("melanoma", 2, np.random.default_rng(1), 128, hair=True)
    without = render_layers("melanoma", 2, np.random.default_rng(1), 128, hair=False)
    np.testing.assert_array_equal(with_hair.hairless, without.image)
    assert with_hair.hair_mask.any() and not without.hair_mask.any()
    assert (with_hair.image != without.image).any(axis=-1).sum() >= with_hair.hair_mask.sum()


def test_rerun_is_a_clean_regeneration(tmp_path):
    world = generate_world(tmp_path, n=12, seed=1, size=64)
    before = {p.name: p.stat().st_mtime_ns for p in world.images.iterdir()}
    generate_world(tmp_path, n=12, seed=1, size=64)
    after = {p.name: p.stat().st_mtime_ns for p in world.images.iterdir()}
    assert after == before  # identical images are not rewritten

    not_ours = world.images / f"{'0' * 32}.jpg"
    not_ours.write_bytes(b"a user's file")
    generate_world(tmp_path, n=8, seed=2, size=64)
    named = {f"{md5}.jpg" for md5 in pd.read_csv(world.csv).md5hash}
    # The first world's images are gone; a file the world did not write is kept.
    assert {p.name for p in world.images.iterdir()} == named | {not_ours.name}
    assert not list(tmp_path.rglob(".*.tmp"))


def test_refuses_to_overwrite_real_data(tmp_path):
    (tmp_path / "fitzpatrick17k.csv").write_text("md5hash\nabc\n")
    with pytest.raises(FileExistsError, match="not a generated world"):
        generate_world(tmp_path, n=4)
    (tmp_path / "world.json").write_text('{"something": "else"}')
    with pytest.raises(FileExistsError, match="not the metadata of a generated"):
        generate_world(tmp_path, n=4)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="skin type"):
        WorldConfig(fst_distribution={"VII": 1.0})
    with pytest.raises(ConfigError, match="unknown condition"):
        WorldConfig(class_distribution={"acne": 1.0})
    with pytest.raises(ConfigError, match="I..VI"):
        WorldConfig(fst_distribution={"unknown": 1.0})
    with pytest.raises(ConfigError, match="valid"):
        generate_world("unused", colour="blue")
    for name, f in WorldConfig.__dataclass_fields__.items():
        assert f.metadata.get("help"), f"WorldConfig.{name} has no help text"


def test_configured_distributions_are_followed():
    plan = plan_world(
        WorldConfig(n=100, fst_distribution={"V": 1, "VI": 1}, class_distribution={"melanoma": 3, "psoriasis": 1})
    )
    assert {p.fst for p in plan} == {5, 6} and sum(p.fst == 6 for p in plan) == 50
    assert sum(p.label == "melanoma" for p in plan) == 75 and {p.label for p in plan} == {"melanoma", "psoriasis"}


def _lesion_features(layers) -> np.ndarray:
    """Lesion-minus-skin lightness and redness, lesion texture: what a clinician sees first."""
    from fairsynth.data.skin import srgb_to_lab

    lab = srgb_to_lab(layers.image)
    lesion, skin = lab[layers.lesion_mask], lab[~layers.lesion_mask]
    return np.array([
        lesion[:, 0].mean() - skin[:, 0].mean(),
        lesion[:, 1].mean() - skin[:, 1].mean(),
        lesion[:, 0].std(),
        np.log(layers.lesion_mask.mean()),
    ])


def test_classes_are_distinct_on_every_skin_tone():
    labels = list(CONDITIONS)

    def sample(seed: int, fst: int, label: str) -> np.ndarray:
        rng = np.random.default_rng([seed, fst, labels.index(label)])
        return _lesion_features(render_layers(label, fst, rng, 96, hair=False))

    train = {label: np.array([sample(s, f, label) for s in range(4) for f in range(1, 7)]) for label in labels}
    mean = np.concatenate(list(train.values())).mean(axis=0)
    std = np.concatenate(list(train.values())).std(axis=0)
    centroids = np.array([((train[label] - mean) / std).mean(axis=0) for label in labels])
    correct = total = 0
    for fst in range(1, 7):
        for label in labels:
            for seed in range(100, 104):
                features = (sample(seed, fst, label) - mean) / std
                guess = labels[int(np.argmin(((centroids - features) ** 2).sum(axis=1)))]
                correct += guess == label
                total += 1
    # A nearest-centroid rule on four trivial features; measured 100 %.
    assert correct / total >= 0.9, f"nearest-centroid accuracy {correct / total:.1%}"
