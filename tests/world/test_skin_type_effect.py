"""Lesions that change look with skin type: off is today's world bit for bit, on changes only darker skin,
and the external test world is balanced, new and painted like the world."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from fairsynth.config import ConfigError
from fairsynth.data.skin import srgb_to_lab
from fairsynth.world import CONDITIONS, WorldConfig, generate_world, render_layers
from fairsynth.world.derm import SKIN_TONES, darkness, plan_world, sample_skin_colour, balanced_test_world

#: sha256 over image and lesion-mask bytes of render_layers(cls, fst, SeedSequence(11, (i, fst)), size=64)
#: for every class (sorted) and type, made with the world's painters before the skin-type effect existed.
WORLD_WITHOUT_EFFECT = "560784b67768ab3d89d16404854b9b08c4762521e012c19fa91a1ac349aa5689"


def _digest(effect: float) -> str:
    digest = hashlib.sha256()
    for i, cls in enumerate(sorted(CONDITIONS)):
        for fst in range(1, 7):
            layers = render_layers(cls, fst, np.random.default_rng(np.random.SeedSequence(11, spawn_key=(i, fst))),
                                   size=64, skin_type_effect=effect)
            digest.update(layers.image.tobytes())
            digest.update(layers.lesion_mask.tobytes())
    return digest.hexdigest()


def test_effect_off_paints_the_earlier_world_bit_for_bit():
    assert _digest(0.0) == WORLD_WITHOUT_EFFECT
    assert _digest(1.0) != WORLD_WITHOUT_EFFECT


def test_darkness_is_continuous_in_lightness_with_no_switch_at_a_type():
    lightness = np.linspace(30.0, 80.0, 501)
    values = np.array([darkness(v) for v in lightness])
    assert values[lightness >= 58].max() == 0.0 and values[lightness <= 42].min() == 1.0
    assert np.all(np.diff(values) <= 0)  # darker skin never shifts less
    assert np.abs(np.diff(values)).max() <= (lightness[1] - lightness[0]) / 16 + 1e-9  # Lipschitz: no jump
    assert darkness(50.0, 0.5) == pytest.approx(0.25) and darkness(50.0, 0.0) == 0.0


@pytest.mark.parametrize("fst", [1, 2, 3])
def test_light_skin_is_untouched_by_the_effect(fst):
    # L* >= 58 for types I-III: the effect changes nothing there, not even a random draw
    rng = np.random.default_rng(0)
    assert min(sample_skin_colour(fst, rng)[0] for _ in range(200)) > 58
    for i, cls in enumerate(sorted(CONDITIONS)):
        seed = np.random.SeedSequence(5, spawn_key=(i, fst))
        off = render_layers(cls, fst, np.random.default_rng(seed), size=64, skin_type_effect=0.0)
        on = render_layers(cls, fst, np.random.default_rng(seed), size=64, skin_type_effect=1.0)
        assert np.array_equal(off.image, on.image)


def _lesion_lab(cls: str, fst: int, effect: float, n: int = 24) -> np.ndarray:
    """Mean CIELAB of the lesion pixels minus the skin's base colour, over n images."""
    out = []
    for i in range(n):
        layers = render_layers(cls, fst, np.random.default_rng(np.random.SeedSequence(9, spawn_key=(i,))), size=64,
                               hair=False, skin_type_effect=effect)
        lab = srgb_to_lab(layers.image)[layers.lesion_mask]
        out.append(lab.mean(0) - np.array(layers.skin_lab))
    return np.mean(out, axis=0)


def test_on_dark_skin_erythema_is_less_red_and_bluer_and_pigmented_lesions_contrast_less():
    off, on = _lesion_lab("psoriasis", 6, 0.0), _lesion_lab("psoriasis", 6, 1.0)
    assert on[1] < off[1] - 3 and on[2] < off[2] - 3  # a* (red) and b* (yellow) both fall: dusky, violaceous
    for cls in ("melanoma", "nevocytic nevus"):
        off, on = _lesion_lab(cls, 6, 0.0), _lesion_lab(cls, 6, 1.0)
        assert abs(on[0]) < 0.8 * abs(off[0])  # the lightness difference from the skin shrinks
    off, on = _lesion_lab("basal cell carcinoma", 6, 0.0), _lesion_lab("basal cell carcinoma", 6, 1.0)
    assert off[0] > 0 and on[0] < 0  # pink and lighter than the skin -> mostly pigmented, darker than it


def test_pigmented_basal_cell_carcinoma_follows_its_probability():
    # the share of darker-than-skin basal cell carcinomas on type VI is near 0.85 x mean darkness
    shares, expected = [], []
    for i in range(200):
        seed = np.random.SeedSequence(21, spawn_key=(i,))
        layers = render_layers("basal cell carcinoma", 6, np.random.default_rng(seed), size=64, hair=False,
                               skin_type_effect=1.0)
        lesion = layers.hairless[layers.lesion_mask].mean()
        skin = layers.hairless[~layers.lesion_mask].mean()
        shares.append(lesion < skin)
        expected.append(0.85 * darkness(layers.skin_lab[0]))
    assert abs(np.mean(shares) - np.mean(expected)) < 0.08


def test_config_validates_the_effect_and_the_test_world():
    with pytest.raises(ConfigError, match="skin_type_effect"):
        WorldConfig(skin_type_effect=1.5)
    with pytest.raises(ConfigError, match="test_per_type"):
        WorldConfig(test_per_type=-1)
    with pytest.raises(ConfigError, match="test_seed must differ"):
        WorldConfig(seed=3, test_seed=3)
    with pytest.raises(ConfigError, match="no test world"):
        balanced_test_world(WorldConfig())


def test_test_world_is_balanced_new_and_painted_like_the_world(tmp_path):
    config = WorldConfig(n=60, size=64, skin_type_effect=1.0, test_per_type=8)
    tested = balanced_test_world(config)
    assert tested.seed == config.seed + 1 and tested.skin_type_effect == 1.0 and tested.size == 64
    plan = plan_world(tested)
    counts = pd.Series([(p.label, p.fst) for p in plan]).value_counts()
    assert len(plan) == 48 and len(counts) == 24 and set(counts) == {2}  # every class x type, 2 each
    assert all(p.fst == p.fst_recorded for p in plan)  # no unknown skin type in a test set
    world = generate_world(tmp_path / "world", config)
    test = generate_world(tmp_path / "world-test", tested)
    shared = set(pd.read_csv(world.csv).md5hash) & set(pd.read_csv(test.csv).md5hash)
    assert not shared
    frame = pd.read_csv(test.csv)
    assert frame.fitzpatrick_scale.value_counts().to_dict() == {t: 8 for t in range(1, 7)}
    assert set(SKIN_TONES) == set(range(1, 7))
