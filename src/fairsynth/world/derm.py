"""The procedural dermatology world: Fitzpatrick17k-format data with known hidden attributes.

fairsynth's embedded default dataset. Every image is painted from a seeded
``numpy.random.Generator``: a patch of skin of one Fitzpatrick type (I-VI) with texture and
pores, one lesion of a known condition, and sometimes dark hairs. The output is what a user
of Fitzpatrick17k has on disk::

    <output>/fitzpatrick17k.csv        # the official 9 columns, -1 = unknown skin type
    <output>/images/{md5hash}.jpg      # md5hash = md5 of the JPEG bytes
    <output>/world.json                # settings and the hidden truth (for tests/oracles)

Why a procedural world: the project must build, train and be tested offline, and fairness
claims need ground truth that real data lacks. Here the true skin type is known even for
rows whose CSV says -1, hairs are known pixel by pixel, and the skew is exactly configured.

Design:

* **Skin tones** sit inside the ITA bands of Kinyanjui et al. 2020. A tone is sampled in
  polar form in the (b*, L*-50) plane: the angle *is* the ITA, the radius sets how far the
  colour is from neutral mid-grey. So ``fst_from_ita(ita(img, skin_mask(img)))`` recovers the
  painted type (tests measure the rate). ITA bands make FST V only slightly darker than IV
  (L* about 52-56), which is the ITA scale's definition, not a claim about real skin.
* **Lesions are painted relative to the skin** (a melanoma is darker than *its* skin, a
  basal cell carcinoma lighter and pinker). With ``skin_type_effect`` 0 each class keeps its
  signature on every tone; with 1 the look of a lesion changes with the skin's lightness the way
  dermatology describes it for darker skin (:func:`darkness`): erythema reads dusky and
  violaceous instead of pink-red, basal cell carcinoma is often pigmented, and pigmented lesions
  contrast less with the skin around them. That change plus scarcity is why classifiers fail on
  types V-VI (Daneshjou et al. 2022, DDI; Groh et al. 2021, Fitzpatrick17k), and what a study
  of synthetic data for fairness must be able to close.
* **Conditions register themselves** in :data:`CONDITIONS` with the ``label``,
  ``nine_partition_label`` and ``three_partition_label`` values that the real Fitzpatrick17k
  file uses for them; adding a condition is one decorated painter function.
* Painting happens in CIELAB (float32), converted once to sRGB; drawing uses OpenCV.
  600 images of 128 px take a few seconds on one core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from fairsynth.config import ConfigError, knob
from fairsynth.data.fst import parse_fst
from fairsynth.data.skin import lab_to_srgb
from fairsynth.io import atomic_open, atomic_write_bytes, atomic_write_text, remove_temporaries

#: The official Fitzpatrick17k columns, in file order.
FITZPATRICK17K_COLUMNS = (
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
)

#: Skin-type weights of the official Fitzpatrick17k file (16,577 rows), rounded.
FITZPATRICK17K_FST_DISTRIBUTION = {
    "I": 0.18, "II": 0.29, "III": 0.20, "IV": 0.17, "V": 0.09, "VI": 0.04, "unknown": 0.03,
}

WORLD_FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------
# Skin tones
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkinTone:
    """Range of skin colours of one Fitzpatrick type, in polar CIELAB form.

    ``ita`` (degrees) is the angle of (b*, L*-50); ``radius`` the distance from
    (b*=0, L*=50); ``a_star`` the redness. The ITA range keeps 2-3 degrees inside the
    Kinyanjui band so texture, JPEG and the estimator's trimming do not cross a cut-off.
    """

    ita: tuple[float, float]
    radius: tuple[float, float]
    a_star: tuple[float, float]


#: Kinyanjui bands: I > 55, II 41-55, III 28-41, IV 19-28, V 10-19, VI <= 10.
SKIN_TONES: dict[int, SkinTone] = {
    1: SkinTone(ita=(59.0, 68.0), radius=(26.0, 32.0), a_star=(6.0, 11.0)),   # L* 72-80
    2: SkinTone(ita=(44.0, 52.0), radius=(23.0, 28.0), a_star=(7.0, 12.0)),   # L* 66-72
    3: SkinTone(ita=(31.0, 38.0), radius=(21.0, 26.0), a_star=(8.0, 13.0)),   # L* 61-66
    4: SkinTone(ita=(21.5, 25.5), radius=(16.0, 22.0), a_star=(8.0, 13.0)),   # L* 56-59
    5: SkinTone(ita=(12.5, 16.5), radius=(12.0, 20.0), a_star=(8.0, 12.0)),   # L* 52-56
    6: SkinTone(ita=(-50.0, -12.0), radius=(16.0, 26.0), a_star=(7.0, 11.0)),  # L* 30-47
}


def sample_skin_colour(fst: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """A CIELAB skin colour ``(L*, a*, b*)`` of Fitzpatrick type ``fst`` (1-6)."""
    if fst not in SKIN_TONES:
        raise ValueError(f"skin type must be 1-6, got {fst!r}")
    tone = SKIN_TONES[fst]
    angle = math.radians(rng.uniform(*tone.ita))
    radius = rng.uniform(*tone.radius)
    return (50.0 + radius * math.sin(angle), float(rng.uniform(*tone.a_star)), radius * math.cos(angle))


# --------------------------------------------------------------------------------------
# Drawing helpers (all sizes in pixels of a square image of side `size`)
# --------------------------------------------------------------------------------------

_SHIFT = 4  # OpenCV fixed-point bits: sub-pixel polygon vertices
_ONE = 1 << _SHIFT


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise, normalised to mean 0 and std 1.  # (S, S) float32

    Wide blurs are made on a coarser grid and resized up (the same look, a fraction of the
    cost of a large Gaussian kernel).
    """
    factor = max(1, int(sigma // 2))
    grid = max(4, math.ceil(size / factor))
    noise = rng.standard_normal((grid, grid), dtype=np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), max(sigma / factor, 0.3), borderType=cv2.BORDER_REFLECT)
    if grid != size:
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _blob_outline(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    aspect: float,
    irregularity: float,
    raggedness: float = 0.0,
    vertices: int = 96,
) -> np.ndarray:
    """Closed outline r(theta) = R (1 + sum_k c_k cos(k theta + phi_k)), rotated.  # (V, 2)

    Harmonics 2-5 give asymmetry and lobes (``irregularity``); ``raggedness`` adds
    lightly smoothed per-vertex noise for a notched border (melanoma's "B" of ABCD).
    """
    theta = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    r = np.ones(vertices)
    for k in range(2, 6):
        r += irregularity * rng.uniform(0.3, 1.0) / math.sqrt(k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if raggedness > 0:
        jitter = rng.standard_normal(vertices)
        jitter = (jitter + np.roll(jitter, 1) + np.roll(jitter, -1)) / math.sqrt(3.0)
        r *= 1.0 + raggedness * jitter
    r = np.clip(r, 0.35, None) * radius
    x, y = r * np.cos(theta), aspect * r * np.sin(theta)
    rotation = rng.uniform(0.0, np.pi)
    cos_r, sin_r = math.cos(rotation), math.sin(rotation)
    return np.stack([center[0] + cos_r * x - sin_r * y, center[1] + sin_r * x + cos_r * y], axis=1)


def _fill(outlines: list[np.ndarray], size: int, blur: float) -> np.ndarray:
    """Anti-aliased filled polygons as a soft alpha in 0..1.  # (S, S) float32"""
    canvas = np.zeros((size, size), dtype=np.uint8)
    polygons = [np.round(points * _ONE).astype(np.int32) for points in outlines]
    cv2.fillPoly(canvas, polygons, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    alpha = canvas.astype(np.float32) / 255.0
    if blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    return alpha


def _curves(
    rng: np.random.Generator, size: int, count: int, length: tuple[float, float], bend: float, thickness: int
) -> np.ndarray:
    """Anti-aliased quadratic Bezier curves as an alpha in 0..1 (hairs, vessels).  # (S, S)"""
    canvas = np.zeros((size, size), dtype=np.uint8)
    t = np.linspace(0.0, 1.0, 32)[:, None]  # (32, 1)
    for _ in range(count):
        start = rng.uniform(-0.1 * size, 1.1 * size, 2)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        span = rng.uniform(*length) * size
        end = start + span * np.array([math.cos(direction), math.sin(direction)])
        normal = np.array([-math.sin(direction), math.cos(direction)])
        control = (start + end) / 2 + normal * span * rng.uniform(-bend, bend)
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end  # (32, 2)
        cv2.polylines(
            canvas, [np.round(points * _ONE).astype(np.int32)], False, 255, thickness, cv2.LINE_AA, _SHIFT
        )
    return canvas.astype(np.float32) / 255.0


def _lerp(base: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """base + weight * (target - base) over the channel axis.  # (S, S, 3)"""
    return base + weight[..., None] * (target - base)


def _lab(lightness: float, a_star: float, b_star: float) -> np.ndarray:
    return np.array([lightness, a_star, b_star], dtype=np.float32)


def _lesion_center(rng: np.random.Generator, size: int) -> tuple[float, float]:
    # Clinical photos centre the lesion roughly; +-10 % of the side varies its position.
    return (size / 2 + rng.uniform(-0.1, 0.1) * size, size / 2 + rng.uniform(-0.1, 0.1) * size)


# --------------------------------------------------------------------------------------
# Conditions: each painter returns the lesion's colour field and its alpha
# --------------------------------------------------------------------------------------

#: A painter: (rng, skin CIELAB image (S, S, 3), skin colour (L*, a*, b*), darkness in [0, 1])
#: -> (target, alpha). ``darkness`` is :func:`darkness` of the skin times the world's
#: ``skin_type_effect``; at 0 a painter makes no extra random draw, so its image is the same
#: as in a world without the effect, bit for bit.
Painter = Callable[
    [np.random.Generator, np.ndarray, tuple[float, float, float], float], tuple[np.ndarray, np.ndarray]
]

#: Skin lightness (CIELAB L*) at which lesions start to change look, and where the change is full.
DARKNESS_START_L, DARKNESS_FULL_L = 58.0, 42.0


def darkness(lightness: float, effect: float = 1.0) -> float:
    """How far a skin of CIELAB ``lightness`` shifts a lesion's look: 0 at L* >= 58, rising
    linearly to 1 at L* <= 42, times ``effect`` (the world's ``skin_type_effect``).

    Continuous in the skin's lightness, with no switch at a skin type: in this world type IV
    (L* 56-59) shifts a little, type V (52-56) by about a quarter, type VI (30-47) nearly fully.
    """
    if effect <= 0.0:
        return 0.0
    span = DARKNESS_START_L - DARKNESS_FULL_L
    return float(effect * min(1.0, max(0.0, (DARKNESS_START_L - lightness) / span)))


def _dusky(colour: np.ndarray, tone: tuple[float, float, float], shift: float) -> np.ndarray:
    """Erythema on darker skin: the redness above the skin's fades by up to half, and the colour
    turns darker and bluer (violaceous, dusky or brown rather than pink-red; Alexis & Blackcloud
    2014, J Clin Aesthet Dermatol; Kaufman & Alexis 2018, Am J Clin Dermatol)."""
    if shift <= 0.0:
        return colour
    lightness, a_star, b_star = tone
    out = np.array(colour, dtype=np.float32)
    redness = max(0.0, float(out[1]) - a_star)
    out[1] = a_star + redness * (1.0 - 0.5 * shift)
    out[2] = out[2] - 7.0 * shift
    out[0] = out[0] - 6.0 * shift
    return out


def _less_contrast(target: np.ndarray, tone: tuple[float, float, float], shift: float) -> np.ndarray:
    """Pigmented lesions on darker skin: the lightness difference from the skin shrinks by up to
    45 % and the colour moves toward the skin's (lower lesion-to-skin contrast; Kinyanjui et al.
    2020, MICCAI; Adamson & Smith 2018, JAMA Dermatol)."""
    if shift <= 0.0:
        return target
    lightness, a_star, b_star = tone
    keep = 1.0 - 0.45 * shift
    out = target.copy()
    out[..., 0] = lightness - (lightness - out[..., 0]) * keep
    out[..., 1] = a_star + (out[..., 1] - a_star) * (1.0 - 0.3 * shift)
    out[..., 2] = b_star + (out[..., 2] - b_star) * (1.0 - 0.3 * shift)
    return out


@dataclass(frozen=True)
class Condition:
    """A lesion class of the world, with its Fitzpatrick17k partition labels."""

    label: str
    nine_partition_label: str
    three_partition_label: str
    paint: Painter
    description: str


#: The world's conditions by Fitzpatrick17k ``label``; painters register themselves below.
CONDITIONS: dict[str, Condition] = {}


def _condition(label: str, nine_partition_label: str, three_partition_label: str) -> Callable[[Painter], Painter]:
    """Register a painter under a Fitzpatrick17k label (partition values copied from the real file)."""

    def register(paint: Painter) -> Painter:
        if label in CONDITIONS:
            raise ValueError(f"condition {label!r} is registered twice")
        doc = (paint.__doc__ or "").strip().splitlines()
        CONDITIONS[label] = Condition(
            label, nine_partition_label, three_partition_label, paint, doc[0] if doc else ""
        )
        return paint

    return register


@_condition("melanoma", "malignant melanoma", "malignant")
def _paint_melanoma(
    rng: np.random.Generator, skin: np.ndarray, tone: tuple[float, float, float], shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Irregular, asymmetric, multi-tone dark blob (brown, black, blue-grey) with a ragged border.

    On darker skin (``shift`` > 0) it contrasts less with the skin (:func:`_less_contrast`).
    """
    size = skin.shape[0]
    lightness, a_star, b_star = tone
    radius = rng.uniform(0.13, 0.22) * size
    outline = _blob_outline(rng, _lesion_center(rng, size), radius, rng.uniform(0.65, 1.0), 0.18, 0.06)
    alpha = _fill([outline], size, blur=0.5)
    # Tones scale with the skin's lightness so the lesion is darker than its own skin.
    brown = _lab(lightness * rng.uniform(0.45, 0.6), a_star + rng.uniform(3, 7), b_star + rng.uniform(3, 9))
    black = _lab(lightness * rng.uniform(0.18, 0.28), a_star * 0.3 + 1.0, b_star * 0.3 + 1.0)
    blue_grey = _lab(lightness * rng.uniform(0.55, 0.65), rng.uniform(-3, 0), rng.uniform(-9, -4))
    black_weight = 1.0 / (1.0 + np.exp(-4.0 * (_smooth_field(rng, size, radius / 4) - 0.4)))
    blue_weight = 0.8 / (1.0 + np.exp(-4.0 * (_smooth_field(rng, size, radius / 3) - 0.9)))
    target = np.broadcast_to(brown, skin.shape).astype(np.float32)
    target = _lerp(target, np.broadcast_to(black, skin.shape), black_weight)
    target = _lerp(target, np.broadcast_to(blue_grey, skin.shape), blue_weight)
    target[..., 0] += 1.5 * rng.standard_normal((size, size), dtype=np.float32)
    return _less_contrast(target, tone, shift), alpha


@_condition("nevocytic nevus", "benign melanocyte", "benign")
def _paint_nevus(
    rng: np.random.Generator, skin: np.ndarray, tone: tuple[float, float, float], shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Small, round, smooth-edged, uniformly brown macule, slightly darker at the centre.

    On darker skin (``shift`` > 0) it contrasts less with the skin (:func:`_less_contrast`).
    """
    size = skin.shape[0]
    lightness, a_star, b_star = tone
    center = _lesion_center(rng, size)
    radius = rng.uniform(0.07, 0.13) * size
    outline = _blob_outline(rng, center, radius, rng.uniform(0.85, 1.0), 0.03)
    alpha = _fill([outline], size, blur=0.12 * radius)
    brown = _lab(lightness * rng.uniform(0.62, 0.75), a_star + rng.uniform(2, 5), b_star + rng.uniform(5, 10))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    closeness = np.clip(1.0 - ((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / radius**2, 0.0, 1.0)
    target = np.broadcast_to(brown, skin.shape).astype(np.float32)
    target[..., 0] -= 3.0 * closeness + 0.6 * rng.standard_normal((size, size), dtype=np.float32)
    return _less_contrast(target, tone, shift), alpha


@_condition("basal cell carcinoma", "malignant epidermal", "malignant")
def _paint_basal_cell_carcinoma(
    rng: np.random.Generator, skin: np.ndarray, tone: tuple[float, float, float], shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pink pearly rolled ring with a lighter centre, a sheen and fine red vessels.

    On darker skin (``shift`` > 0) its pink reads dusky (:func:`_dusky`), and with probability
    0.85 x ``shift`` it is *pigmented*: a brown rolled ring with blue-grey to black globules that
    resembles a melanocytic lesion. Pigmented basal cell carcinoma is far more common on darker
    skin (Matsuoka et al. 1981, J Am Acad Dermatol; Bigler et al. 1996,
    J Am Acad Dermatol), and its confusion with nevus and melanoma is a known failure there.
    """
    size = skin.shape[0]
    lightness, a_star, b_star = tone
    center = _lesion_center(rng, size)
    radius = rng.uniform(0.10, 0.17) * size
    outline = _blob_outline(rng, center, radius, rng.uniform(0.75, 1.0), 0.05)
    inner_scale = rng.uniform(0.55, 0.7)
    inner = center + (outline - center) * inner_scale
    alpha = _fill([outline], size, blur=0.8)
    ringness = np.clip(alpha - _fill([inner], size, blur=0.15 * radius), 0.0, 1.0)
    ring = _dusky(
        _lab(min(lightness + rng.uniform(3, 6), 95.0), a_star + rng.uniform(16, 24), b_star - rng.uniform(2, 5)), tone, shift
    )
    centre = _lab(min(lightness + rng.uniform(9, 14), 96.0), a_star + rng.uniform(0, 4), b_star - rng.uniform(3, 6))
    target = _lerp(np.broadcast_to(centre, skin.shape).astype(np.float32), np.broadcast_to(ring, skin.shape), ringness)
    # Pearly sheen: a soft highlight on one side of the rolled border.
    side = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    hx = center[0] + 0.8 * radius * math.cos(side)
    hy = center[1] + 0.8 * radius * math.sin(side)
    sheen = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.25 * radius) ** 2))
    target[..., 0] += 6.0 * sheen
    # Arborising telangiectasia: thin red lines inside the lesion.
    vessels = _curves(rng, size, int(rng.integers(1, 4)), (0.1, 0.25), 0.3, 1) * alpha * 0.7
    vessel = _dusky(_lab(lightness - 8.0, a_star + 25.0, b_star), tone, shift)
    target = _lerp(target, np.broadcast_to(vessel, skin.shape), vessels)
    # Drawn last, and only on darker skin, so the lesion's shape is the same at every effect strength.
    if shift > 0.0 and rng.random() < 0.85 * shift:
        brown = _lab(lightness * rng.uniform(0.55, 0.7), a_star + rng.uniform(3, 6), b_star + rng.uniform(3, 7))
        globule = _lab(lightness * rng.uniform(0.3, 0.42), a_star * 0.4, b_star * 0.3 - rng.uniform(1, 4))
        globules = 1.0 / (1.0 + np.exp(-5.0 * (_smooth_field(rng, size, radius / 5) - 0.6)))
        pigment = _lerp(np.broadcast_to(brown, skin.shape).astype(np.float32), np.broadcast_to(globule, skin.shape), globules)
        # the rolled border stays visible: the ring a little darker than the centre, a trace of sheen
        pigment[..., 0] += 4.0 * (1.0 - ringness) + 2.0 * sheen
        target = _lerp(target, pigment, np.full((size, size), 0.9, dtype=np.float32))
    return target, alpha


@_condition("psoriasis", "inflammatory", "non-neoplastic")
def _paint_psoriasis(
    rng: np.random.Generator, skin: np.ndarray, tone: tuple[float, float, float], shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Large red plaque (with satellite plaques) covered in rough silvery-white scale.

    On darker skin (``shift`` > 0) the plaque's erythema reads violaceous, dusky or grey-brown
    rather than salmon-red (:func:`_dusky`; Alexis & Blackcloud 2014), under the same scale.
    """
    size = skin.shape[0]
    lightness, a_star, b_star = tone
    center = _lesion_center(rng, size)
    radius = rng.uniform(0.18, 0.28) * size
    outlines = [_blob_outline(rng, center, radius, rng.uniform(0.6, 1.0), 0.12, 0.03)]
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        spot = (center[0] + 1.15 * radius * math.cos(angle), center[1] + 1.15 * radius * math.sin(angle))
        outlines.append(_blob_outline(rng, spot, radius * rng.uniform(0.15, 0.3), rng.uniform(0.7, 1.0), 0.1))
    alpha = _fill(outlines, size, blur=1.2)
    plaque = _dusky(_lab(lightness - rng.uniform(3, 8), a_star + rng.uniform(14, 22), b_star - rng.uniform(0, 3)), tone, shift)
    silver = _lab(min(lightness + rng.uniform(15, 22), 94.0), rng.uniform(0, 2), rng.uniform(0, 3))
    roughness = _smooth_field(rng, size, 0.8) + 0.6 * _smooth_field(rng, size, 2.0)
    level = np.quantile(roughness, rng.uniform(0.45, 0.65))
    scale = np.clip((roughness - level) * 1.5, 0.0, 1.0) * rng.uniform(0.7, 0.95)
    target = _lerp(np.broadcast_to(plaque, skin.shape).astype(np.float32), np.broadcast_to(silver, skin.shape), scale)
    return target, alpha


# --------------------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Rendering:
    """One world image and its hidden layers.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB, with hairs where drawn.
        hairless: the same image without hairs (identical to ``image`` when ``hair`` is False).
        hair_mask: ``(S, S)`` bool, pixels at least half covered by a hair.
        lesion_mask: ``(S, S)`` bool, pixels at least half covered by the lesion.
        skin_lab: the skin's base CIELAB colour ``(L*, a*, b*)``.
        hair: whether hairs were drawn.
    """

    image: np.ndarray
    hairless: np.ndarray
    hair_mask: np.ndarray
    lesion_mask: np.ndarray
    skin_lab: tuple[float, float, float]
    hair: bool

    @property
    def ita(self) -> float:
        """The true ITA (degrees) of the skin's base colour."""
        lightness, _, b_star = self.skin_lab
        return math.degrees(math.atan2(lightness - 50.0, b_star))


def _paint_skin(rng: np.random.Generator, size: int, tone: tuple[float, float, float]) -> np.ndarray:
    """Skin of one base colour with blotches, a lighting gradient, fine grain and pores.  # (S, S, 3)"""
    lab = np.empty((size, size, 3), dtype=np.float32)
    lab[...] = tone
    # Low-frequency blotches (uneven pigment and redness), amplitudes of a few CIELAB units.
    lab[..., 0] += 1.2 * _smooth_field(rng, size, size / 10)
    lab[..., 1] += 0.8 * _smooth_field(rng, size, size / 8)
    lab[..., 2] += 0.6 * _smooth_field(rng, size, size / 10)
    # Lighting: a linear ramp through the centre, zero mean so the skin's ITA is kept.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    lab[..., 0] += rng.uniform(0.0, 3.0) * (xx * math.cos(direction) + yy * math.sin(direction))
    # Fine grain.
    lab[..., 0] += 0.7 * rng.standard_normal((size, size), dtype=np.float32)
    # Pores: sparse small dark dots.
    pores = np.zeros((size, size), dtype=np.uint8)
    count = size * size // 180
    for x, y in rng.uniform(0, size, (count, 2)):
        cv2.circle(pores, (int(x * _ONE), int(y * _ONE)), _ONE // 2, 255, -1, cv2.LINE_AA, _SHIFT)
    pores_alpha = cv2.GaussianBlur(pores.astype(np.float32) / 255.0, (0, 0), 0.6)
    lab[..., 0] -= rng.uniform(3.0, 5.0) * pores_alpha
    return lab


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def render_layers(
    cls: str,
    fst: int,
    rng: np.random.Generator,
    size: int = 128,
    hair: bool | None = None,
    hair_probability: float = 0.3,
    skin_type_effect: float = 0.0,
) -> Rendering:
    """Paint one world image and return it with its hidden layers (see :class:`Rendering`).

    Args:
        cls: the condition, a key of :data:`CONDITIONS` (a Fitzpatrick17k ``label``).
        fst: the true Fitzpatrick skin type, 1-6.
        rng: the image's own generator; the same generator state gives the same image.
        size: side of the square image in pixels (>= 32).
        hair: draw hairs (True), never (False), or with ``hair_probability`` (None).
        hair_probability: chance of hairs when ``hair`` is None.
        skin_type_effect: how strongly the lesion's look follows the skin's lightness
            (:func:`darkness`); 0 paints every class with the same signature on every tone.

    The random draws happen in a fixed order (skin, lesion, hair decision, hairs), so the
    hairless layer of an image does not depend on ``hair``.
    """
    if cls not in CONDITIONS:
        raise ValueError(f"unknown condition {cls!r}; the world has: {', '.join(sorted(CONDITIONS))}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if not 0.0 <= hair_probability <= 1.0:
        raise ValueError(f"hair_probability must be in [0, 1], got {hair_probability}")
    if not 0.0 <= skin_type_effect <= 1.0:
        raise ValueError(f"skin_type_effect must be in [0, 1], got {skin_type_effect}")
    # 1. skin
    tone = sample_skin_colour(fst, rng)
    skin = _paint_skin(rng, size, tone)
    # 2. lesion, composited over the skin in CIELAB
    target, alpha = CONDITIONS[cls].paint(rng, skin, tone, darkness(tone[0], skin_type_effect))
    lab = _lerp(skin, target, alpha)
    hairless = _to_uint8(lab_to_srgb(lab))
    # 3. hairs: dark, thin, curved; composited in sRGB like an opaque fibre over the photo
    drawn = bool(rng.random() < hair_probability) if hair is None else bool(hair)
    if drawn:
        thickness = max(1, int(round(size / 128 * rng.choice([1, 1, 2]))))
        hair_alpha = _curves(rng, size, int(rng.integers(2, 9)), (0.4, 1.1), 0.25, thickness)
        hair_colour = lab_to_srgb(_lab(min(rng.uniform(6, 16), tone[0] * 0.35), 1.0, rng.uniform(1, 5)))
        rgb = _lerp(hairless.astype(np.float32) / 255.0, hair_colour, hair_alpha)
        image = _to_uint8(rgb)
        hair_mask = hair_alpha >= 0.5
    else:
        image = hairless
        hair_mask = np.zeros((size, size), dtype=bool)
    return Rendering(
        image=image,
        hairless=hairless,
        hair_mask=hair_mask,
        lesion_mask=alpha >= 0.5,
        skin_lab=tuple(float(v) for v in tone),  # type: ignore[arg-type]
        hair=drawn,
    )


def render(
    cls: str,
    fst: int,
    rng: np.random.Generator,
    size: int = 128,
    hair: bool | None = None,
    hair_probability: float = 0.3,
    skin_type_effect: float = 0.0,
) -> np.ndarray:
    """Paint one world image: ``(size, size, 3)`` uint8 RGB. See :func:`render_layers`.

    Example:
        >>> image = render("melanoma", 6, np.random.default_rng(0), size=128, hair=False)
        >>> image.shape
        (128, 128, 3)
    """
    return render_layers(
        cls, fst, rng, size=size, hair=hair, hair_probability=hair_probability, skin_type_effect=skin_type_effect
    ).image


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


@dataclass
class WorldConfig:
    """Settings of a generated dermatology world; saved in ``world.json`` beside it."""

    n: int = knob(600, "Number of images.")
    seed: int = knob(0, "Seed; the same settings and seed give byte-identical files.")
    size: int = knob(128, "Side of the square images in pixels (>= 32).")
    fst_distribution: dict[str, float] = knob(
        dict(FITZPATRICK17K_FST_DISTRIBUTION),
        "Relative weights of the skin types I..VI (keys I-VI or 1-6) and 'unknown' (the image "
        "still has a true type, but the CSV says -1); normalised. Default: Fitzpatrick17k's skew.",
    )
    class_distribution: dict[str, float] = knob(
        {}, "Relative weights of the conditions by label; only the listed conditions are drawn. "
        "Empty: all conditions, uniformly.",
    )
    hair_probability: float = knob(0.3, "Chance that an image has dark hairs (to exercise hair removal).")
    jpeg_quality: int = knob(95, "JPEG quality of the written images (4:4:4 chroma, like a careful export).")
    skin_type_effect: float = knob(
        0.0, "How strongly a lesion's look changes with the skin's lightness, 0..1: erythema dusky and bluer, "
        "basal cell carcinoma often pigmented, pigmented lesions less contrasted on darker skin (see `darkness`). "
        "0: every class keeps one signature on every tone (a classifier that learns light skin knows dark skin); "
        "1: the calibrated dermatology, where scarcity of types V-VI costs AUROC.",
    )
    test_per_type: int = knob(
        0, "Images per skin type I-VI of an external, skin-type-balanced test world written beside the world "
        "(`<workdir>/world-test/` in a study), from `test_seed`; classes balanced within each type. 0: none.",
    )
    test_seed: int | None = knob(None, "Seed of the test world; default: seed + 1 (never the world's own seed).")
    balanced: bool = knob(
        False, "Cross the classes with the skin types: each known type gets its exact share of `n` and, within "
        "it, the classes theirs (the test world is drawn so); off: types and classes are drawn independently.",
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"world.n must be >= 1, got {self.n}")
        if self.size < 32:
            raise ConfigError(f"world.size must be >= 32 pixels, got {self.size}")
        if not 0.0 <= self.hair_probability <= 1.0:
            raise ConfigError(f"world.hair_probability must be in [0, 1], got {self.hair_probability}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"world.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.skin_type_effect <= 1.0:
            raise ConfigError(f"world.skin_type_effect must be in [0, 1], got {self.skin_type_effect}")
        if self.test_per_type < 0:
            raise ConfigError(f"world.test_per_type must be >= 0, got {self.test_per_type}")
        if self.test_seed is not None and self.test_seed == self.seed:
            raise ConfigError(f"world.test_seed must differ from world.seed ({self.seed}): the test world must be new images")
        self.fst_weights()  # validates
        self.class_weights()

    def fst_weights(self) -> dict[int | None, float]:
        """Normalised weights by skin type (None = recorded as unknown)."""
        weights: dict[int | None, float] = {}
        for key, value in self.fst_distribution.items():
            try:
                fst = parse_fst(key)
            except ValueError:
                raise ConfigError(
                    f"world.fst_distribution: {key!r} is not a skin type; use I..VI (or 1..6) and 'unknown'"
                ) from None
            if fst in weights:
                raise ConfigError(f"world.fst_distribution names skin type {key!r} twice")
            weights[fst] = float(value)
        return _normalised(weights, "world.fst_distribution", need_known=True)

    def class_weights(self) -> dict[str, float]:
        """Normalised weights by condition label."""
        if not self.class_distribution:
            return {label: 1.0 / len(CONDITIONS) for label in CONDITIONS}
        unknown = sorted(set(self.class_distribution) - set(CONDITIONS))
        if unknown:
            raise ConfigError(
                f"world.class_distribution: unknown condition(s) {', '.join(map(repr, unknown))}; "
                f"the world has: {', '.join(sorted(CONDITIONS))}"
            )
        return _normalised(dict(self.class_distribution), "world.class_distribution")


def _normalised(weights: dict[Any, float], where: str, need_known: bool = False) -> dict[Any, float]:
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise ConfigError(f"{where}: weights must be finite and >= 0, got {weights}")
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"{where}: the weights sum to 0")
    if need_known and sum(w for k, w in weights.items() if k is not None) <= 0:
        raise ConfigError(f"{where}: at least one skin type I..VI needs a positive weight")
    return {key: w / total for key, w in weights.items()}


def _quotas(weights: dict[Any, float], n: int) -> dict[Any, int]:
    """Exact counts summing to ``n`` by the largest-remainder method (ties: listing order).

    Exact quotas rather than independent draws: small worlds still contain the rare groups
    (FST VI at 4 % of 300 is 12 images, not "somewhere between 5 and 20").
    """
    raw = {key: w * n for key, w in weights.items()}
    counts = {key: int(math.floor(v)) for key, v in raw.items()}
    order = sorted(raw, key=lambda key: -(raw[key] - counts[key]))  # stable sort keeps listing order
    for key in order[: n - sum(counts.values())]:
        counts[key] += 1
    return counts


@dataclass(frozen=True)
class PlannedImage:
    """What image ``index`` of a world shows (decided before painting)."""

    index: int
    label: str
    fst: int  # the true skin type painted
    fst_recorded: int  # what the CSV says: fst, or -1 for unknown


def plan_world(config: WorldConfig) -> list[PlannedImage]:
    """Assign a condition and a skin type to every image, with exact quotas, seeded."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    fst_weights = config.fst_weights()
    if config.balanced:
        return _plan_balanced(config, fst_weights, rng)
    fst_slots = [fst for fst, count in _quotas(fst_weights, config.n).items() for _ in range(count)]
    label_slots = [label for label, count in _quotas(config.class_weights(), config.n).items() for _ in range(count)]
    fst_slots = [fst_slots[i] for i in rng.permutation(config.n)]
    label_slots = [label_slots[i] for i in rng.permutation(config.n)]
    known = {fst: w for fst, w in fst_weights.items() if fst is not None}
    known_types = np.array(sorted(known))
    known_p = np.array([known[fst] for fst in known_types]) / sum(known.values())
    plan = []
    for index, (fst, label) in enumerate(zip(fst_slots, label_slots)):
        if fst is None:  # unknown in the CSV; the painted type follows the known skew
            true_fst = int(rng.choice(known_types, p=known_p))
            plan.append(PlannedImage(index, label, true_fst, -1))
        else:
            plan.append(PlannedImage(index, label, int(fst), int(fst)))
    return plan


def _plan_balanced(config: WorldConfig, fst_weights: dict[int | None, float], rng: np.random.Generator) -> list[PlannedImage]:
    """Exact class quotas inside every skin type's exact quota, in a seeded order."""
    known = {fst: w for fst, w in fst_weights.items() if fst is not None}
    cells = [
        (label, int(fst))
        for fst, count in _quotas(known, config.n).items()
        for label, within in _quotas(config.class_weights(), count).items()
        for _ in range(within)
    ]
    order = rng.permutation(len(cells))
    return [PlannedImage(index, cells[i][0], cells[i][1], cells[i][1]) for index, i in enumerate(order)]


def balanced_test_world(config: WorldConfig) -> WorldConfig:
    """The settings of ``config``'s external test world: ``test_per_type`` images of every skin type
    I-VI (classes balanced within each), every type recorded, from ``test_seed`` (default seed + 1),
    painted like the world itself (size, hairs, ``skin_type_effect``)."""
    if config.test_per_type < 1:
        raise ConfigError("world.test_per_type is 0: this world has no test world")
    return dataclasses.replace(
        config, n=6 * config.test_per_type, seed=config.seed + 1 if config.test_seed is None else config.test_seed,
        fst_distribution={roman: 1.0 for roman in ("I", "II", "III", "IV", "V", "VI")},
        balanced=True, test_per_type=0, test_seed=None,
    )


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 image (4:4:4 chroma so 1-px hairs keep their colour)."""
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    picture.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


@dataclass(frozen=True)
class GeneratedWorld:
    """Where a generated world lies."""

    root: Path
    csv: Path
    images: Path
    metadata: Path
    n: int


def _previous_images(metadata_path: Path) -> set[str]:
    """md5 hashes of the images a previous run wrote here (empty when there was none)."""
    if not metadata_path.exists():
        return set()
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        if metadata.get("generator") != "fairsynth.world.derm":
            raise ValueError
        return {str(row["md5hash"]) for row in metadata["images"] if _MD5.fullmatch(str(row["md5hash"]))}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FileExistsError(
            f"{metadata_path} is not the metadata of a generated dermatology world; "
            "refusing to write over it (choose an empty output folder)"
        ) from None


_MD5 = re.compile(r"[0-9a-f]{32}")


def generate_world(output_dir: str | Path, config: WorldConfig | None = None, **overrides: Any) -> GeneratedWorld:
    """Write a Fitzpatrick17k-format dermatology world to ``output_dir``.

    Args:
        output_dir: folder to write ``fitzpatrick17k.csv``, ``images/`` and ``world.json`` to.
        config: the settings; default :class:`WorldConfig`.
        **overrides: fields of :class:`WorldConfig` to change, e.g. ``n=300, seed=1``.

    Files are written atomically, images first, then ``world.json``, the CSV last: a crash
    never leaves a CSV naming missing images. Re-running is a **clean regeneration**: the
    same settings reproduce byte-identical files (images already present with the right
    content are not rewritten), other settings replace the CSV and ``world.json``, and the
    images that the previous ``world.json`` listed but the new CSV does not are removed after
    the CSV is in place (no other file is ever deleted; images left by a run that crashed
    before its first ``world.json`` stay until a run with the same settings reuses them). A
    folder holding a ``fitzpatrick17k.csv`` without ``world.json`` (real data), or a foreign
    ``world.json``, is refused rather than overwritten.

    Example:
        >>> world = generate_world("runs/world", n=600, seed=0)  # doctest: +SKIP
        >>> pd.read_csv(world.csv).fitzpatrick_scale.value_counts()  # doctest: +SKIP
    """
    config = config if config is not None else WorldConfig()
    if overrides:
        valid = [f.name for f in dataclasses.fields(WorldConfig)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ConfigError(f"unknown world setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        config = dataclasses.replace(config, **overrides)
    root = Path(output_dir)
    csv_path, metadata_path, images_dir = root / "fitzpatrick17k.csv", root / "world.json", root / "images"
    if csv_path.exists() and not metadata_path.exists():
        raise FileExistsError(
            f"{csv_path} exists but {metadata_path.name} does not: not a generated world; "
            "refusing to overwrite it (choose an empty output folder)"
        )
    previous = _previous_images(metadata_path)
    images_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(root)  # writes a kill interrupted

    rows: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in plan_world(config):
        # Each image has its own generator keyed by (seed, index): images don't share draws.
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, item.index)))
        layers = render_layers(
            item.label, item.fst, rng, config.size, hair_probability=config.hair_probability,
            skin_type_effect=config.skin_type_effect,
        )
        data = encode_jpeg(layers.image, config.jpeg_quality)
        md5 = hashlib.md5(data).hexdigest()
        if md5 in seen:
            raise RuntimeError(f"two world images have the same bytes (md5 {md5}); change the seed")
        seen.add(md5)
        path = images_dir / f"{md5}.jpg"
        if not (path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == md5):
            atomic_write_bytes(path, data)
        condition = CONDITIONS[item.label]
        url = f"https://fairsynth.invalid/world/{item.label.replace(' ', '-')}/{md5}.jpg"
        rows.append(
            {
                "md5hash": md5,
                "fitzpatrick_scale": item.fst_recorded,
                "fitzpatrick_centaur": item.fst_recorded,
                "label": condition.label,
                "nine_partition_label": condition.nine_partition_label,
                "three_partition_label": condition.three_partition_label,
                "qc": None,
                "url": url,
                "url_alphanum": re.sub(r"[^0-9A-Za-z]", "", url) + ".jpg",
            }
        )
        truth.append(
            {
                "index": item.index,
                "md5hash": md5,
                "label": item.label,
                "fst": item.fst,
                "fst_recorded": item.fst_recorded,
                "hair": layers.hair,
                "skin_lab": [round(v, 4) for v in layers.skin_lab],
                "ita": round(layers.ita, 4),
            }
        )

    metadata = {
        "generator": "fairsynth.world.derm",
        "format_version": WORLD_FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "columns": list(FITZPATRICK17K_COLUMNS),
        "images": truth,
    }
    atomic_write_text(metadata_path, json.dumps(metadata, indent=1) + "\n")
    with atomic_open(csv_path, "w") as handle:
        pd.DataFrame(rows, columns=list(FITZPATRICK17K_COLUMNS)).to_csv(handle, index=False)

    # Only images that the previous world listed are removed: never a file we did not write.
    for md5 in previous - seen:
        (images_dir / f"{md5}.jpg").unlink(missing_ok=True)
    return GeneratedWorld(root=root, csv=csv_path, images=images_dir, metadata=metadata_path, n=len(rows))
