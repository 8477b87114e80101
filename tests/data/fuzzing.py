"""Fuzzed dataset files and recipes: strategies, the properties every case must keep, and a tally.

Used by ``tests/data/test_fuzz.py`` (a modest number of cases by default, at least 500 per
target under ``-m slow``) and by ``benchmarks/hostile_inputs.py`` (which prints the counts).

A case is a dataset as a user might bring it, half broken: CSV tables with missing, extra,
blank and repeated columns, ragged rows, NaN, empty strings, unicode and control characters,
huge numbers, duplicate ids, wrong types, other encodings; JSONL and JSON files with every JSON
type in every field and lines that are not JSON; folder layouts with odd names and unreadable
captions; recipes as random YAML text, random structures over the real keys, and overrides.

The property: reading and validating ends in a :class:`~fairsynth.data.validation.ValidationReport`
whose every problem names its file (and its row or line where it is about one), with unique
record ids; a recipe ends in a :class:`~fairsynth.recipe.Recipe` or a
:class:`~fairsynth.config.ConfigError` naming the recipe file. Anything else (a KeyError, a
TypeError, a raw ValueError, a hang) is a bug.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairsynth.config import ConfigError, DataConfig
from fairsynth.data.problems import Problem
from fairsynth.data.validation import ValidationReport, validate
from tests.helpers import FITZ_COLUMNS, make_image

# ---- cells and values ---------------------------------------------------------------------

#: Cell texts that have broken real readers: encodings of "unknown", numbers at the edges,
#: quotes and separators, paths that leave the root, byte-order marks, NUL.
NASTY_CELLS = [
    "", " ", "  padded  ", "nan", "NaN", "None", "null", "NA", "-1", "0", "1", "6", "7", "-0", "1.0", "1.5", "6.0",
    "1e309", "-1e309", "inf", "-inf", "1e-400", "99999999999999999999999999999", "0x10", "TRUE", "false", "yes",
    "I", "VI", "vii", "FST V", "fst", "V-VI", "12", "34", "56", "\"", "'", ",", ";", "\n", "\r\n", "\r", "\t",
    "\ufeff", "\u2028", "../up.jpg", "/etc/passwd", "C:\\x.jpg", "a\x00b", "日本語", "🙂", "\u202e", "a" * 300,
]

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
cells = st.one_of(
    st.sampled_from(NASTY_CELLS), any_text, st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), any_text, st.sampled_from(NASTY_CELLS),
)
#: JSON and YAML text no Python value writes: numbers past Python's 4,300-digit limit for reading
#: integers, nesting past its recursion limit.
raw_extremes = st.one_of(
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.integers(900, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(900, 3000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=8,
)


@dataclass
class TableSpec:
    """What a table reader expects: its columns, values it accepts, and other plausible values.

    A row starts valid (``valid`` values; one hot column of ``one_hot``) and then has a few
    cells replaced by plausible or nasty ones, so that the cases reach every check of a row
    rather than stopping at the first.
    """

    columns: list[str]
    valid: dict[str, list[str]] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)
    index_column: bool = False
    one_hot: list[str] = field(default_factory=list)


IDS = ["a", "b", "c", "a ", "A", "ä", "0", "1.0"]
ISIC = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
TABLES: dict[str, TableSpec] = {
    "fitzpatrick17k": TableSpec(
        FITZ_COLUMNS,
        valid={"md5hash": IDS, "fitzpatrick_scale": ["-1", "1", "2", "5", "6", "1.0", "VI"],
               "fitzpatrick_centaur": ["-1", "3", "6", ""], "label": ["melanoma", "psoriasis"],
               "nine_partition_label": ["inflammatory"], "three_partition_label": ["malignant"]},
        values={"fitzpatrick_scale": ["0", "7", "1.5", "1e309", "nan", "-2"], "md5hash": [""]},
    ),
    "ddi": TableSpec(
        ["DDI_ID", "DDI_file", "skin_tone", "malignant", "disease"],
        valid={"DDI_ID": IDS, "DDI_file": ["a.jpg", "b.png", "sub/a.jpg"], "skin_tone": ["12", "34", "56"],
               "malignant": ["TRUE", "FALSE", "True", "false"], "disease": ["melanoma", "verruca"]},
        values={"DDI_file": ["", "../x.png", "/etc/hostname"], "skin_tone": ["78", "1", "12.0"], "malignant": ["maybe", "1"]},
        index_column=True,
    ),
    "ham10000": TableSpec(
        ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"],
        valid={"image_id": IDS, "lesion_id": ["L1", "L2"], "dx": ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"],
               "dx_type": ["histo", "follow_up"], "age": ["45.0", "", "nan", "80", "0"], "sex": ["male", "female", "unknown"],
               "localization": ["back", "face"], "dataset": ["vidir_modern", ""]},
        values={"dx": ["xyz", "MEL"], "age": ["old", "1e309", "-5", "inf", "200"]},
    ),
    "isic2019": TableSpec(
        ["image", *ISIC, "score_weight"],
        valid={"image": IDS, "score_weight": ["1.0", "0.5", ""]},
        values={**{c: ["2", "", "yes", "1.00"] for c in ISIC}, "score_weight": ["x", "nan", "inf", "-1"]},
        one_hot=ISIC,
    ),
    "csv": TableSpec(
        ["path", "condition", "skin_type", "sex", "split", "caption", "uid"],
        valid={"path": ["a.jpg", "b.png", "sub/a.jpg"], "uid": IDS, "condition": ["eczema", "acne"],
               "skin_type": ["1", "VI", "-1", "", "FST V"], "split": ["train", "test", ""], "sex": ["f", "m"]},
        values={"path": ["", "../a.jpg", "/abs.jpg", "sub"], "skin_type": ["seven", "7", "0.5"]},
    ),
}
#: Fields of the generic csv reader's data.columns, plus names it must refuse or pass through.
CSV_FIELDS = ["id", "image", "label", "caption", "fst", "group", "split", "sex", "file_name", "fst_group"]


@st.composite
def tables(draw: Callable, spec: TableSpec) -> tuple[bytes, list[str]]:
    """A CSV file's bytes for a table reader, and its header."""
    if draw(st.integers(0, 9)) < 7:  # mostly the columns the reader needs, so rows are read
        columns = list(spec.columns) + draw(st.lists(st.one_of(st.sampled_from(spec.columns), any_text), max_size=2))
        columns = draw(st.permutations(columns))
    else:
        columns = draw(st.lists(st.one_of(st.sampled_from(spec.columns + [""]), any_text), max_size=len(spec.columns) + 2))
    if spec.index_column or draw(st.booleans()):
        columns = [""] + list(columns)

    def mutation(column: str) -> st.SearchStrategy[str]:
        other = spec.values.get(column, []) + spec.valid.get(column, [])
        return st.one_of(st.sampled_from(other), cells) if other else cells

    rows = []
    for _ in range(draw(st.integers(0, 6))):
        hot = draw(st.sampled_from(spec.one_hot)) if spec.one_hot else None
        row = []
        for column in columns:
            if column in spec.one_hot:
                row.append(draw(st.sampled_from(["1", "1.0"] if column == hot else ["0", "0.0"])))
            elif column in spec.valid:
                row.append(draw(st.sampled_from(spec.valid[column])))
            else:
                row.append(draw(any_text))
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2])) if row else 0):  # then break a cell or two
            at = draw(st.integers(0, len(row) - 1))
            row[at] = draw(mutation(columns[at]))
        if draw(st.integers(0, 9)) == 0:  # ragged: a cell too many or too few
            row = row[:-1] if row and draw(st.booleans()) else row + [draw(cells)]
        rows.append(row)
    style = draw(st.sampled_from(["quoted"] * 6 + ["naive", "crlf", "bom", "latin-1", "garbage"]))
    if style == "naive":  # joined by hand: quotes and separators inside cells break the structure
        text = "".join(",".join(r) + "\n" for r in [columns, *rows])
    else:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n" if style == "crlf" else "\n").writerows([columns, *rows])
        text = buffer.getvalue()
    if style == "bom":
        return "\ufeff".encode() + text.encode("utf-8", "surrogatepass"), columns
    if style == "latin-1":
        return text.encode("utf-8", "surrogatepass").replace(b"a", b"\xe4", 1), columns
    if style == "garbage":
        return draw(st.binary(max_size=200)) + text.encode("utf-8", "surrogatepass"), columns
    return text.encode("utf-8", "surrogatepass"), columns


# ---- the property -----------------------------------------------------------------------------

#: Problems about the whole file (no row to name).
TABLE_LEVEL = {
    "unreadable_file", "unparseable_csv", "unparseable_json", "missing_column", "missing_mapping", "bad_mapping",
    "bad_label_column", "unknown_label", "bad_layout", "bad_folder_name", "ignored_option", "ignored_column",
}


class PropertyBroken(AssertionError):
    """A case that did not end in a clear report (the message says which property broke)."""


class Outcome(NamedTuple):
    """How one case ended: in words, and the records read and error problems named on the way."""

    what: str
    records: int = 0
    problems: int = 0


def check_report(report: ValidationReport, *, rows_have_lines: bool) -> Outcome:
    """Raise :class:`PropertyBroken` unless the report is one a user can act on; returns the outcome."""
    ids = [r.id for r in report.records]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise PropertyBroken(f"record ids repeat: {duplicates[:3]}")
    for record in report.records:
        if not isinstance(record.id, str) or not isinstance(record.image, str):
            raise PropertyBroken(f"record with a non-text id or image: {record!r}")
        if record.label is not None and not isinstance(record.label, str):
            raise PropertyBroken(f"record {record.id!r}: label is {type(record.label).__name__}")
        if record.label is not None and not record.label:
            raise PropertyBroken(f"record {record.id!r}: an empty label instead of none")
        if record.caption is not None and not isinstance(record.caption, str):
            raise PropertyBroken(f"record {record.id!r}: caption is {type(record.caption).__name__}")
        fst = record.attributes.get("fst")
        if fst is not None and fst not in range(1, 7):
            raise PropertyBroken(f"record {record.id!r}: fst {fst!r} outside 1-6")
        try:  # what prepare writes: metadata.jsonl, strict JSON that datasets / pyarrow can read
            json.dumps(record.to_row(), allow_nan=False)
        except (ValueError, TypeError) as err:
            raise PropertyBroken(f"record {record.id!r} cannot be written to a manifest as JSON: {err}") from err
    for problem in report.problems:
        if not isinstance(problem, Problem) or not problem.kind or not problem.message:
            raise PropertyBroken(f"a problem without a kind or a message: {problem!r}")
        if not problem.file:
            raise PropertyBroken(f"a problem that names no file: {problem}")
        str(problem)  # printable
        if rows_have_lines and problem.kind not in TABLE_LEVEL and problem.line is None and problem.row_id is None:
            raise PropertyBroken(f"a row problem that names neither its row nor its line: {problem}")
    return Outcome("read clean" if report.ok else "problems reported", len(report.records),
                   sum(p.severity == "error" for p in report.problems))


def run_validation(cfg: DataConfig, path: Path, *, rows_have_lines: bool) -> Outcome:
    return check_report(validate(cfg, path), rows_have_lines=rows_have_lines)


# ---- the targets ------------------------------------------------------------------------------


def _images(root: Path) -> Path:
    """An image folder holding the images the valid cells name (so that many rows find theirs)."""
    for name in ("a.jpg", "b.jpg", "c.jpg", "b.png", "sub/a.jpg"):
        make_image(root / name, size=32)
    return root


@st.composite
def table_cases(draw: Callable, reader: str) -> tuple[bytes, dict[str, Any]]:
    data, columns = draw(tables(TABLES[reader]))
    options: dict[str, Any] = {}
    if reader == "fitzpatrick17k":
        options["label_column"] = draw(st.sampled_from([None, "label", "nine_partition_label", "three_partition_label",
                                                        "qc", "", "日本"]))
    if reader == "csv":
        if draw(st.integers(0, 3)):  # mostly the mapping that fits the table, in part, plus odd fields
            fitting = {"image": "path", "id": "uid", "label": "condition", "fst": "skin_type", "split": "split",
                       "sex": "sex", "caption": "caption"}
            chosen = draw(st.lists(st.sampled_from(sorted(fitting)), unique=True, max_size=len(fitting)))
            options["columns"] = {"image": "path", **{name: fitting[name] for name in chosen}}
            if draw(st.integers(0, 3)) == 0:
                options["columns"][draw(st.sampled_from(CSV_FIELDS))] = draw(st.one_of(st.sampled_from(columns or ["x"]), any_text))
        else:
            choices = st.one_of(st.sampled_from(columns) if columns else any_text, any_text)
            options["columns"] = draw(st.dictionaries(st.sampled_from(CSV_FIELDS), choices, max_size=5))
    options["require_captions"] = draw(st.booleans())
    return data, options


def check_table_case(reader: str, case: tuple[bytes, dict[str, Any]]) -> Outcome:
    data, options = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "metadata.csv"
        path.write_bytes(data)
        cfg = DataConfig(reader=reader, path=str(path), images=str(_images(root / "images")), **options)
        return run_validation(cfg, path, rows_have_lines=True)


@st.composite
def imagefolder_cases(draw: Callable) -> tuple[str, bytes, str | None]:
    """(metadata file name, its bytes, data.label_column) of an imagefolder dataset."""
    label_column = draw(st.sampled_from([None, "label", "class", "", "file_name"]))
    keys = st.one_of(st.sampled_from(["file_name", "id", "label", "caption", "text", "fst", "fst_group", "split",
                                      "class", "source_file"]), any_text)
    files = st.one_of(st.sampled_from(["a.jpg", "sub/a.jpg", "missing.png", "../a.jpg", "/etc/hostname", "", " ",
                                       "a\x00.jpg", "sub", "."]), any_text)
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 10))
        if kind == 10:  # valid JSON that Python cannot read
            lines.append('{"file_name": "a.jpg", "x": ' + draw(raw_extremes) + "}")
        elif kind == 0:
            lines.append(draw(any_text))  # not JSON
        elif kind == 1:
            lines.append(json.dumps(draw(json_values)))  # JSON, maybe not an object
        else:
            row = draw(st.dictionaries(keys, json_values, max_size=5))
            if kind > 3:
                row["file_name"] = draw(files)
            lines.append(json.dumps(row, allow_nan=True))
    if draw(st.booleans()):
        return "metadata.jsonl", "\n".join(lines).encode("utf-8", "surrogatepass"), label_column
    data, _ = draw(tables(TableSpec(["file_name", "label", "text", "fst", "id"],
                                    {"file_name": ["a.jpg", "missing.png", "../a.jpg", ""], "id": IDS})))
    return "metadata.csv", data, label_column


def check_imagefolder_case(case: tuple[str, bytes, str | None]) -> Outcome:
    name, data, label_column = case
    with tempfile.TemporaryDirectory() as folder:
        root = _images(Path(folder))
        (root / name).write_bytes(data)
        cfg = DataConfig(reader="imagefolder", path=str(root), label_column=label_column)
        report = validate(cfg, root)
        outcome = check_report(report, rows_have_lines=True)
    if name.endswith(".jsonl"):
        _check_typed_labels(report, data, label_column or "label")
    return outcome


def _check_typed_labels(report: ValidationReport, data: bytes, label_column: str) -> None:
    """A JSON label is text or a number; null and NaN are no label; anything else refuses the row."""
    rows = []
    for line in data.decode("utf-8", "replace").split("\n"):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("file_name"), str):
            rows.append(row)
    for record in report.records:
        sources = [r for r in rows if r["file_name"].strip() == record.image]
        if not sources:
            continue
        allowed = False
        for source in sources:
            value = source.get(label_column)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                allowed |= record.label is None
            elif isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                            and not (isinstance(value, float) and math.isinf(value))):
                allowed |= record.label == (str(value).strip() or None)
        if not allowed:
            raise PropertyBroken(
                f"record {record.id!r}: label {record.label!r} from {[s.get(label_column) for s in sources]!r} "
                "(a label must come from text or a number; anything else must be a problem)"
            )


@st.composite
def deepfashion_cases(draw: Callable) -> bytes:
    """A captions.json: an object of file -> caption (repeated keys, odd values), or any JSON, or not JSON."""
    kind = draw(st.integers(0, 10))
    if kind == 0:
        return draw(st.binary(max_size=100))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    if kind == 10:
        return ('{"a.jpg": ' + draw(raw_extremes) + "}").encode()
    pairs = draw(st.lists(st.tuples(st.one_of(st.sampled_from(["a.jpg", "a.jpg", "", " ", "../a.jpg", "b.png"]), any_text),
                                    st.one_of(any_text, json_values)), max_size=6))
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v, allow_nan=True)}" for k, v in pairs)
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


def check_deepfashion_case(data: bytes) -> Outcome:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _images(root / "images")
        (root / "captions.json").write_bytes(data)
        cfg = DataConfig(reader="deepfashion", path=str(root))
        return run_validation(cfg, root, rows_have_lines=False)


folder_names = st.one_of(
    st.sampled_from(["10_sks dog", "1_cat", "0_zero", "3_", "3_ ", "abc", "99999999999999999999999_big", "_x", "5__x",
                     "train", "test", "good", "ground_truth", "broken", ".hidden", "10_日本", "2_a b c"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
    .filter(lambda name: name not in (".", "..")),
)
file_names = st.one_of(
    st.sampled_from(["001.jpg", "002.png", "003.txt", "001.txt", "001.caption", "x.JPG", ".hidden.png", "000_mask.png",
                     "000.png", "noext"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
    .filter(lambda name: name not in (".", "..")),
)


@st.composite
def trees(draw: Callable, depth: int) -> dict[str, Any]:
    """A folder tree: {name: subtree} for folders, {name: bytes} for files."""
    tree: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        if depth > 0 and draw(st.booleans()):
            tree[draw(folder_names)] = draw(trees(depth - 1))
        else:
            name = draw(file_names)
            image = name.lower().endswith((".jpg", ".png")) and draw(st.booleans())
            tree[name] = b"IMAGE" if image else draw(st.binary(max_size=40))
    return tree


def _build(root: Path, tree: dict[str, Any]) -> None:
    for name, content in tree.items():
        path = root / name
        try:
            if isinstance(content, dict):
                path.mkdir(exist_ok=True)
                _build(path, content)
            elif content == b"IMAGE":
                make_image(path, size=16)
            elif not path.exists():
                path.write_bytes(content)
        except OSError:  # a name the file system refuses (too long for its encoding): not this case's point
            continue


@st.composite
def mvtec_cases(draw: Callable) -> dict[str, Any]:
    """Mostly MVTec-shaped: <category>/{train,test,ground_truth}/<label>/files."""
    if draw(st.integers(0, 4)) == 0:
        return draw(trees(3))
    labels = st.dictionaries(st.one_of(st.sampled_from(["good", "broken", "crack"]), folder_names),
                             trees(0), max_size=3)
    category = st.dictionaries(st.sampled_from(["train", "test", "ground_truth", "extra"]), labels, max_size=3)
    return draw(st.dictionaries(st.one_of(st.sampled_from(["bottle", "screw"]), folder_names), category, max_size=2))


def check_folder_case(reader: str, tree: dict[str, Any]) -> Outcome:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "dataset"
        root.mkdir()
        _build(root, tree)
        cfg = DataConfig(reader=reader, path=str(root))
        return run_validation(cfg, root, rows_have_lines=False)


# ---- recipes ---------------------------------------------------------------------------------


def _recipe_keys() -> dict[str, list[str]]:
    """Every section of a recipe and its keys (nested sections by their dotted names)."""
    from fairsynth.config import describe
    from fairsynth.recipe import Recipe

    keys: dict[str, list[str]] = {}
    for dotted, _, _ in describe(Recipe):
        section, _, rest = dotted.partition(".")
        keys.setdefault(section, []).append(rest)
    return keys


RECIPE_KEYS = _recipe_keys()


yaml_keys = st.one_of(any_text, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


@st.composite
def recipe_structures(draw: Callable) -> dict[str, Any]:
    """A mapping over the real sections and keys (and some unknown ones) with values of any type."""
    out: dict[Any, Any] = {}
    for section in draw(st.lists(st.one_of(st.sampled_from(sorted(RECIPE_KEYS)), any_text), max_size=4)):
        names = RECIPE_KEYS.get(section, [])
        if names == [""] or not names or draw(st.integers(0, 5)) == 0:
            out[section] = draw(json_values)
            continue
        body: dict[str, Any] = {}
        for dotted in draw(st.lists(st.sampled_from(names), max_size=4)):
            node = body
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            node[leaf] = draw(json_values)
        if draw(st.integers(0, 4)) == 0:  # an unknown key; YAML keys may be numbers, null, booleans
            body[draw(yaml_keys)] = draw(json_values)
        out[section] = body
    if draw(st.integers(0, 6)) == 0:
        out[draw(yaml_keys)] = draw(json_values)
    return out


def _like(default: Any) -> st.SearchStrategy:
    """Values of the default's type, edges included (so that a recipe passes type checks and
    reaches each section's own validation)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.sampled_from([0, -1, 1, 2, 7, 2**31, 2**63, -(2**63)]), st.integers())
    if isinstance(default, float):
        return st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 1e308]),
                         st.floats(allow_nan=True, allow_infinity=True))
    if isinstance(default, str):
        return st.one_of(st.just(default), st.sampled_from(NASTY_CELLS), any_text)
    if isinstance(default, list):
        items = _like(default[0]) if default else json_scalars
        return st.one_of(st.just(list(default)), st.lists(items, max_size=4))
    if isinstance(default, dict):
        return st.one_of(st.just(dict(default)), st.dictionaries(any_text, json_values, max_size=3))
    return json_values


@st.composite
def typed_recipes(draw: Callable) -> dict[str, Any]:
    """The default recipe with a few values replaced by others of the same type."""
    import dataclasses

    from fairsynth.recipe import Recipe

    defaults = dataclasses.asdict(Recipe())
    flat = [(section, key) for section, body in defaults.items() if isinstance(body, dict) for key in body]
    out: dict[str, Any] = {}
    for section, key in draw(st.lists(st.sampled_from(flat), min_size=1, max_size=4)):
        default = defaults[section][key]
        if isinstance(default, dict) and default and all(isinstance(k, str) for k in default) and draw(st.booleans()):
            inner = draw(st.sampled_from(sorted(default)))  # one key of a nested section (split.val, ...)
            out.setdefault(section, {}).setdefault(key, {})[inner] = draw(_like(default[inner]))
        else:
            out.setdefault(section, {})[key] = draw(_like(default))
    if draw(st.booleans()):
        out["seed"] = draw(_like(0))
    return out


@st.composite
def recipe_cases(draw: Callable) -> tuple[bytes, list[str]]:
    """(recipe file bytes, dotted overrides)."""
    kind = draw(st.integers(0, 10))
    if kind == 10:
        data = ("seed: " + draw(raw_extremes) + "\n").encode()
    elif kind == 0:
        data = draw(st.binary(max_size=200))
    elif kind <= 1:
        data = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    else:
        structure = draw(recipe_structures() if kind <= 4 else typed_recipes())
        data = yaml.safe_dump(structure, allow_unicode=True).encode("utf-8", "surrogatepass")
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.one_of(st.sampled_from([f"{s}.{k}" if k else s for s, ks in RECIPE_KEYS.items() for k in ks]), any_text))
        value = draw(st.one_of(st.sampled_from(["", "1", "[1, 2]", "{a: 1}", "null", ".nan", "-.inf", "[", "x: y: z",
                                                "1e999", "true"]), any_text, raw_extremes))
        overrides.append(f"{key}={value}" if draw(st.integers(0, 5)) else draw(any_text))
    return data, overrides


def check_recipe_case(case: tuple[bytes, list[str]]) -> Outcome:
    from fairsynth.recipe import Recipe, load_recipe

    data, overrides = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_bytes(data)
        try:
            recipe = load_recipe(path, overrides)
        except ConfigError as err:
            message = str(err)
            if not message.strip() or (str(path) not in message and "override" not in message):
                raise PropertyBroken(f"a recipe error that names neither the file nor the override: {message!r}") from err
            return Outcome("ConfigError naming the file or override")
        if not isinstance(recipe, Recipe):
            raise PropertyBroken(f"load_recipe returned {type(recipe).__name__}")
        return Outcome("loaded")


# ---- running --------------------------------------------------------------------------------

#: target name -> (strategy, check, what its cases are)
TARGETS: dict[str, tuple[st.SearchStrategy, Callable[[Any], Outcome], str]] = {
    **{
        reader: (table_cases(reader), (lambda r: lambda case: check_table_case(r, case))(reader), "CSV rows")
        for reader in TABLES
    },
    "imagefolder": (imagefolder_cases(), check_imagefolder_case, "JSONL / CSV metadata"),
    "deepfashion": (deepfashion_cases(), check_deepfashion_case, "captions.json"),
    "kohya": (trees(2), lambda tree: check_folder_case("kohya", tree), "folder trees and caption files"),
    "mvtec": (mvtec_cases(), lambda tree: check_folder_case("mvtec", tree), "folder trees"),
    "recipe": (recipe_cases(), check_recipe_case, "YAML text, structures, overrides"),
}


@dataclass
class Tally:
    """How the cases of one target ended, and the slowest one."""

    target: str
    outcomes: Counter = field(default_factory=Counter)
    records: int = 0
    problems: int = 0
    slowest: float = 0.0

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())


#: Every tally of this process, for the test run's summary.
TALLIES: list[Tally] = []


def fuzz(target: str, examples: int, *, derandomize: bool = False) -> Tally:
    """Run ``examples`` cases of ``target``; raises on the first case that breaks the property."""
    strategy, check, _ = TARGETS[target]
    tally = Tally(target)
    TALLIES.append(tally)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(value: Any) -> None:
        started = time.perf_counter()
        outcome = check(value)
        tally.slowest = max(tally.slowest, time.perf_counter() - started)
        tally.outcomes[outcome.what] += 1
        tally.records += outcome.records
        tally.problems += outcome.problems

    case()
    return tally


def describe_tally(tally: Tally) -> str:
    parts = ", ".join(f"{n} {what}" for what, n in sorted(tally.outcomes.items(), key=lambda kv: -kv[1]))
    if tally.records or tally.problems:
        parts += f" ({tally.records:,} rows read, {tally.problems:,} problems named)"
    return f"{parts}; slowest case {tally.slowest * 1000:.0f} ms"
