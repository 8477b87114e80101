"""Skin-tone estimation: sRGB -> CIELAB, the Individual Typology Angle (ITA) and its FST band.

Fitzpatrick skin type (FST) labels are missing for some datasets (HAM10000 has none) and
noisy in others, so fairsynth records an ITA-based estimate next to every image:

    ITA = atan2(L* - 50, b*) * 180 / pi                      (Chardon et al. 1991)

computed on the CIELAB colour of *skin* pixels, with the cut-offs of Kinyanjui et al. 2020
("Fairness of classifiers across skin tones in dermatology", MICCAI), as used by Groh et al.
2021 for Fitzpatrick17k:

    ITA > 55 -> I,  > 41 -> II,  > 28 -> III,  > 19 -> IV,  > 10 -> V,  else VI.

ITA is a proxy, not the Fitzpatrick scale: Groh et al. found it off by more than one type
for a large share of Fitzpatrick17k, especially for dark skin, because lighting, lesions and
white balance move L* and b*. Treat it as an estimate and report it as such.

All functions are pure; images are ``(H, W, 3)`` uint8 RGB arrays.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Lower ITA bounds (exclusive) of FST I..V after Kinyanjui et al. 2020; below the last is VI.
ITA_CUTOFFS: tuple[tuple[float, int], ...] = ((55.0, 1), (41.0, 2), (28.0, 3), (19.0, 4), (10.0, 5))

# sRGB (IEC 61966-2-1) primaries to CIE XYZ, D65 white; rows X, Y, Z.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float64,
)
_XYZ_TO_SRGB = np.linalg.inv(_SRGB_TO_XYZ)
#: CIE D65 reference white (2 degree observer), Y normalised to 1.
D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float64)
_DELTA = 6.0 / 29.0  # CIE 1976 L*a*b*: linear segment below (6/29)^3


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    return image


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """Convert sRGB to CIELAB (D65): L* in 0..100, a*, b* in CIE units.

    ``image`` is uint8 (0..255) or float in 0..1, shape ``(..., 3)``. Uses the exact
    IEC 61966-2-1 transfer curve and the CIE 1976 formulas in float64 (OpenCV's float
    conversion quantises a*/b* to about 1/64 and uses a slightly different white point).
    Returns float32 of the same leading shape.
    """
    rgb = np.asarray(image)
    rgb = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    # sRGB EOTF: linear segment near black, 2.4 power elsewhere.
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / D65_WHITE
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab.astype(np.float32)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_to_lab`: CIELAB (D65) to sRGB floats in 0..1 (clipped to gamut)."""
    lab = np.asarray(lab, dtype=np.float32)  # float32 is ample for 8-bit output and faster
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0)) * D65_WHITE.astype(np.float32)
    linear = np.clip(xyz @ _XYZ_TO_SRGB.T.astype(np.float32), 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def ita_of_lab(lightness: np.ndarray, b_star: np.ndarray) -> float:
    """Robust ITA (degrees) of CIELAB samples, as in Groh et al. 2021's Fitzpatrick17k analysis.

    L* and b* are each trimmed to the values within one standard deviation of their own mean
    (independently, as in ``ita_fitzpatrick_analysis.ipynb`` of mattgroh/fitzpatrick17k), and
    ITA is taken of the two trimmed means. Taking ITA of means rather than the mean of
    per-pixel angles avoids the blow-up of atan((L*-50)/b*) where b* is near 0.
    """
    lightness = np.asarray(lightness, dtype=np.float64).ravel()
    b_star = np.asarray(b_star, dtype=np.float64).ravel()
    if lightness.size == 0:
        raise ValueError("no skin pixels to compute ITA from (the mask is empty)")

    def trimmed_mean(values: np.ndarray) -> float:
        mean, std = values.mean(), values.std()
        kept = values[np.abs(values - mean) <= std]
        return float(kept.mean()) if kept.size else float(mean)

    return math.degrees(math.atan2(trimmed_mean(lightness) - 50.0, trimmed_mean(b_star)))


def ita(image_rgb_uint8: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Individual Typology Angle, in degrees, of the skin pixels of an RGB image.

    Args:
        image_rgb_uint8: ``(H, W, 3)`` uint8 RGB image.
        mask: ``(H, W)`` boolean skin mask (e.g. from :func:`skin_mask`); None uses every
            pixel, which lets lesions and hair pull the angle towards darker types.

    Raises:
        ValueError: the image is not uint8 RGB, or the mask selects no pixel.

    Example:
        >>> fst_from_ita(ita(image, skin_mask(image)))  # doctest: +SKIP
        3
    """
    image = _check_rgb(image_rgb_uint8)
    if mask is None:
        pixels = image.reshape(-1, 3)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        pixels = image[mask]
    lab = srgb_to_lab(pixels)
    return ita_of_lab(lab[:, 0], lab[:, 2])


def fst_from_ita(ita_degrees: float) -> int:
    """Fitzpatrick type 1..6 for an ITA value, with the cut-offs of Kinyanjui et al. 2020.

    ITA > 55 -> 1 (I), > 41 -> 2, > 28 -> 3, > 19 -> 4, > 10 -> 5, else 6 (VI).
    A boundary value belongs to the darker type (ITA = 55 is II), as in Groh et al.'s code.
    """
    value = float(ita_degrees)
    if not math.isfinite(value):
        raise ValueError(f"ITA must be a finite angle, got {ita_degrees!r}")
    for lower, fst in ITA_CUTOFFS:
        if value > lower:
            return fst
    return 6


def skin_mask(
    image_rgb_uint8: np.ndarray,
    frame: float = 0.2,
    max_delta_e: float = 12.0,
    margin: int = 2,
) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels that look like the surrounding skin.

    Heuristic (clinical and dermoscopic photos centre the lesion, and skin is the majority
    colour of the image's outer frame):

    1. The reference skin colour is the per-channel **median** CIELAB colour of the outer
       frame (``frame`` of the side on every edge). The median ignores hairs and any part of
       the lesion that reaches into the frame, as long as they cover less than half of it.
    2. Pixels farther than a colour distance (CIE76 Delta E) from that reference are not
       skin: the lesion, dark hairs and pores, scale and blood. The limit adapts to the
       skin's own texture: 3.5 robust standard deviations (1.4826 * MAD) of the frame's
       Delta E, between 5 and ``max_delta_e``.
    3. The excluded regions are grown by ``margin`` pixels so that blurred lesion borders,
       anti-aliased hair edges and JPEG ringing around them are dropped too.

    If fewer than 5 % of the pixels survive (a lesion that fills the frame, an image that is
    not skin), the mask falls back to the colour test alone, then to the whole image, so
    that :func:`ita` still returns a (less reliable) value; ITA's own one-standard-deviation
    trimming then does what it can.
    """
    image = _check_rgb(image_rgb_uint8)
    height, width = image.shape[:2]
    if not 0.0 < frame <= 0.5:
        raise ValueError(f"frame must be in (0, 0.5], got {frame}")
    lab = srgb_to_lab(image)  # (H, W, 3)
    band_y = max(1, int(round(height * frame)))
    band_x = max(1, int(round(width * frame)))
    in_frame = np.zeros((height, width), dtype=bool)
    in_frame[:band_y, :] = in_frame[-band_y:, :] = True
    in_frame[:, :band_x] = in_frame[:, -band_x:] = True

    reference = np.median(lab[in_frame], axis=0)  # (3,)
    delta_e = np.linalg.norm(lab - reference, axis=-1)  # (H, W)
    frame_delta = delta_e[in_frame]
    robust_std = 1.4826 * float(np.median(np.abs(frame_delta - np.median(frame_delta))))
    limit = float(np.clip(3.5 * robust_std, 5.0, max(5.0, max_delta_e)))

    colour_ok = delta_e <= limit
    not_skin = (~colour_ok).astype(np.uint8)
    if margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        not_skin = cv2.dilate(not_skin, kernel)
    mask = not_skin == 0

    minimum = 0.05 * height * width
    if mask.sum() < minimum:
        mask = colour_ok if colour_ok.sum() >= minimum else np.ones((height, width), dtype=bool)
    return mask
