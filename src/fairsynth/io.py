"""Atomic file output, content hashing and safe path handling — one place for each.

Nothing fairsynth writes is ever half-written: files go to a temporary name in the same
folder and are renamed into place (``os.replace`` is atomic on POSIX and Windows), folders
are built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from PIL import Image


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; give it the mode open() would (0666 less the umask)
        os.fchmod(fd, 0o666 & ~_UMASK)
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save a lossless PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_dir(target: str | Path, *, resume: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``target``; swap it in when complete.

    A crash leaves ``target`` as it was (absent or the previous complete version) plus a
    ``.target.partial`` folder. With ``resume=False`` the next run clears it; with
    ``resume=True`` the next run continues from it (the caller must write every file in it
    atomically and name files so that finished work can be recognised).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial"
    if staging.exists() and not resume:
        shutil.rmtree(staging)
    staging.mkdir(exist_ok=True)
    try:
        yield staging
    except BaseException:
        if not resume:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


class UnsafePathError(ValueError):
    """A path from a manifest that would leave the dataset root."""


class UnresolvablePathError(UnsafePathError):
    """A path from a manifest that cannot be followed: a symlink loop, a NUL byte, a name too long."""


def _shown(path: str | Path, limit: int = 200) -> str:
    """A path for a message, cut in the middle when it is very long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]} ({len(text)} characters)"


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """Resolve ``relative`` against ``root``; refuse absolute paths, ``..`` and symlinks out.

    Paths read from manifests are untrusted: they must name a file inside the dataset root.
    A path that cannot be resolved at all (a symlink loop, a NUL byte, a name longer than the
    file system allows) is an :class:`UnresolvablePathError`.
    """
    root = Path(root).resolve()
    rel = Path(relative)
    if "\x00" in str(relative):
        raise UnresolvablePathError(f"path {_shown(repr(str(relative)))} holds a NUL byte, which no file name can")
    if rel.is_absolute() or rel.drive:
        raise UnsafePathError(f"absolute path {_shown(repr(str(relative)))} is not allowed; paths are relative to {root}")
    if ".." in rel.parts:
        raise UnsafePathError(f"path {_shown(repr(str(relative)))} leaves the dataset root {root}")
    try:
        resolved = (root / rel).resolve()
    except RuntimeError as err:  # Python < 3.13: "Symlink loop from ..."
        raise UnresolvablePathError(f"path {_shown(repr(str(relative)))} cannot be followed: {err}") from None
    except OSError as err:  # ELOOP (Python >= 3.13), ENAMETOOLONG
        raise UnresolvablePathError(
            f"path {_shown(repr(str(relative)))} cannot be followed ({err.strerror or err})"
        ) from None
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"path {str(relative)!r} resolves to {resolved}, outside the dataset root {root}")
    return resolved


class InvalidJSONError(ValueError):
    """A JSON file that is there but cannot be read (names the file)."""


def read_optional_json(path: str | Path) -> Any:
    """The parsed JSON of ``path``, or None when there is no such file (a stage that did not run)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
        raise InvalidJSONError(f"{path} is not valid JSON ({str(err).split(';')[0] or 'nested too deeply'})") from err
