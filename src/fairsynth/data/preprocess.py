"""Pure image preprocessing: load as 8-bit RGB, apply EXIF orientation, resize and crop.

One resize policy for the whole project: PIL's Lanczos filter with antialiasing on the
uint8 image (as clean-fid argues, the resize must not depend on the tensor library).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fairsynth.data.images import read_image, upright

#: Colour that transparent pixels are composited onto.
ALPHA_BACKGROUND = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and 32-bit grayscale are rescaled by their bit depth (not clipped), alpha is
    composited onto white, CMYK and palette images go through PIL's converters.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        array = np.clip(array / top, 0.0, 1.0)
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_rgb(path: str | Path, *, max_pixels: int | None = None) -> Image.Image:
    """Open an image (within the pixel limit, :mod:`fairsynth.data.images`), apply its EXIF
    orientation and return it as 8-bit RGB."""
    return to_rgb(upright(read_image(path, max_pixels=max_pixels)))


def resize_crop(image: Image.Image, size: tuple[int, int], crop: str = "center") -> Image.Image:
    """Resize to ``size`` = (width, height).

    ``center``: scale so the image covers the target, then cut the centre (aspect kept);
    ``none``: scale to exactly the target (aspect changes).
    """
    width, height = size
    if crop == "none":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if crop != "center":
        raise ValueError(f"unknown crop {crop!r}; use 'center' or 'none'")
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.LANCZOS)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))
