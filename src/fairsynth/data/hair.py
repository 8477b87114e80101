"""DullRazor hair removal for skin images.

Dark hairs cross many dermatology photos; a generative model fine-tuned on them learns to
draw hairs, and a classifier may learn them as a shortcut. DullRazor (Lee et al. 1997,
"DullRazor: A software approach to hair removal from images", Computers in Biology and
Medicine 27(6)) finds thin dark structures with a morphological closing and replaces them
by interpolation from the surrounding skin. fairsynth uses the widely used OpenCV form of it
(the DDI and many ISIC pipelines):

1. grayscale;
2. morphological black-hat (closing minus image) with a cross-shaped kernel: it responds to
   dark structures thinner than the kernel, i.e. hairs, and not to larger lesions;
3. 3x3 Gaussian blur, which joins broken hair segments and suppresses pixel noise;
4. threshold: black-hat response above ``threshold`` grey levels is hair;
5. Telea fast-marching inpainting (Telea 2004) of the hair pixels with ``radius``.

Lee et al. close with three linear structuring elements (0, 45, 90 degrees) and verify
hair shape; the cross kernel is the common simplification. The DDI variant uses a 17x17
kernel and radius 3.
"""

from __future__ import annotations

import cv2
import numpy as np


def hair_mask(image_rgb_uint8: np.ndarray, kernel: int = 9, threshold: int = 10) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels DullRazor treats as hair (steps 1-4 above)."""
    image = np.asarray(image_rgb_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be a grey level in 0..255, got {threshold}")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # (H, W) uint8
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (kernel, kernel))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cross)
    blurred = cv2.GaussianBlur(blackhat, (3, 3), 0)
    return blurred > threshold


def remove_hair(
    image_rgb_uint8: np.ndarray, kernel: int = 9, threshold: int = 10, radius: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Remove dark hairs with DullRazor; returns ``(clean_image, hair_mask)``.

    Args:
        image_rgb_uint8: ``(H, W, 3)`` uint8 RGB image; not modified.
        kernel: side of the cross-shaped black-hat kernel (odd); hairs must be thinner.
        threshold: black-hat response (grey levels, after the 3x3 blur) above which a pixel
            is hair.
        radius: Telea inpainting radius in pixels.

    Returns:
        The inpainted image (uint8 RGB, same shape) and the boolean hair mask that was
        inpainted. An image without hair comes back nearly unchanged: only small dark
        specks (pores, dots in a lesion) above the threshold are inpainted.

    Example:
        >>> clean, mask = remove_hair(image)  # doctest: +SKIP
        >>> mask.mean()  # fraction of the image treated as hair  # doctest: +SKIP
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    mask = hair_mask(image_rgb_uint8, kernel=kernel, threshold=threshold)
    image = np.ascontiguousarray(image_rgb_uint8)
    if not mask.any():
        return image.copy(), mask
    clean = cv2.inpaint(image, mask.astype(np.uint8) * 255, float(radius), cv2.INPAINT_TELEA)
    return clean, mask
