"""Hostile image files, made in code: what scraped data and careless downloads bring.

Each maker writes one file (or link) under a dataset folder and returns its name relative to
it, as a manifest would hold it. Used by the tests and by ``benchmarks/hostile_inputs.py``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def image_bomb(folder: Path, name: str = "bomb.png", side: int = 20000) -> str:
    """A ``side`` x ``side`` 1-bit PNG of a few hundred kilobytes: a decompression bomb.

    Written chunk by chunk (the image itself is never held): every row is zeros, which zlib
    packs about a thousand to one.
    """
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
    return name


def png_with_huge_chunk(folder: Path, name: str, kind: bytes = b"iCCP", inflated: int = 64 * 2**20) -> str:
    """An 8 x 8 PNG with an iCCP (colour profile) or zTXt (text) chunk inflating to ``inflated`` bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 60)).save(buffer, "PNG")
    good = buffer.getvalue()
    payload = zlib.compress(b"\x00" * inflated, 9)
    body = (b"profile" if kind == b"iCCP" else b"Comment") + b"\x00\x00" + payload
    end_of_header = len(PNG_SIGNATURE) + 25  # IHDR: 4 length + 4 type + 13 data + 4 CRC
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(good[:end_of_header] + png_chunk(kind, body) + good[end_of_header:])
    return name


def jpeg_with_orientation(folder: Path, name: str, orientation: int = 9, size: tuple[int, int] = (96, 64)) -> str:
    """A JPEG whose EXIF orientation tag holds ``orientation`` (1-8 are valid)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 255, 0), (0, 0, size[0] // 2, size[1]))  # left half yellow, as stored
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name, exif=exif.tobytes(), quality=95)
    return name


def jpeg_with_corrupt_exif(folder: Path, name: str) -> str:
    """A JPEG whose EXIF block says its first directory holds an orientation entry, then ends."""
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (90, 60, 40)).save(buffer, "JPEG")
    good = buffer.getvalue()
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12"  # 5 entries promised, 1 tag id given
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(good[:2] + segment + good[2:])
    return name


def zero_byte(folder: Path, name: str = "empty.jpg") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")
    return name


def html_named_jpg(folder: Path, name: str = "page.jpg") -> str:
    """What a scraper saves when the server answers with an error page."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>Access denied</body></html>\n"
    )
    return name


def symlink_loop(folder: Path, name: str = "loop.jpg") -> str:
    """``loop.jpg`` -> ``loop-back.jpg`` -> ``loop.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(folder / f"{Path(name).stem}-back.jpg", folder / name)
    os.symlink(folder / name, folder / f"{Path(name).stem}-back.jpg")
    return name


def long_path(length: int = 5000) -> str:
    """A relative path of ``length`` characters (folders of 9 letters); no file system holds it."""
    parts, total = [], 0
    while total + 10 < length - 4:
        parts.append("abcdefghi")
        total += 10
    stem = "x" * (length - 4 - total)
    return "/".join(parts) + "/" + stem + ".jpg"


def truncated_jpeg(folder: Path, name: str = "cut.jpg") -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return name


# ---- files that must be read (converted where needed), not refused ------------------------


def good_formats(folder: Path) -> dict[str, str]:
    """One 80 x 80 image per unusual mode or format fairsynth reads: {what: name}."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels, "RGB")
    made = {
        "CMYK JPEG": ("cmyk.jpg", lambda p: rgb.convert("CMYK").save(p)),
        "16-bit PNG": ("deep.png", lambda p: Image.fromarray(np.full((80, 80), 50000, dtype=np.uint16)).save(p)),
        "RGBA PNG": ("alpha.png", lambda p: rgb.convert("RGBA").save(p)),
        "GIF": ("anim.gif", lambda p: rgb.convert("P").save(p, save_all=True, append_images=[rgb.convert("P")])),
        "WebP": ("photo.webp", lambda p: rgb.save(p, "WEBP")),
        "TIFF": ("scan.tif", lambda p: rgb.save(p, "TIFF")),
        "EXIF-rotated JPEG": ("rotated.jpg", None),
    }
    out = {}
    for what, (name, make) in made.items():
        if make is None:
            jpeg_with_orientation(folder, name, orientation=6, size=(96, 64))
        else:
            make(folder / name)
        out[what] = name
    return out
