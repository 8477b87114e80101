"""One writer per study: a lock file that names its holder, taken over when the holder is dead.

A command that writes a study holds ``<workdir>/.fairsynth.lock`` while it runs; training and
generation also hold one in their own output folder (``<train.output>/.fairsynth.lock``,
``<generate.output>/.fairsynth/lock``), which may lie outside the workdir or be shared by two
recipes. The file says who holds it::

    {"pid": 4242, "host": "gpu-3", "command": "fairsynth run recipes/derm.yaml", "started": "2025-05-02T10:14:03"}

* A second writer stops with :class:`StudyLocked`, whose message names the holder's pid, host,
  command and start, and the lock file.
* A lock left by a process that died without releasing it (kill -9, a power cut) is taken
  over, and the taker says so: the holder ran on this host and its pid is gone (or is now
  another process: its start time differs).
* A lock held from another host cannot be checked from here: it stops the second writer,
  whose message says to delete the file if that process is gone.
* ``accelerate launch`` / ``torchrun`` start one process per device: only process 0 of the job
  (``RANK`` 0) takes the lock; the others never touch it.

The exclusion itself is the kernel's: ``flock`` on the open file, released by the kernel when
the holder exits however it exits, so two writers starting at the same instant cannot both win.
Within one process the lock is re-entrant (``fairsynth run`` holds the workdir while its
stages take the same or inner locks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation and the pid check only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: The lock file's name in a study's workdir and a training output folder.
LOCK_NAME = ".fairsynth.lock"

Log = Callable[[str], None]


class StudyLocked(RuntimeError):
    """Another process is writing this folder; the message names it and the lock file."""

    def __init__(self, message: str, lock_file: Path, holder: "Holder | None") -> None:
        super().__init__(message)
        self.lock_file = lock_file
        self.holder = holder

    def __reduce__(self):  # crosses process boundaries intact
        return type(self), (str(self), self.lock_file, self.holder)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: what the lock file says."""

    pid: int
    host: str
    command: str
    started: str
    #: The process's start time in clock ticks since boot (Linux), so a reused pid is told apart.
    start_ticks: int | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, `{self.command}`, since {self.started}"


def job_rank() -> int:
    """This process's rank in an ``accelerate launch`` / ``torchrun`` job (0 when not launched)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command this process runs, as a user would type it."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    program = Path(argv[0]).name
    if program in ("cli.py", "__main__.py", "fairsynth"):
        program = "fairsynth"
    return " ".join([program, *(shlex.quote(arg) for arg in argv[1:])])


def _start_ticks(pid: int) -> int | None:
    """The process's start time (Linux ``/proc/<pid>/stat`` field 22), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rpartition(")")[2].split()[19])
    except (IndexError, ValueError):
        return None


def _running(holder: Holder) -> bool:
    """Whether the holder (on this host) is still running: its pid exists and started when it did."""
    if holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return False
    if holder.start_ticks is not None:
        now = _start_ticks(holder.pid)
        if now is not None and now != holder.start_ticks:
            return False  # the pid was reused by a process that started later
    return True


def _parse(text: str) -> Holder | None:
    try:
        data = json.loads(text)
        return Holder(
            pid=int(data["pid"]), host=str(data["host"]), command=str(data.get("command", "?")),
            started=str(data.get("started", "?")),
            start_ticks=int(data["start_ticks"]) if data.get("start_ticks") is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def _read_holder(path: Path) -> Holder | None:
    """The holder a lock file names; None where it is absent, empty or being written."""
    for _ in range(20):  # the holder writes its details just after taking the lock
        try:
            holder = _parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


def _locked_message(folder: Path, path: Path, holder: Holder | None, *, other_host: bool = False) -> str:
    who = holder.describe() if holder else "another process (it has not written its details)"
    if other_host:
        return (
            f"{folder} is being written by {who}, on another host, which cannot be checked from here: "
            f"if that process has ended, delete the lock file {path} and run again"
        )
    return f"{folder} is being written by {who}; wait for it to finish or stop it (lock file {path})"


class _Held:
    def __init__(self, fd: int | None, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.count = 1


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def acquire(
    folder: str | os.PathLike, *, name: str = LOCK_NAME, command: str | None = None, log: Log | None = None
) -> Path | None:
    """Take the lock of ``folder`` (created if absent) for this process; returns the lock file.

    Returns None without touching anything on a process other than 0 of a launched job.
    Raises :class:`StudyLocked` when another live process holds it. A lock whose holder died
    is taken over, and ``log`` (default: a logging warning) says whose it was.
    """
    if job_rank() > 0:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.resolve() / name
    log = log or logger.warning
    with _guard:
        if path in _held:
            _held[path].count += 1
            return path
        fd = _take(folder, path, command or command_line(), log)
        _held[path] = _Held(fd, path)
    return path


def release(path: Path | None) -> None:
    """Give back a lock taken by :func:`acquire` (the outermost release removes the file)."""
    if path is None:
        return
    with _guard:
        held = _held.get(path)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[path]
        # unlinked while still locked: a process waiting on this file finds it gone and retries
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if held.fd is not None:
            os.close(held.fd)


@contextlib.contextmanager
def hold(
    folder: str | os.PathLike, *, name: str = LOCK_NAME, command: str | None = None, log: Log | None = None
) -> Iterator[Path | None]:
    """Hold ``folder``'s lock for the ``with`` block (see :func:`acquire`)."""
    path = acquire(folder, name=name, command=command, log=log)
    try:
        yield path
    finally:
        release(path)


def _record(command: str) -> bytes:
    pid = os.getpid()
    holder = Holder(pid, socket.gethostname(), command, time.strftime("%Y-%m-%dT%H:%M:%S"), _start_ticks(pid))
    return (json.dumps(asdict(holder)) + "\n").encode()


def _stale(folder: Path, path: Path, previous: Holder | None) -> bool:
    """Whether a lock file nobody holds in the kernel's sense may be taken; raises when it may not."""
    if previous is None or (previous.pid == os.getpid() and previous.host == socket.gethostname()):
        return False
    if previous.host != socket.gethostname():
        raise StudyLocked(_locked_message(folder, path, previous, other_host=True), path, previous)
    if _running(previous):  # alive, yet not holding the file: a writer without flock (another filesystem)
        raise StudyLocked(_locked_message(folder, path, previous), path, previous)
    return True


def _take(folder: Path, path: Path, command: str, log: Log) -> int | None:
    if fcntl is None:  # pragma: no cover
        return _take_by_creation(folder, path, command, log)
    for _ in range(50):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path)
            raise StudyLocked(_locked_message(folder, path, holder), path, holder) from None
        except OSError:  # a filesystem without flock: fall back to the file's own word
            os.close(fd)
            return _take_by_creation(folder, path, command, log)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (unlinked) between our open and our flock: try the new file
            os.close(fd)
            continue
        try:
            previous = _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            if _stale(folder, path, previous):
                log(f"took over the lock {path} of {previous.describe()}, which is no longer running")  # type: ignore[union-attr]
            data = _record(command)
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise StudyLocked(f"{folder}: the lock file {path} keeps changing; is another process starting?", path, None)


def _take_by_creation(folder: Path, path: Path, command: str, log: Log) -> None:
    """Where there is no flock: the file's existence is the lock; a dead holder's is removed."""
    for _ in range(50):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            previous = _read_holder(path)
            if previous is None or not _stale(folder, path, previous):
                raise StudyLocked(_locked_message(folder, path, previous), path, previous) from None
            log(f"took over the lock {path} of {previous.describe()}, which is no longer running")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(_record(command))
        return None
    raise StudyLocked(f"{folder}: the lock file {path} keeps changing; is another process starting?", path, None)


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def lock_study(workdir: str | os.PathLike, writes: Sequence[str | os.PathLike], *, log: Log | None = None) -> Path | None:
    """Take the study's lock (``<workdir>/.fairsynth.lock``) for a command that writes ``writes``.

    Taken where the command writes inside the workdir (a command whose outputs were all sent
    elsewhere does not create the workdir); returns the lock file, or None where none was taken.
    """
    if not any(str(w) and inside(w, workdir) for w in writes):
        return None
    return acquire(workdir, log=log)
