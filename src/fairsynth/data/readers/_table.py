"""Metadata tables as users bring them, and the checks every table reader shares.

One place for the CSV quirks of real dataset files: a UTF-8 byte-order mark, CRLF (or CR)
line ends, blank lines, cells padded with spaces, and a leading unnamed index column (what
``pandas.DataFrame.to_csv`` writes by default; the skin-diff Fitzpatrick17k subset and the
DDI copy have one). Cells stay text: each reader parses its own encodings (``1.0`` vs ``1``,
``TRUE``), so nothing is guessed for it.

Every problem is reported, not just the first, as a :class:`~fairsynth.data.problems.Problem`
naming the row id, the metadata file and the line. Kinds used by the readers:

========================  ==============================================================
``unreadable_file``       the metadata file or a caption file cannot be opened
``unparseable_csv``       not UTF-8, an unterminated quote, a row with the wrong number of
                          cells, a repeated header name
``unparseable_json``      a JSON / JSONL file or line that is not valid JSON of the expected shape
``missing_column``        a column the reader needs is absent (named in the message)
``missing_value``         a cell the reader needs (id, image, label) is blank
``missing_mapping``       the generic ``csv`` reader has no column for a required field
``bad_mapping``           the generic ``csv`` reader's ``data.columns`` uses a reserved name
``unknown_label``         a label value outside a dataset's closed set (HAM10000 ``dx``,
                          ISIC 2019 columns, MVTec folders)
``bad_label``             ISIC 2019 row with zero or several hot columns
``bad_label_column``      ``data.label_column`` is not one the reader offers
``bad_fst``               a skin type outside its encoding or not a number
``bad_value``             any other cell outside its encoding (DDI ``malignant``, age, one-hot)
``duplicate_id``          an id already read on an earlier line
``bad_layout``            a folder dataset (MVTec, kohya, imagefolder) laid out otherwise
``bad_folder_name``       a kohya folder not named ``<repeats>_<concept>``
``missing_mask``          (note) an MVTec defect image without its ground-truth mask
``ignored_option``        (note) ``data.images`` / ``data.label_column`` has no use for a reader
``ignored_column``        (note) an imagefolder column clashing with a manifest field
========================  ==============================================================

A row with an error is reported and left out of the records: a reader never guesses a value
for it. Notes (``severity="note"``) keep the row.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from fairsynth.data.problems import Problem

#: Header of a leading index column: empty (pandas' default) or pandas' own name for it.
_INDEX_HEADER = re.compile(r"^(Unnamed: 0)?$")


@dataclass
class Row:
    """One data row of a table: its cells by column name and where it starts in the file."""

    line: int
    cells: dict[str, str]

    def get(self, column: str) -> str:
        """The cell's text, stripped; ``""`` for a blank cell or an absent column."""
        return self.cells.get(column, "")

    def optional(self, column: str) -> str | None:
        """The cell's text, or None where it is blank or the column is absent."""
        return self.cells.get(column) or None


@dataclass
class Table:
    """A metadata table read as text, plus the problems met while reading it."""

    path: Path
    columns: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def file(self) -> str:
        return str(self.path)

    def problem(
        self,
        kind: str,
        message: str,
        row: Row | None = None,
        row_id: str | None = None,
        *,
        line: int | None = None,
        severity: Literal["error", "note"] = "error",
    ) -> Problem:
        """A problem in this table, at ``row`` (or ``line``) when given."""
        return Problem(
            kind=kind,
            message=message,
            row_id=row_id or None,
            file=self.file,
            line=row.line if row is not None else line,
            severity=severity,
        )

    def missing_columns(self, required: Iterable[str], dataset: str) -> list[Problem]:
        """One ``missing_column`` problem per required column the table lacks.

        A table whose header could not be read has already reported that; it gets none.
        """
        if not self.columns:
            return []
        present = ", ".join(self.columns)
        return [
            self.problem(
                "missing_column",
                f"{dataset} metadata needs a column {column!r}; the file has: {present}",
            )
            for column in dict.fromkeys(required)
            if column not in self.columns
        ]


def read_table(path: Path, id_column: str | None = None) -> Table:
    """Read a CSV metadata file as text rows, with the quirks of real dataset files.

    Args:
        path: the CSV file.
        id_column: column holding the row id, so that a malformed row's problem can name it.

    Returns:
        A :class:`Table`; what could not be read is in ``table.problems`` (a file that cannot
        be decoded at all yields no columns and no rows).
    """
    table = Table(path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        table.problems.append(table.problem("unreadable_file", f"cannot read the file: {err.strerror or err}"))
        return table
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        table.problems.append(
            table.problem(
                "unparseable_csv",
                f"not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8",
                line=data[: err.start].count(b"\n") + 1,
            )
        )
        return table

    # strict: an unterminated quote is an error rather than a field swallowing the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    drop_index = False
    id_position: int | None = None
    last_line = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            table.problems.append(
                table.problem("unparseable_csv", f"malformed CSV from this line on: {err}", line=last_line + 1)
            )
            last_line = reader.line_num
            continue
        line, last_line = last_line + 1, reader.line_num
        if not cells or all(not cell.strip() for cell in cells):
            continue  # blank line
        cells = [cell.strip() for cell in cells]
        if header is None:
            drop_index = len(cells) > 1 and bool(_INDEX_HEADER.match(cells[0]))
            header = cells[1:] if drop_index else cells
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                table.problems.append(
                    table.problem(
                        "unparseable_csv",
                        f"the header repeats column(s) {', '.join(map(repr, repeated))}; "
                        "the first of each is used",
                        line=line,
                    )
                )
            table.columns = list(dict.fromkeys(header))
            id_position = header.index(id_column) if id_column in header else None
            continue
        if drop_index:
            cells = cells[1:]
        if len(cells) != len(header):
            row_id = cells[id_position] if id_position is not None and id_position < len(cells) else None
            table.problems.append(
                table.problem(
                    "unparseable_csv",
                    f"row has {len(cells)} cells but the header has {len(header)} columns",
                    row_id=row_id,
                    line=line,
                )
            )
            continue
        values: dict[str, str] = {}
        for name, cell in zip(header, cells):
            values.setdefault(name, cell)
        table.rows.append(Row(line, values))
    if header is None and not table.problems:
        table.problems.append(table.problem("unparseable_csv", "the file is empty: no header row"))
    return table


class SeenIds:
    """Ids read so far; an id read a second time is a ``duplicate_id`` problem.

    The first row with an id is kept; later rows with the same id are reported and left out,
    so that ids stay unique in the manifest.
    """

    def __init__(self) -> None:
        self._first_line: dict[str, int | None] = {}

    def add(self, row_id: str, file: str, line: int | None = None) -> Problem | None:
        """Remember ``row_id``; a problem if it was already read."""
        if row_id not in self._first_line:
            self._first_line[row_id] = line
            return None
        first = self._first_line[row_id]
        where = f" (first on line {first})" if first is not None else ""
        return Problem(
            kind="duplicate_id",
            message=f"id {row_id!r} appears more than once{where}; only the first row is kept",
            row_id=row_id,
            file=file,
            line=line,
        )
