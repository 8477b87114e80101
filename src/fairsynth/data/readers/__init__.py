"""Dataset readers: each module in this package registers one reader in :data:`READERS`.

:data:`READERS` is declared in :mod:`fairsynth.config`, beside the :class:`DataConfig` whose
``reader`` names one, and re-exported here.

A reader turns what a user brings (a metadata CSV, a folder layout, a captions file) into
:class:`~fairsynth.data.records.Record` rows plus every table-level :class:`Problem` it sees
(missing column, unknown label value, skin type outside its encoding, duplicate id, ...).
Image-level checks (missing, truncated, too small, outside the root) are done afterwards by
:mod:`fairsynth.data.validation`, the same for every reader.

A reader is a callable ``read(path, images, cfg) -> ReadResult``:

    path:    the metadata file or dataset folder the user named;
    images:  the image folder the user named, or None for the reader's usual place;
    cfg:     the :class:`~fairsynth.config.DataConfig` (label column, column map, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fairsynth.config import READERS, DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.records import Record


@dataclass
class ReadResult:
    """Records read from a dataset, the problems seen on the way, and the image root.

    ``Record.image`` paths are relative to ``root``; validation keeps them inside it.
    """

    records: list[Record]
    root: Path
    problems: list[Problem] = field(default_factory=list)
    #: The metadata file (or folder) the rows came from, for messages.
    source: str = ""


class Reader(Protocol):
    def __call__(self, path: Path, images: Path | None, cfg: DataConfig) -> ReadResult: ...


def read_dataset(cfg: DataConfig, path: str | Path | None = None, images: str | Path | None = None) -> ReadResult:
    """Read the dataset named by ``cfg`` (``path``/``images`` override the config's)."""
    reader = READERS.get(cfg.reader)
    path = Path(path or cfg.path)
    if not str(path):
        raise ValueError("no dataset path given (data.path)")
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    images = images or cfg.images
    return reader(path, Path(images) if images else None, cfg)


__all__ = ["READERS", "ReadResult", "Reader", "read_dataset"]
