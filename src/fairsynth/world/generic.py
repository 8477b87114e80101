"""The generic captioned world that the embedded base model is pretrained on.

Why it exists: fine-tuning must have something real to teach. If the base has never drawn a
dark irregular blob on a dark background, no adapter can make "melanoma on Fitzpatrick skin
type VI" appear in a few hundred steps (earlier prototypes measured exactly that failure).
So the base first learns a *generic* visual vocabulary that spans what the dermatology world
(:mod:`fairsynth.world.derm`) needs, described in other words:

=====================  =========================================================
derm world needs        generic world says
=====================  =========================================================
melanoma                "a medium mottled dark brown irregular blob"
nevocytic nevus         "a small smooth brown round blob"
basal cell carcinoma    "a medium smooth pink ring ..., with thin red lines"
psoriasis               "a large scaly red patch"
skin type I ... VI      "on a pale beige / beige / light tan / tan / light brown /
                        brown / dark brown background"
hairs                   "..., crossed by thin dark lines"
=====================  =========================================================

The images contain **no lesion and no skin words**: captions come from one fixed template
over six attributes, and every attribute is always named, so a word means one narrow range of
pixels (a "sharply bound" vocabulary)::

    a {size} {texture} {colour} {shape} on a {background} background[{lines}]
    "a small smooth brown round blob on a beige background"
    "a large scaly red patch on a tan background, crossed by thin dark lines"

Design:

* One palette of named CIELAB colours (:data:`PALETTE`) serves objects and backgrounds, so
  "brown" is the same colour in either place. The background tones sit on the derm world's
  six skin tones (same L* and ITA ranges) plus two non-skin tones (grey, pale blue).
* Drawing reuses :mod:`fairsynth.world.derm`'s helpers (outlines, soft fills, curves,
  textured base colour), so the two worlds share one look.
* Deterministic: image ``index`` of world ``seed`` has its own generator keyed by
  ``(seed, index)``; the same seed gives byte-identical images on any machine with the same
  numpy/OpenCV.
* A fixed set of (colour, shape, background) combinations is **held out** (:func:`is_held_out`)
  so that prompt-following can be measured on combinations the base never saw.
* :func:`read_attributes` reads background tone, object colour and size back from pixels
  (median CIELAB colours and areas); it is how the build script measures whether the base
  draws what its prompt asks, and its accuracy on real world images is the ceiling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import cv2
import numpy as np

from fairsynth.data.skin import lab_to_srgb, skin_mask, srgb_to_lab
from fairsynth.world.derm import (
    _blob_outline,
    _curves,
    _fill,
    _lab,
    _lerp,
    _lesion_center,
    _paint_skin,
    _smooth_field,
    _to_uint8,
)

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedColour:
    """A colour word: CIELAB centre ``(L*, a*, b*)`` and the +- jitter of each channel."""

    lab: tuple[float, float, float]
    jitter: tuple[float, float, float] = (2.0, 2.0, 2.0)

    def sample(self, rng: np.random.Generator) -> tuple[float, float, float]:
        return tuple(float(c + rng.uniform(-j, j)) for c, j in zip(self.lab, self.jitter))  # type: ignore[return-value]


#: The named colours. The seven beige-to-dark-brown tones sit on the derm world's skin tones
#: I..VI (L* and ITA of :data:`fairsynth.world.derm.SKIN_TONES`; type VI spans brown and dark
#: brown); object colours cover melanoma's black / dark brown / blue-grey, a nevus's brown,
#: a carcinoma's pink, psoriasis's red and white scale, plus generic green / blue / yellow.
PALETTE: dict[str, NamedColour] = {
    "pale beige": NamedColour((76.0, 8.0, 13.0)),   # ITA ~63: type I
    "beige": NamedColour((69.0, 9.5, 17.0)),        # ITA ~48: type II
    "light tan": NamedColour((63.5, 10.5, 19.0)),   # ITA ~35: type III
    "tan": NamedColour((57.5, 10.5, 17.5), (1.2, 2.0, 2.0)),  # ITA ~23: type IV
    "light brown": NamedColour((53.5, 10.0, 15.0), (1.2, 2.0, 2.0)),  # ITA ~13: type V
    "brown": NamedColour((43.0, 12.0, 19.0)),       # ITA ~-20: type VI (lighter half)
    "dark brown": NamedColour((33.0, 9.0, 14.0)),   # ITA ~-50: type VI (darker half)
    "black": NamedColour((15.0, 1.5, 2.5)),
    "blue-grey": NamedColour((54.0, -2.0, -11.0)),
    "pink": NamedColour((72.0, 27.0, 5.0)),
    "red": NamedColour((46.0, 46.0, 26.0), (2.0, 3.0, 3.0)),
    "white": NamedColour((93.0, 0.0, 2.0), (2.0, 1.0, 1.5)),
    "green": NamedColour((55.0, -35.0, 30.0), (2.0, 3.0, 3.0)),
    "blue": NamedColour((42.0, 14.0, -45.0), (2.0, 3.0, 3.0)),
    "yellow": NamedColour((85.0, 0.0, 66.0), (2.0, 2.0, 4.0)),
    "grey": NamedColour((60.0, 0.0, 0.0), (2.0, 1.0, 1.0)),
    "pale blue": NamedColour((82.0, -5.0, -14.0)),
}

#: Every attribute and its words, in caption order. Lines: "none" is not written.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "size": ("small", "medium", "large"),
    "texture": ("smooth", "mottled", "scaly"),
    "colour": ("black", "dark brown", "brown", "blue-grey", "pink", "red", "white", "green", "blue", "yellow"),
    "shape": ("round blob", "oval blob", "irregular blob", "ring", "patch"),
    "background": (
        "pale beige", "beige", "light tan", "tan", "light brown", "brown", "dark brown", "grey", "pale blue",
    ),
    "lines": ("none", "thin dark lines", "thin red lines"),
}

#: Radius of the object as a fraction of the image side, by size word.
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (0.06, 0.09), "medium": (0.12, 0.15), "large": (0.19, 0.25)}

#: How often each kind of line is drawn (lines are an extra, not the subject).
LINE_WEIGHTS: dict[str, float] = {"none": 0.6, "thin dark lines": 0.2, "thin red lines": 0.2}

#: An object must differ from its background by at least this CIE76 Delta E (else invisible).
MIN_CONTRAST = 15.0

_LINE_PHRASES = {"none": "", "thin dark lines": ", crossed by thin dark lines", "thin red lines": ", with thin red lines"}


@dataclass(frozen=True)
class GenericAttributes:
    """What one generic image shows; every field is a word of :data:`VOCABULARY`."""

    size: str
    texture: str
    colour: str
    shape: str
    background: str
    lines: str = "none"

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value not in VOCABULARY[name]:
                raise ValueError(f"{name} must be one of {VOCABULARY[name]}, got {value!r}")

    @property
    def caption(self) -> str:
        """The fixed-template caption, e.g. "a small smooth brown round blob on a beige background"."""
        return (
            f"a {self.size} {self.texture} {self.colour} {self.shape} on a {self.background} background"
            + _LINE_PHRASES[self.lines]
        )


def parse_caption(caption: str) -> GenericAttributes:
    """Inverse of :attr:`GenericAttributes.caption` (raises ValueError on any other text).

    Multi-word colours ("dark brown", "pale beige") are matched longest first.
    """
    text = caption.strip()
    lines = "none"
    for name, phrase in _LINE_PHRASES.items():
        if phrase and text.endswith(phrase):
            lines, text = name, text[: -len(phrase)]
    if not (text.startswith("a ") and text.endswith(" background") and " on a " in text):
        raise ValueError(f"not a generic-world caption: {caption!r}")
    subject, background = text[2:].rsplit(" on a ", 1)
    background = background[: -len(" background")]

    def take(words: str, choices: tuple[str, ...], where: str, from_end: bool = False) -> tuple[str, str]:
        for choice in sorted(choices, key=len, reverse=True):
            if from_end and (words == choice or words.endswith(" " + choice)):
                return choice, words[: -len(choice)].rstrip()
            if not from_end and (words == choice or words.startswith(choice + " ")):
                return choice, words[len(choice):].lstrip()
        raise ValueError(f"no {where} word in {caption!r}")

    size, rest = take(subject, VOCABULARY["size"], "size")
    texture, rest = take(rest, VOCABULARY["texture"], "texture")
    shape, rest = take(rest, VOCABULARY["shape"], "shape", from_end=True)
    if rest not in VOCABULARY["colour"]:
        raise ValueError(f"no colour word in {caption!r}")
    return GenericAttributes(size, texture, rest, shape, background, lines)


def is_held_out(attributes: GenericAttributes) -> bool:
    """Whether the (colour, shape, background) combination is kept out of pretraining.

    About one combination in eleven, chosen by a fixed arithmetic rule so that every single
    word still occurs in training (only the *combination* is new): prompt-following measured
    on these tests composition, not memory.
    """
    colour = VOCABULARY["colour"].index(attributes.colour)
    shape = VOCABULARY["shape"].index(attributes.shape)
    background = VOCABULARY["background"].index(attributes.background)
    return (colour + 2 * shape + 3 * background) % 11 == 0


def contrast(colour: str, background: str) -> float:
    """CIE76 Delta E between the centres of two palette colours."""
    return float(np.linalg.norm(np.subtract(PALETTE[colour].lab, PALETTE[background].lab)))


HeldOut = Literal["exclude", "only", "include"]


def sample_attributes(rng: np.random.Generator, held_out: HeldOut = "exclude") -> GenericAttributes:
    """Uniform words per attribute (lines by :data:`LINE_WEIGHTS`), visible and in the asked split."""
    line_names = list(LINE_WEIGHTS)
    line_p = np.array([LINE_WEIGHTS[name] for name in line_names])
    while True:
        attributes = GenericAttributes(
            size=str(rng.choice(VOCABULARY["size"])),
            texture=str(rng.choice(VOCABULARY["texture"])),
            colour=str(rng.choice(VOCABULARY["colour"])),
            shape=str(rng.choice(VOCABULARY["shape"])),
            background=str(rng.choice(VOCABULARY["background"])),
            lines=str(line_names[rng.choice(len(line_names), p=line_p / line_p.sum())]),
        )
        if contrast(attributes.colour, attributes.background) < MIN_CONTRAST:
            continue
        if held_out == "include" or is_held_out(attributes) == (held_out == "only"):
            return attributes


# --------------------------------------------------------------------------------------
# Painting
# --------------------------------------------------------------------------------------


def _outlines(rng: np.random.Generator, shape: str, center: tuple[float, float], radius: float) -> list[np.ndarray]:
    """Object outline(s) in pixels: one polygon, plus satellites for a patch."""
    if shape == "round blob":
        return [_blob_outline(rng, center, radius, rng.uniform(0.9, 1.0), 0.03)]
    if shape == "oval blob":
        aspect = rng.uniform(0.5, 0.62)  # the long axis grows so the area matches a round blob's
        return [_blob_outline(rng, center, radius / math.sqrt(aspect), aspect, 0.03)]
    if shape == "irregular blob":
        return [_blob_outline(rng, center, radius, rng.uniform(0.65, 1.0), 0.2, 0.06)]
    if shape == "ring":
        return [_blob_outline(rng, center, radius, rng.uniform(0.85, 1.0), 0.04)]
    # patch: a lobed plaque with up to two small satellite patches, as psoriasis needs
    outlines = [_blob_outline(rng, center, radius, rng.uniform(0.6, 1.0), 0.12, 0.03)]
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        spot = (center[0] + 1.15 * radius * math.cos(angle), center[1] + 1.15 * radius * math.sin(angle))
        outlines.append(_blob_outline(rng, spot, radius * rng.uniform(0.15, 0.3), rng.uniform(0.7, 1.0), 0.1))
    return outlines


def render_attributes(attributes: GenericAttributes, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Paint one generic image: ``(size, size, 3)`` uint8 RGB. Draw order is fixed.

    1. background: the palette tone with the derm world's blotches, lighting, grain and dots
    2. object outline and soft alpha (shape, size)
    3. object colour field (colour, texture; a ring gets a centre lighter than the background)
    4. lines: red ones inside the object, or dark ones across the whole image
    """
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    # 1. background
    tone = PALETTE[attributes.background].sample(rng)
    background = _paint_skin(rng, size, tone)  # (S, S, 3) CIELAB
    # 2. object shape
    center = _lesion_center(rng, size)
    radius = rng.uniform(*SIZE_RADII[attributes.size]) * size
    outlines = _outlines(rng, attributes.shape, center, radius)
    alpha = _fill(outlines, size, blur=0.6 if attributes.shape != "round blob" else 0.1 * radius)
    # 3. object colour and texture
    colour = _lab(*PALETTE[attributes.colour].sample(rng))
    target = np.broadcast_to(colour, background.shape).astype(np.float32).copy()
    target[..., 0] += 0.8 * rng.standard_normal((size, size), dtype=np.float32)
    if attributes.texture == "mottled":
        # Darker blotches of the same hue (multi-tone), as melanoma's black-in-brown.
        dark = _lab(colour[0] * rng.uniform(0.35, 0.5), colour[1] * 0.4, colour[2] * 0.4)
        weight = 1.0 / (1.0 + np.exp(-4.0 * (_smooth_field(rng, size, radius / 4) - 0.6)))
        target = _lerp(target, np.broadcast_to(dark, background.shape), weight)
    elif attributes.texture == "scaly":
        # Rough near-white flakes over part of the object, as psoriasis's silvery scale.
        roughness = _smooth_field(rng, size, 0.8) + 0.6 * _smooth_field(rng, size, 2.0)
        level = np.quantile(roughness, rng.uniform(0.45, 0.6))
        flakes = np.clip((roughness - level) * 1.5, 0.0, 1.0) * rng.uniform(0.7, 0.95)
        white = _lab(rng.uniform(86.0, 93.0), rng.uniform(0.0, 2.0), rng.uniform(0.0, 3.0))
        target = _lerp(target, np.broadcast_to(white, background.shape), flakes)
    if attributes.shape == "ring":
        inner = [center + (outlines[0] - center) * rng.uniform(0.5, 0.65)]
        hole = _fill(inner, size, blur=0.1 * radius)
        centre = _lab(min(tone[0] + rng.uniform(8.0, 12.0), 96.0), tone[1] + 2.0, tone[2] - 3.0)
        target = _lerp(target, np.broadcast_to(centre, background.shape), hole)
    lab = _lerp(background, target, alpha)
    # 4. lines
    if attributes.lines == "thin red lines":
        vessels = _curves(rng, size, int(rng.integers(2, 4)), (0.1, 0.25), 0.3, 1) * alpha * 0.8
        red = _lab(max(colour[0] - 10.0, 25.0), 50.0, 25.0)
        lab = _lerp(lab, np.broadcast_to(red, lab.shape), vessels)
    rgb = lab_to_srgb(lab)
    if attributes.lines == "thin dark lines":
        thickness = max(1, int(round(size / 128 * rng.choice([1, 1, 2]))))
        lines_alpha = _curves(rng, size, int(rng.integers(2, 7)), (0.4, 1.1), 0.25, thickness)
        dark = lab_to_srgb(_lab(min(rng.uniform(6, 16), tone[0] * 0.35), 1.0, rng.uniform(1, 5)))
        rgb = _lerp(rgb, dark, lines_alpha)
    return _to_uint8(rgb)


@dataclass(frozen=True, eq=False)
class GenericSample:
    """One training example: image ``(S, S, 3)`` uint8 RGB, its caption and attributes."""

    index: int
    image: np.ndarray
    caption: str
    attributes: GenericAttributes


def generic_sample(seed: int, index: int, size: int = 64, held_out: HeldOut = "exclude") -> GenericSample:
    """Image ``index`` of the generic world ``seed`` (independent of every other index)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    attributes = sample_attributes(rng, held_out)
    image = render_attributes(attributes, rng, size)
    return GenericSample(index, image, attributes.caption, attributes)


def iterate_world(
    seed: int = 0, size: int = 64, start: int = 0, stop: int | None = None, held_out: HeldOut = "exclude"
) -> Iterator[GenericSample]:
    """Generic samples ``start, start + 1, ...`` (endless when ``stop`` is None).

    Example:
        >>> sample = next(iterate_world(seed=0, size=64))
        >>> sample.image.shape, sample.caption  # doctest: +SKIP
        ((64, 64, 3), 'a large scaly pink oval blob on a tan background')
    """
    index = start
    while stop is None or index < stop:
        yield generic_sample(seed, index, size, held_out)
        index += 1


# --------------------------------------------------------------------------------------
# Reading attributes back from pixels (prompt-following measurement)
# --------------------------------------------------------------------------------------

_BACKGROUND_LAB = np.array([PALETTE[name].lab for name in VOCABULARY["background"]], dtype=np.float32)
_COLOUR_LAB = np.array([PALETTE[name].lab for name in VOCABULARY["colour"]], dtype=np.float32)
#: Equivalent radius (sqrt(area / pi), fraction of the side) between small/medium and
#: medium/large: midway between the neighbouring ranges of :data:`SIZE_RADII`.
SIZE_CUTS = (0.105, 0.17)
#: CIE76 Delta E from the background above which a pixel belongs to the object.
OBJECT_DELTA_E = 12.0


def object_mask(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's pixels and the background's median CIELAB colour.  # (S, S) bool, (3,)

    The background colour is the median of the pixels that look like the outer frame
    (:func:`fairsynth.data.skin.skin_mask`); object pixels differ from it by more than
    :data:`OBJECT_DELTA_E`. A 3x3 opening removes thin lines and isolated grain, and holes
    (a ring's centre) are filled so the area is the object's outline.
    """
    lab = srgb_to_lab(image)  # (S, S, 3)
    background_lab = np.median(lab[skin_mask(image)], axis=0)
    different = (np.linalg.norm(lab - background_lab, axis=-1) > OBJECT_DELTA_E).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    opened = cv2.morphologyEx(different, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(opened, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(opened)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled.astype(bool), background_lab


def read_attributes(image: np.ndarray) -> dict[str, str | None]:
    """Background tone, object colour and size read from pixels (``None`` when unreadable).

    * background: the palette tone nearest (CIE76) to the background's median colour;
    * colour: the majority vote of the object's inner pixels (those that differ from the
      background) for their nearest colour word, white counting only when it is most of
      the object;
    * size: the object's equivalent radius against :data:`SIZE_CUTS`.

    Its accuracy on real generic images is the best a generated image can score.
    """
    lab = srgb_to_lab(image)  # (S, S, 3)
    mask, background_lab = object_mask(image)
    background = VOCABULARY["background"][int(np.argmin(np.linalg.norm(_BACKGROUND_LAB - background_lab, axis=1)))]
    if mask.sum() < 4:
        return {"background": background, "colour": None, "size": None}
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))).astype(bool)
    pixels = lab[inner] if inner.sum() >= 4 else lab[mask]  # without the edge blended with the background
    pixels = pixels[np.linalg.norm(pixels - background_lab, axis=1) > OBJECT_DELTA_E]  # not a ring's centre
    if len(pixels) == 0:
        return {"background": background, "colour": None, "size": None}
    # Each pixel votes for its nearest colour word; white (a scaly texture's flakes) wins
    # only when it holds most of the object, so flakes and dark blotches don't outvote the
    # base colour of a scaly or mottled object.
    nearest = np.argmin(np.linalg.norm(pixels[:, None, :] - _COLOUR_LAB[None], axis=2), axis=1)
    votes = np.bincount(nearest, minlength=len(_COLOUR_LAB)).astype(np.float64) / len(nearest)
    white = VOCABULARY["colour"].index("white")
    if votes[white] < 0.6:
        votes[white] = 0.0
    colour = VOCABULARY["colour"][int(np.argmax(votes))]
    radius = math.sqrt(float(mask.mean()) / math.pi)
    size = "small" if radius < SIZE_CUTS[0] else "medium" if radius < SIZE_CUTS[1] else "large"
    return {"background": background, "colour": colour, "size": size}


def prompt_following(images: list[np.ndarray], asked: list[GenericAttributes]) -> dict[str, float]:
    """Share of images whose read background / colour / size match what was asked, and all three."""
    if len(images) != len(asked) or not images:
        raise ValueError("need one asked attribute set per image, and at least one image")
    hits = {"background": 0, "colour": 0, "size": 0, "all": 0}
    for image, attributes in zip(images, asked):
        read = read_attributes(image)
        ok = {name: read[name] == getattr(attributes, name) for name in ("background", "colour", "size")}
        for name, value in ok.items():
            hits[name] += int(value)
        hits["all"] += int(all(ok.values()))
    return {name: count / len(images) for name, count in hits.items()}
