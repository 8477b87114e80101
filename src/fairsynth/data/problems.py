"""Problems found in a dataset: every one is reported, each naming its row and file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One thing wrong (``error``) or changed on the way in (``note``) in a dataset.

    Attributes:
        kind: short machine-readable code (``missing_file``, ``unknown_label``, ...).
        message: what is wrong, in a sentence.
        row_id: the row's id in the dataset (Fitzpatrick17k: md5hash), when there is a row.
        file: the file involved: the image, or the metadata file for table-level problems.
        line: 1-based line (CSV) or row number in the metadata file, when known.
        severity: ``error`` makes the dataset invalid; ``note`` is informational
            (e.g. a grayscale image that will be converted to RGB).
    """

    kind: str
    message: str
    row_id: str | None = None
    file: str | None = None
    line: int | None = None
    severity: Literal["error", "note"] = "error"

    def __str__(self) -> str:
        where = []
        if self.row_id is not None:
            where.append(f"row {self.row_id}")
        if self.line is not None:
            where.append(f"line {self.line}")
        place = f" ({', '.join(where)})" if where else ""
        return f"{self.severity}: {self.file or '-'}{place}: [{self.kind}] {self.message}"


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
