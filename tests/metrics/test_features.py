"""The feature cache: keyed by image content and extractor; NaN features stop everything."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from fairsynth.metrics.extractors import create_extractor
from fairsynth.metrics.extractors.random import RandomExtractor
from fairsynth.metrics.features import FeatureCache, NonFiniteFeatures, extract_features
from tests.metrics.conftest import write_set


@pytest.fixture
def image_paths(tmp_path):
    manifest = write_set(tmp_path / "set", 6, size=40)
    return sorted((manifest.parent / "images").glob("*.png"))


def test_second_run_reads_every_feature_from_the_cache(tmp_path, image_paths):
    cache = FeatureCache(tmp_path / "cache")
    first, sizes = extract_features(image_paths, [create_extractor("random")], cache)
    assert first["random"].extracted == 6 and first["random"].from_cache == 0
    assert sizes[image_paths[0]] == (40, 40)
    second, sizes_again = extract_features(image_paths, [create_extractor("random")], cache)
    assert second["random"].extracted == 0 and second["random"].from_cache == 6
    assert torch.equal(first["random"].features, second["random"].features)
    assert sizes_again == sizes  # original sizes come back from the cache too


def test_the_key_is_the_content_not_the_name(tmp_path, image_paths):
    cache = FeatureCache(tmp_path / "cache")
    extract_features(image_paths, [create_extractor("random")], cache)
    copy = tmp_path / "renamed.png"
    shutil.copy(image_paths[0], copy)
    changed = tmp_path / "changed.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(changed)
    tables, _ = extract_features([copy, changed], [create_extractor("random")], cache)
    assert tables["random"].from_cache == 1 and tables["random"].extracted == 1


def test_other_weights_or_options_do_not_reuse_features(tmp_path, image_paths):
    cache = FeatureCache(tmp_path / "cache")
    extract_features(image_paths, [create_extractor("random")], cache)
    other, _ = extract_features(image_paths, [create_extractor("random", seed=1)], cache)
    assert other["random"].extracted == 6


def test_repeated_paths_share_rows(tmp_path, image_paths):
    tables, _ = extract_features(image_paths[:2] + image_paths[:1], [create_extractor("random")], FeatureCache(None))
    features = tables["random"].features
    assert features.shape == (3, 64) and torch.equal(features[0], features[2])


def test_nan_features_are_an_error_naming_the_images(tmp_path, image_paths, monkeypatch):
    original = RandomExtractor.embed

    def broken(self, model, images):
        out = original(self, model, images)
        out[0] = float("nan")
        return out

    monkeypatch.setattr(RandomExtractor, "embed", broken)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(NonFiniteFeatures, match=r"NaN or infinite features for 1 image\(s\): .*0000.png"):
        extract_features(image_paths, [create_extractor("random")], cache, batch_size=8)
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing half-right is kept
