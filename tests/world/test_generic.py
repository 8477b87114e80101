"""The generic captioned world: determinism, vocabulary, caption <-> attributes, held-out split, reader."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from fairsynth.world.derm import CONDITIONS, SKIN_TONES
from fairsynth.world.generic import (
    MIN_CONTRAST,
    PALETTE,
    VOCABULARY,
    GenericAttributes,
    contrast,
    generic_sample,
    is_held_out,
    iterate_world,
    parse_caption,
    prompt_following,
    read_attributes,
    render_attributes,
    sample_attributes,
)

FORBIDDEN = {"skin", "lesion", "mole", "nevus", "melanoma", "carcinoma", "psoriasis", "fitzpatrick", "derm"}


@pytest.fixture(scope="module")
def samples():
    return list(iterate_world(seed=0, size=64, stop=400))


def test_same_seed_and_index_give_the_same_image():
    first, again = generic_sample(0, 7), generic_sample(0, 7)
    assert first.image.tobytes() == again.image.tobytes() and first.caption == again.caption
    assert first.image.shape == (64, 64, 3) and first.image.dtype == np.uint8
    assert generic_sample(1, 7).image.tobytes() != first.image.tobytes()
    # an iterator from the middle gives the same images as the index does
    middle = next(iterate_world(seed=0, start=7))
    assert middle.image.tobytes() == first.image.tobytes()


def test_every_word_of_every_attribute_occurs(samples):
    for name, words in VOCABULARY.items():
        seen = Counter(getattr(s.attributes, name) for s in samples)
        assert set(seen) == set(words), f"{name}: missing {set(words) - set(seen)}"


def test_captions_never_use_lesion_or_skin_words(samples):
    words = set(re.findall(r"[a-z]+", " ".join(s.caption for s in samples)))
    labels = {w for label in CONDITIONS for w in label.split()}
    assert not words & (FORBIDDEN | labels)
    assert len(words) < 45  # a small vocabulary


def test_caption_and_attributes_agree(samples):
    for sample in samples:
        assert parse_caption(sample.caption) == sample.attributes
        assert sample.attributes.caption == sample.caption
    example = GenericAttributes("small", "smooth", "dark brown", "round blob", "pale beige", "thin dark lines")
    assert example.caption == "a small smooth dark brown round blob on a pale beige background, crossed by thin dark lines"
    assert parse_caption(example.caption) == example
    for bad in ("a photo of melanoma", "a small smooth purple ring on a tan background", "a tan background"):
        with pytest.raises(ValueError):
            parse_caption(bad)
    with pytest.raises(ValueError, match="colour"):
        GenericAttributes("small", "smooth", "purple", "ring", "tan")


def test_held_out_combinations_are_kept_apart_but_every_word_is_trained():
    rng = np.random.default_rng(0)
    train = [sample_attributes(rng, "exclude") for _ in range(600)]
    held = [sample_attributes(rng, "only") for _ in range(100)]
    assert not any(is_held_out(a) for a in train) and all(is_held_out(a) for a in held)
    for name in ("colour", "shape", "background"):
        assert {getattr(a, name) for a in held} <= {getattr(a, name) for a in train}
    share = np.mean([is_held_out(sample_attributes(rng, "include")) for _ in range(2000)])
    assert 0.04 < share < 0.15


def test_objects_are_visible_on_their_background(samples):
    assert all(contrast(s.attributes.colour, s.attributes.background) >= MIN_CONTRAST for s in samples)


def test_background_tones_cover_the_derm_worlds_skin_tones():
    """Each skin type's tone range has a background word within a few Delta E of its middle."""
    backgrounds = np.array([PALETTE[name].lab for name in VOCABULARY["background"]])
    for fst, tone in SKIN_TONES.items():
        angle = np.radians(np.mean(tone.ita))
        radius = np.mean(tone.radius)
        middle = np.array([50 + radius * np.sin(angle), np.mean(tone.a_star), radius * np.cos(angle)])
        assert np.linalg.norm(backgrounds - middle, axis=1).min() < 8.0, f"type {fst}"


def test_reader_recovers_the_painted_attributes(samples):
    scores = prompt_following([s.image for s in samples], [s.attributes for s in samples])
    assert scores["background"] >= 0.97
    assert scores["colour"] >= 0.88
    assert scores["size"] >= 0.9
    # and a wrong prompt scores low: the reader is not fooled by any image
    shuffled = [samples[(i + 1) % len(samples)].attributes for i in range(len(samples))]
    assert prompt_following([s.image for s in samples], shuffled)["all"] < 0.1


def test_rejects_tiny_images():
    with pytest.raises(ValueError, match="32"):
        render_attributes(GenericAttributes("small", "smooth", "red", "ring", "tan"), np.random.default_rng(0), 16)
    assert read_attributes(generic_sample(0, 0, size=32).image)["background"] in VOCABULARY["background"]
