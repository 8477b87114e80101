"""The output folder: atomic PNGs, an append-only journal, manifests that match the files.

Layout of ``generate.output``::

    metadata.jsonl            the delivered set: exactly the target count of every cell
    images/<cell>/<id>.png    the delivered images (lossless PNG)
    not_selected/<cell>/...   generated but not delivered: rejected by a check, or surplus
    candidates.jsonl          every generated image with its check values and verdicts
    plan.json, report.json, config.yaml
    .fairsynth/               run.json (the settings images depend on), journal-*.jsonl, lock

``datasets.load_dataset("imagefolder", data_dir=output)`` and ``pandas.read_json(..., lines=True)``
read ``metadata.jsonl`` directly (images not listed there are skipped by imagefolder).

Crash safety, in the order things are written: a PNG goes to a temporary name and is renamed
into ``not_selected/`` (atomic); then its row is appended to the process's journal and
fsync'd. A kill at any moment leaves (a) complete PNGs with a row, (b) at most a few complete
PNGs without a row, deleted and regenerated on the next run (their seed makes them again),
(c) at most one torn journal line, dropped, and (d) temporary files, removed. The manifests
are rewritten atomically from the journal at the end of every run, moving each image to the
folder its verdict says (rename, atomic); a rerun of the same command finishes an interrupted
move. Nothing else in the folder is touched: a file fairsynth did not write is an error.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from fairsynth.io import append_through, atomic_write_bytes, atomic_write_text, crash_point, sha256_bytes
from fairsynth.lock import acquire
from fairsynth.lock import release as release_lock

IMAGES = "images"
NOT_SELECTED = "not_selected"
STATE = ".fairsynth"
RUN_FILE = "run.json"
LOCK_FILE = "lock"
MANIFEST = "metadata.jsonl"
CANDIDATES = "candidates.jsonl"
OWN_FILES = {MANIFEST, CANDIDATES, "plan.json", "report.json", "config.yaml", IMAGES, NOT_SELECTED, STATE}
_TEMPORARY = re.compile(r"^\..+\.tmp$")
_IMAGE_NAME = re.compile(r"^(?P<slug>[a-z0-9-]+)-(?P<index>\d{6,})\.png$")


class GenerationError(ValueError):
    """Generation cannot go on as asked; the message says why and what to do."""


class DiskFullError(GenerationError):
    """The disk filled while writing; everything written before is complete and kept."""


@contextlib.contextmanager
def _disk_errors(root: Path, done: int) -> Any:
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            free = shutil.disk_usage(root).free if root.exists() else 0
            writing = f" while writing {err.filename}" if err.filename else ""
            raise DiskFullError(
                f"the disk holding {root} is full ({free // 2**20} MiB free){writing}: {done} images written so far are "
                "complete and kept; free some space and run the same command again to continue"
            ) from None
        raise


class OutputFolder:
    """One generation output folder, shared by every process of a run."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.state = self.root / STATE
        self._journal: Any = None
        self._lock: Path | None = None
        self.written = 0

    # -- opening -------------------------------------------------------------------------
    def open(self, fingerprint: dict[str, Any]) -> bool:
        """Claim the folder (main process only): refuse foreign files and other settings, clear
        temporary files. Returns True when it continues an earlier run."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.check_foreign()
        self.lock()  # before reading run.json: a writer still running may be about to write it
        try:
            run_file = self.state / RUN_FILE
            resumed = run_file.is_file()
            if resumed:
                previous = json.loads(run_file.read_text(encoding="utf-8"))
                changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
                if changed:
                    details = "; ".join(f"{k}: {previous.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed[:6])
                    raise GenerationError(
                        f"{self.root} holds images generated with other settings ({details}); its images would not be "
                        "what this recipe makes: choose a new generate.output, or delete the folder to start over"
                    )
            self.remove_temporary()
            if not resumed:
                with _disk_errors(self.root, 0):
                    atomic_write_text(run_file, json.dumps(fingerprint, indent=2, sort_keys=True, default=str) + "\n")
        except BaseException:
            self.release()
            raise
        return resumed

    def lock(self) -> None:
        """Hold the folder's lock (:mod:`fairsynth.lock`): one writer at a time, a dead one's lock taken over."""
        if self._lock is None:
            self._lock = acquire(self.state, name=LOCK_FILE)

    def release(self) -> None:
        release_lock(self._lock)
        self._lock = None

    def check_foreign(self) -> None:
        """Raise when the folder holds anything fairsynth would not have written there."""
        foreign: list[str] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name in OWN_FILES or _TEMPORARY.match(entry.name):
                continue
            foreign.append(entry.name)
        for folder in (IMAGES, NOT_SELECTED):
            base = self.root / folder
            if not base.is_dir():
                if base.exists():
                    foreign.append(folder)
                continue
            for cell_dir in sorted(base.iterdir()):
                if not cell_dir.is_dir():
                    foreign.append(f"{folder}/{cell_dir.name}")
                    continue
                for item in cell_dir.iterdir():
                    match = _IMAGE_NAME.match(item.name)
                    if _TEMPORARY.match(item.name) or (match and match["slug"] == cell_dir.name and item.is_file()):
                        continue
                    foreign.append(f"{folder}/{cell_dir.name}/{item.name}")
        if foreign:
            raise GenerationError(
                f"{self.root} holds {len(foreign)} file(s) fairsynth did not write ({', '.join(foreign[:5])}"
                f"{' ...' if len(foreign) > 5 else ''}); generate into an empty or new folder (generate.output)"
            )

    def remove_temporary(self) -> None:
        """Temporary files of writes a kill interrupted."""
        for folder in (self.root, self.state, *self.root.glob(f"{IMAGES}/*"), *self.root.glob(f"{NOT_SELECTED}/*")):
            if folder.is_dir():
                for item in folder.iterdir():
                    if _TEMPORARY.match(item.name) and item.is_file():
                        item.unlink()

    # -- images and rows -------------------------------------------------------------------
    @staticmethod
    def name_of(slug: str, index: int) -> str:
        """``<cell slug>/<cell slug>-<index>.png``: where a candidate lives inside images/ or not_selected/."""
        return f"{slug}/{slug}-{index:06d}.png"

    def locate(self, name: str) -> Path | None:
        for folder in (IMAGES, NOT_SELECTED):
            path = self.root / folder / name
            if path.is_file():
                return path
        return None

    @staticmethod
    def encode(image: Image.Image) -> bytes:
        """Lossless PNG bytes of an image."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def write_image(self, data: bytes, name: str) -> tuple[str, int]:
        """Save PNG bytes atomically into not_selected/ (placed when judged); (sha256, bytes)."""
        with _disk_errors(self.root, self.written):
            for folder in (IMAGES, NOT_SELECTED):  # a rerun regenerating an image must not leave two copies
                with contextlib.suppress(FileNotFoundError):
                    (self.root / folder / name).unlink()
            atomic_write_bytes(self.root / NOT_SELECTED / name, data)
        self.written += 1
        return sha256_bytes(data), len(data)

    def journal_path(self, writer: str) -> Path:
        return self.state / f"journal-{writer}.jsonl"

    def append(self, writer: str, entries: Iterable[dict[str, Any]]) -> None:
        """Append journal entries (one JSON line each) and fsync; a torn last line is repaired first."""
        lines = "".join(json.dumps(e, default=_json_default, allow_nan=False) + "\n" for e in entries)
        if not lines:
            return
        path = self.journal_path(writer)
        with _disk_errors(self.root, self.written):
            if self._journal is None or self._journal.name != str(path):
                self.close_journal()
                _repair_tail(path)
                self._journal = open(path, "a", encoding="utf-8")
            append_through(self._journal, lines)
            os.fsync(self._journal.fileno())

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def read_journal(self) -> dict[str, dict[str, Any]]:
        """Every candidate's row (by id), later entries merged over earlier ones; torn lines skipped."""
        rows: dict[str, dict[str, Any]] = {}
        for path in sorted(self.state.glob("journal-*.jsonl")):
            for line in path.read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the torn tail of a killed process
                if entry.get("kind") == "image":
                    rows[entry["row"]["id"]] = dict(entry["row"])
                elif entry.get("kind") == "values" and entry.get("id") in rows:
                    rows[entry["id"]].update(entry["values"])
        return rows

    def reconcile(self, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Rows whose image is complete on disk; images without a row are deleted (regenerated later)."""
        valid: dict[str, dict[str, Any]] = {}
        for key, row in rows.items():
            path = self.locate(row["name"])
            if path is not None and path.stat().st_size == row.get("bytes"):
                valid[key] = row
        names = {row["name"] for row in valid.values()}
        for folder in (IMAGES, NOT_SELECTED):
            for path in sorted((self.root / folder).glob("*/*.png")):
                name = f"{path.parent.name}/{path.name}"
                if name not in names:
                    path.unlink()
        return valid

    # -- manifests -------------------------------------------------------------------------
    def materialise(self, rows: list[dict[str, Any]]) -> None:
        """Move every image where its ``selected`` flag says; write candidates.jsonl and metadata.jsonl."""
        with _disk_errors(self.root, self.written):
            for row in rows:
                folder = IMAGES if row["selected"] else NOT_SELECTED
                target = self.root / folder / row["name"]
                if not target.is_file():
                    current = self.locate(row["name"])
                    if current is None:
                        raise GenerationError(f"image {row['name']} of {self.root} vanished while the run was writing it")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(current, target)
                    crash_point("move")
                row["file_name"] = f"{folder}/{row['name']}"
            public = [_public(row) for row in rows]
            atomic_write_text(self.root / CANDIDATES, _jsonl(public))
            atomic_write_text(self.root / MANIFEST, _jsonl([r for r in public if r["selected"]]))
        for folder in (IMAGES, NOT_SELECTED):
            for cell_dir in (self.root / folder).glob("*"):
                if cell_dir.is_dir() and not any(cell_dir.iterdir()):
                    cell_dir.rmdir()


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row: file_name first, no internal keys."""
    out = {"file_name": row["file_name"]}
    out.update({k: v for k, v in row.items() if k not in ("file_name", "name", "bytes") and not k.startswith("_")})
    return out


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n" for row in rows)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _repair_tail(path: Path) -> None:
    """Cut a journal back to its last complete line (a kill can tear the last one)."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
