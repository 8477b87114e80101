"""CIELAB conversion, ITA and its FST bands, and the skin mask (on the dermatology world)."""

from __future__ import annotations

import json
import math
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from fairsynth.data.skin import fst_from_ita, ita, lab_to_srgb, skin_mask, srgb_to_lab
from fairsynth.world import CONDITIONS, generate_world, render_layers


def _cie_lab_reference(r8: int, g8: int, b8: int) -> tuple[float, float, float]:
    """sRGB -> CIELAB written out from the standards, scalar by scalar (independent of skin.py).

    IEC 61966-2-1 transfer curve and primaries; CIE 15 L*a*b* with the D65 white point.
    """

    def linear(c8: int) -> float:
        c = c8 / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = linear(r8), linear(g8), linear(b8)
    x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


# --------------------------------------------------------------------------------------
# CIELAB
# --------------------------------------------------------------------------------------


def test_white_is_l100_neutral():
    lab = srgb_to_lab(np.array([[255, 255, 255]], dtype=np.uint8))[0]
    np.testing.assert_allclose(lab, [100.0, 0.0, 0.0], atol=1e-3)


def test_black_is_zero():
    np.testing.assert_allclose(srgb_to_lab(np.zeros((1, 3), np.uint8))[0], [0.0, 0.0, 0.0], atol=1e-6)


def test_pure_red_matches_published_value():
    # sRGB (255, 0, 0), D65: L* 53.2408, a* 80.0925, b* 67.2032 (Lindbloom's calculator).
    lab = srgb_to_lab(np.array([[255, 0, 0]], dtype=np.uint8))[0]
    np.testing.assert_allclose(lab, [53.2408, 80.0925, 67.2032], atol=0.01)


@pytest.mark.parametrize("rgb", [(200, 150, 120), (128, 64, 200), (90, 60, 45), (10, 20, 30)])
def test_mid_colours_match_cie_formulas(rgb):
    lab = srgb_to_lab(np.array([rgb], dtype=np.uint8))[0]
    np.testing.assert_allclose(lab, _cie_lab_reference(*rgb), atol=1e-3)


def test_agrees_with_opencv_float_conversion():
    # OpenCV's float RGB->Lab quantises a*/b* (to about 1/64) and has its own white point:
    # agreement within half a unit says both implement the same colour space.
    colours = np.random.default_rng(0).integers(0, 256, (2000, 1, 3)).astype(np.uint8)
    ours = srgb_to_lab(colours)
    theirs = cv2.cvtColor(colours.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    assert np.abs(ours - theirs).max() < 0.5


def test_lab_round_trip():
    colours = np.random.default_rng(1).integers(0, 256, (2000, 3)).astype(np.uint8)
    back = lab_to_srgb(srgb_to_lab(colours)) * 255.0
    assert np.abs(back - colours).max() < 0.5


# --------------------------------------------------------------------------------------
# ITA and FST bands
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "fst"),
    [(90, 1), (55.01, 1), (55, 2), (41.01, 2), (41, 3), (28.01, 3), (28, 4), (19.01, 4), (19, 5),
     (10.01, 5), (10, 6), (-45, 6)],
)
def test_kinyanjui_cutoffs(angle, fst):
    assert fst_from_ita(angle) == fst


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fst_from_ita_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        fst_from_ita(bad)


def _uniform(lab: tuple[float, float, float], size: int = 32) -> np.ndarray:
    rgb = np.round(lab_to_srgb(np.array(lab, dtype=np.float32)) * 255).astype(np.uint8)
    return np.broadcast_to(rgb, (size, size, 3)).copy()


def test_ita_of_uniform_colour():
    image = _uniform((62.0, 10.0, 16.0))
    expected = math.degrees(math.atan2(62.0 - 50.0, 16.0))
    assert ita(image) == pytest.approx(expected, abs=0.3)


def test_ita_trims_outliers_like_groh():
    # 8 % of the pixels are near-black (a lesion, hairs): the one-standard-deviation trim
    # drops them, where a plain mean would be pulled to a darker type.
    image = _uniform((62.0, 10.0, 16.0), size=50)
    image[:10, :20] = 15
    expected = math.degrees(math.atan2(12.0, 16.0))
    assert ita(image) == pytest.approx(expected, abs=0.3)
    lab = srgb_to_lab(image).reshape(-1, 3)
    naive = math.degrees(math.atan2(lab[:, 0].mean() - 50, lab[:, 2].mean()))
    assert naive < expected - 3


def test_ita_uses_the_mask():
    image = _uniform((62.0, 10.0, 16.0))
    image[:, :16] = _uniform((40.0, 10.0, 16.0))[:, :16]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[:, 16:] = True
    assert ita(image, mask) == pytest.approx(math.degrees(math.atan2(12.0, 16.0)), abs=0.3)


def test_ita_refuses_empty_mask_and_bad_input():
    image = _uniform((62.0, 10.0, 16.0))
    with pytest.raises(ValueError, match="empty"):
        ita(image, np.zeros(image.shape[:2], dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        ita(image, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="uint8"):
        ita(image.astype(np.float32))


# --------------------------------------------------------------------------------------
# Skin mask and ITA on the dermatology world
# --------------------------------------------------------------------------------------


def test_skin_mask_excludes_lesion_and_hair():
    lesion_kept, hair_kept, skin_kept = [], [], []
    for ci, condition in enumerate(CONDITIONS):
        for fst in range(1, 7):
            layers = render_layers(condition, fst, np.random.default_rng([11, ci, fst]), 128, hair=True)
            mask = skin_mask(layers.image)
            skin = ~layers.lesion_mask & ~layers.hair_mask
            lesion_kept.append((mask & layers.lesion_mask).sum() / layers.lesion_mask.sum())
            hair_kept.append((mask & layers.hair_mask).sum() / max(1, layers.hair_mask.sum()))
            skin_kept.append((mask & skin).sum() / skin.sum())
    # Measured: 0 % of lesion and hair pixels kept; 75-97 % of the skin kept.
    assert max(lesion_kept) < 0.02, f"lesion pixels kept: {max(lesion_kept):.3f}"
    assert max(hair_kept) < 0.05, f"hair pixels kept: {max(hair_kept):.3f}"
    assert min(skin_kept) > 0.6, f"skin pixels kept: {min(skin_kept):.3f}"


def test_skin_mask_falls_back_when_nothing_looks_like_the_frame():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    mask = skin_mask(image)
    assert mask.shape == (40, 40) and mask.sum() >= 0.05 * mask.size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n=300, seed=3)


def test_ita_recovers_the_world_skin_type(world):
    truth = json.loads(world.metadata.read_text())["images"]
    hits: Counter[int] = Counter()
    totals: Counter[int] = Counter()
    for row in truth:  # the true type, also for rows the CSV records as unknown
        image = np.asarray(Image.open(world.images / f"{row['md5hash']}.jpg").convert("RGB"))
        estimate = fst_from_ita(ita(image, skin_mask(image)))
        totals[row["fst"]] += 1
        hits[row["fst"]] += estimate == row["fst"]
    rate = sum(hits.values()) / sum(totals.values())
    per_type = ", ".join(f"{fst}: {hits[fst]}/{totals[fst]}" for fst in sorted(totals))
    assert set(totals) == {1, 2, 3, 4, 5, 6}
    assert rate >= 0.95, f"ITA recovered the painted type for {rate:.1%} ({per_type})"
