"""Atomic file output, content hashing and safe path handling — one place for each.

Nothing fairsynth writes is ever half-written: files go to a temporary name in the same
folder and are renamed into place (``os.replace`` is atomic on POSIX and Windows), folders
are built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

from PIL import Image


# --------------------------------------------------------------------------------------
# Crash points: where the fault campaign (benchmarks/faults.py) makes a write fail
# --------------------------------------------------------------------------------------

#: ``FAIRSYNTH_CRASH_AT=<action>:<point>#<n>`` makes this process fail the ``n``-th time it
#: reaches a crash point named ``<point>`` (``*``: any point): ``kill`` sends it SIGKILL,
#: ``enospc`` makes the write fail as on a full disk. The points: ``write`` (a temporary file
#: written, not yet renamed into place), ``rename`` (just renamed), ``swap`` (a staged folder
#: about to replace its target), ``append`` (an append-only log, torn half-way through a
#: line), ``prune`` (old checkpoints being deleted), ``move`` (a generated image moved to its
#: folder). ``FAIRSYNTH_CRASH_TRACE=<file>`` appends every point reached, with its time, to
#: that file. The fault campaign (benchmarks/faults.py) sets them; unset, as in use, a crash
#: point costs one test of a constant.
_CRASH_AT = os.environ.get("FAIRSYNTH_CRASH_AT") or None
_CRASH_TRACE = os.environ.get("FAIRSYNTH_CRASH_TRACE") or None
_CRASH_TESTING = _CRASH_AT is not None or _CRASH_TRACE is not None
_crash_counts: dict[str, int] = {}


def _crash_due(point: str) -> str | None:
    """The action due at ``point`` now (``kill`` / ``enospc``), or None; traces the point."""
    if _CRASH_TRACE is not None:
        with open(_CRASH_TRACE, "a", encoding="utf-8") as trace:
            trace.write(f"{time.time():.6f} {point}\n")
    if _CRASH_AT is None:
        return None
    action, _, rest = _CRASH_AT.partition(":")
    wanted, _, nth = rest.partition("#")
    if wanted not in ("*", point):
        return None
    _crash_counts[wanted] = _crash_counts.get(wanted, 0) + 1
    return action if _crash_counts[wanted] == int(nth or 1) else None


def _crash(action: str, point: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (simulated at {point})")


def crash_point(point: str) -> None:
    """A moment where a crash must lose nothing (see ``FAIRSYNTH_CRASH_AT``)."""
    if _CRASH_TESTING and (action := _crash_due(point)) is not None:
        _crash(action, point)


def append_through(handle: IO, text: str) -> None:
    """Append ``text`` to an append-only log and flush it; a crash test tears it half-way.
    A full disk is an error naming the log."""
    try:
        if _CRASH_TESTING and (action := _crash_due("append")) is not None:
            handle.write(text[: max(1, len(text) // 2)])
            handle.flush()
            _crash(action, "append")
        handle.write(text)
        handle.flush()
    except OSError as err:
        if err.errno in DISK_FULL and not err.filename:
            raise OSError(err.errno, err.strerror, str(getattr(handle, "name", ""))) from err
        raise


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


#: The errors of a full disk or an exhausted quota.
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def disk_full_message(err: OSError) -> str:
    """What a user needs to read when the disk filled: which file, how much room is left, what to do."""
    where = Path(err.filename) if err.filename else None
    free = ""
    probe = where
    while probe is not None and not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe is not None and probe.exists():
        free = f" ({shutil.disk_usage(probe).free // 2**20} MiB free there)"
    return (
        f"the disk is full{f' while writing {where}' if where else ''}{free}: nothing was half-written (files are "
        "renamed into place only when complete) and finished work is kept; free some space and run the same "
        "command again to continue"
    )


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
            crash_point("write")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        crash_point("rename")
        _fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL and not err.filename:
            raise OSError(err.errno, err.strerror, str(path)) from err  # name the file it was writing
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


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its metadata keys in sorted order.

    safetensors writes ``__metadata__`` from a hash map, in an order that changes from one
    write to the next: the same tensors and metadata came out as different bytes, and so with
    a different sha256 (the identity generation records for a trained model). Data offsets
    are relative to the end of the header, so only the header is rewritten.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the 8-byte alignment safetensors itself keeps
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: The temporary name of an atomic write: ``.<file name>.<random>.tmp`` beside its target.
TEMPORARY_NAME = re.compile(r"^\..+\.tmp$")


def remove_temporaries(folder: str | Path, recursive: bool = True) -> int:
    """Delete the temporary files of atomic writes that a kill interrupted; returns how many.

    A command calls it on its own output folder before it writes there (one writer per
    folder), so a kill never leaves a ``.<name>.<random>.tmp`` behind for good.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for root, _, files in os.walk(folder) if recursive else [(str(folder), None, os.listdir(folder))]:
        for name in files:
            path = Path(root) / name
            if TEMPORARY_NAME.match(name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


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
    elif staging.exists():
        remove_temporaries(staging)  # writes the interrupted run never finished
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
    crash_point("swap")
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
