"""Opening image files: the one place fairsynth reads an image from disk, bounded and named.

Every command that opens an image file (validate, prepare, train, generate's img2img and
IP-Adapter sources, evaluate, filter, downstream and its test sets, review export, report)
opens it here, so one bound and one set of messages apply everywhere:

* the size is read from the file's header and checked against a pixel limit *before* any pixel
  is decoded: a 20000 x 20000 PNG of a few hundred kilobytes (a decompression bomb) is refused
  with its file and size and never decoded;
* every way a file can fail to be an image is an :class:`ImageReadError` naming the file, with
  a short ``kind`` that validation reports as a problem: ``missing_file``, ``not_a_file``,
  ``empty_file``, ``unreadable`` (permissions, a symlink loop, a name the file system refuses),
  ``not_an_image`` (an HTML page saved as ``.jpg`` says so), ``too_large``, ``bad_metadata``
  (a PNG text or colour-profile chunk that inflates beyond Pillow's safety limit) and
  ``truncated`` (the pixels cannot be decoded).

The limit is ``data.max_image_pixels`` (:data:`DEFAULT_MAX_IMAGE_PIXELS`, about 0.18
gigapixel, e.g. 13,377 x 13,377: the size at which Pillow itself refuses a file, so that the
two bounds agree). The command line applies the recipe's value to the whole process
(:func:`set_max_image_pixels`); functions that take a ``max_pixels`` argument use it instead.
Pillow's own ``Image.MAX_IMAGE_PIXELS`` is left alone, except when a user asks for a limit
above Pillow's: then it is raised to match, and a warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's hard decompression-bomb bound, declared beside the data.max_image_pixels knob it is the default of.
from fairsynth.config import DEFAULT_MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

#: EXIF tag of the orientation (which side of the stored pixels is up).
ORIENTATION_TAG = 0x0112

_max_pixels = DEFAULT_MAX_IMAGE_PIXELS

#: What Pillow's DecompressionBombError says: "Image size (400000000 pixels) exceeds limit of ...".
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file.

    Attributes:
        path: the file.
        kind: the problem's code (``too_large``, ``not_an_image``, ...), as validation reports it.
        reason: what is wrong, in a sentence, without the file name.
    """

    def __init__(self, path: str | os.PathLike, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.kind = kind
        self.reason = reason

    def __reduce__(self):  # crosses process boundaries (worker pools) intact
        return type(self), (self.path, self.kind, self.reason)


def max_image_pixels() -> int:
    """The pixel limit this process applies where no ``max_pixels`` is given."""
    return _max_pixels


def set_max_image_pixels(limit: int) -> None:
    """Set the pixel limit for this process (``data.max_image_pixels``).

    A limit above Pillow's own bound raises ``PIL.Image.MAX_IMAGE_PIXELS`` to match, with a
    warning: otherwise Pillow would still refuse the images the user allowed.
    """
    global _max_pixels
    if limit < 1:
        raise ValueError(f"the image pixel limit must be positive, got {limit}")
    _max_pixels = int(limit)
    pillow = Image.MAX_IMAGE_PIXELS
    if pillow is not None and limit > 2 * pillow:
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)
        logger.warning(
            "data.max_image_pixels=%d is above Pillow's decompression-bomb bound (%d); raising "
            "PIL.Image.MAX_IMAGE_PIXELS to %d for this process", limit, 2 * pillow, Image.MAX_IMAGE_PIXELS,
        )


def _quiet() -> None:
    """Inside ``warnings.catch_warnings()``: silence what Pillow says that is reported here instead.

    Its decompression-bomb warning (the pixel limit is the bound here) and its complaints about
    corrupt EXIF data (:func:`exif_orientation` reports what they mean for the image).
    """
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a file Pillow refused as a decompression bomb, from its header alone.

    Pillow checks the size in ``Image.open``; the format's own opener (registered with
    ``Image.register_open``) reads the header without that check. None where it cannot tell.
    """
    Image.init()
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                if accept is not None and not accept(prefix):
                    continue
                handle.seek(0)
                try:
                    header = factory(handle, str(path))
                except Exception:  # noqa: BLE001 - any format that does not take the file is skipped
                    continue
                return header.size
    except OSError:
        return None
    return None


def _describe(path: Path) -> str:
    """What a file Pillow cannot identify is, from its first bytes, for the message."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return "file is not an image Pillow can read"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "file is an HTML page, not an image (a download that returned a web page?)"
    if text.startswith((b"<?xml", b"<svg")):
        return "file is XML or SVG, not a raster image"
    return f"file is not an image Pillow can read (it starts with bytes {head[:8].hex(' ')})"


def _check_file(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file, before Pillow sees it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "missing_file", "image file does not exist") from None
    except OSError as err:  # a symlink loop (ELOOP), a name too long (ENAMETOOLONG), no permission
        raise ImageReadError(path, "unreadable", f"image file cannot be opened ({err.strerror or err})") from None
    except ValueError as err:  # an embedded NUL byte
        raise ImageReadError(path, "unreadable", f"image path is not a valid file name ({err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "not_a_file", "image path is not a regular file")
    if info.st_size == 0:
        raise ImageReadError(path, "empty_file", "image file is empty (0 bytes)")


def _too_large(path: Path, size: tuple[int, int] | None, pixels: int, limit: int) -> ImageReadError:
    shape = f"{size[0]} x {size[1]} = " if size else ""
    return ImageReadError(
        path, "too_large",
        f"image is {shape}{pixels:,} pixels, above the limit of {limit:,} (data.max_image_pixels; "
        "a file this large is refused before decoding, as it may be a decompression bomb)",
    )


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """The image opened lazily (header read, no pixels decoded), its size within the limit."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    _check_file(path)
    try:
        with warnings.catch_warnings():
            _quiet()
            image = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not_an_image", _describe(path)) from None
    except Image.DecompressionBombError as err:
        found = _BOMB_PIXELS.search(str(err))
        raise _too_large(path, _header_size(path), int(found.group(1)) if found else 0, limit) from None
    except ValueError as err:  # PngImagePlugin: a zTXt/iTXt/iCCP chunk inflating beyond MAX_TEXT_CHUNK
        raise ImageReadError(path, "bad_metadata", f"image metadata is unsafe or malformed ({err}); "
                             "re-save the image without its metadata") from None
    except (OSError, SyntaxError, EOFError) as err:
        raise ImageReadError(path, "truncated", f"image header cannot be read ({err})") from None
    with image:
        width, height = image.size
        if max(1, width) * max(1, height) > limit:
            raise _too_large(path, (width, height), width * height, limit)
        yield image


def image_size(path: str | os.PathLike, *, oriented: bool = False, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding pixels; within the pixel limit.

    ``oriented``: the size as the image is viewed, after its EXIF orientation.
    """
    with _opened(Path(path), max_pixels) as image:
        width, height = image.size
        if oriented and exif_orientation(image).value in (5, 6, 7, 8):  # rotated by 90 degrees
            return height, width
        return width, height


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None, verify: bool = False) -> Image.Image:
    """The image at ``path`` with every pixel decoded, in its stored mode (no conversion).

    ``verify`` also checks the file's structure and checksums (Pillow's ``verify``), as
    validation does. Raises :class:`ImageReadError` naming the file for anything unusable.
    """
    path = Path(path)
    try:
        if verify:
            with _opened(path, max_pixels) as image:
                image.verify()
        with _opened(path, max_pixels) as image, warnings.catch_warnings():
            _quiet()
            image.load()  # decodes every pixel: catches truncated files
            return image
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:  # a later frame (GIF) larger than the first
        found = _BOMB_PIXELS.search(str(err))
        raise _too_large(path, None, int(found.group(1)) if found else 0, max_image_pixels()) from None
    except ValueError as err:  # a text chunk after the pixel data, inflating beyond Pillow's limit
        raise ImageReadError(path, "bad_metadata", f"image metadata is unsafe or malformed ({err}); "
                             "re-save the image without its metadata") from None
    except (OSError, SyntaxError, EOFError, IndexError) as err:
        raise ImageReadError(path, "truncated", f"image cannot be decoded ({err})") from None


@dataclass(frozen=True)
class Orientation:
    """An image's EXIF orientation as read, and what is wrong with it.

    Attributes:
        value: 1-8, or None where the image has none or it cannot be used.
        problem: why it cannot be used, in a sentence; None where nothing is wrong.
        severity: ``error`` where which side is up is unknown (a value outside 1-8, a tag with
            several values); ``note`` for a corrupt EXIF block without any orientation (the
            image is used as stored, like an image without EXIF).
    """

    value: int | None
    problem: str | None = None
    severity: Literal["error", "note"] = "error"


def exif_orientation(image: Image.Image) -> Orientation:
    """The image's EXIF orientation; 0 ("undefined", written by some cameras) reads as none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = image.info.get("exif")
            if isinstance(raw, bytes) and raw:
                exif = Image.Exif()
                exif.load(raw)  # parsed again here: Pillow's warnings about it were given at open
            else:
                exif = image.getexif()
            value = exif.get(ORIENTATION_TAG)
        except (SyntaxError, ValueError, OSError, TypeError, IndexError, KeyError) as err:
            return Orientation(None, f"EXIF block cannot be read ({err}); the image is used as stored", "note")
    said = [" ".join(str(w.message).split()) for w in caught]
    said = [message for message in said if "EXIF" in message or "tag 274" in message]
    fix = "set the tag (exiftool -n -Orientation=1 FILE) or re-save the image without EXIF"
    if any("tag 274" in message for message in said):
        return Orientation(None, f"EXIF orientation tag is malformed ({said[0]}), so which side is up is unknown; {fix}")
    if value is None:
        if said:
            return Orientation(None, f"EXIF block is corrupt ({said[0]}) and holds no orientation; the image is "
                               "used as stored", "note")
        return Orientation(None)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return Orientation(value)
    if value == 0:
        return Orientation(None)
    return Orientation(None, f"EXIF orientation is {value!r}, not one of 1-8, so which side is up is unknown; {fix}")


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (as stored where it has none or a broken one)."""
    if exif_orientation(image).value in (None, 1):
        return image
    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image
