"""Typed configuration: dataclasses per stage, loaded from a YAML recipe plus dotted overrides.

A recipe is a YAML file whose top-level sections are the stages of a study (``data``,
``prepare``, ...). Each section maps onto a dataclass below; every field carries its help
text in ``metadata["help"]``. Unknown keys are errors that list the valid ones, values are
checked against the field types, and each dataclass validates itself in ``__post_init__``.

    cfg = load_config(PrepareConfig, "recipes/x.yaml", ["resolution=256"])

The whole study's :class:`~fairsynth.recipe.Recipe` composes the stage configs. The resolved config is written beside every output (:func:`save_resolved`) so that any
result can be reproduced.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin

import yaml

from fairsynth.io import atomic_write_text
from fairsynth.registry import Registry


#: Numbers in exponent notation without a dot (1e-4, 5E+3), which YAML 1.1 leaves as strings.
_EXPONENT_NUMBER = re.compile(r"[-+]?\d+[eE][-+]?\d+")


class ConfigError(ValueError):
    """A recipe or override that does not fit the typed configuration."""


def knob(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        value = default
        kwargs["default_factory"] = lambda: type(value)(value)
        default = dataclasses.MISSING
    return field(default=default, metadata={"help": help}, **kwargs)


# --------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------

#: Pillow's hard decompression-bomb bound with its default settings (2 x Image.MAX_IMAGE_PIXELS): the
#: default of `data.max_image_pixels`, declared beside it; :mod:`fairsynth.data.images` applies the bound.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

#: Dataset readers by name, each a :class:`~fairsynth.data.readers.Reader` registered by its module in
#: ``data/readers/``. The registry lives here, beside the `data.reader` key that names its members, so that
#: the config validates a name without importing the readers (which read a :class:`DataConfig`).
READERS: Registry[Callable[..., Any]] = Registry("readers", package="fairsynth.data.readers")


@dataclass
class DataConfig:
    """Where the user's dataset is and how to read it."""

    reader: str = knob("fitzpatrick17k", "Dataset reader name (`fairsynth ls` lists them).")
    path: str = knob("", "Metadata file (CSV/JSON) or dataset folder, as the reader expects.")
    images: str | None = knob(None, "Image folder; default: the reader's usual place next to `path`.")
    label_column: str | None = knob(
        None, "Column used as the class label where a reader offers several "
        "(Fitzpatrick17k: label, nine_partition_label, three_partition_label)."
    )
    columns: dict[str, str] = knob(
        {}, "Generic `csv` reader: map of fairsynth field -> CSV column "
        "(id, image, label, caption, fst, group, split, plus any attribute name)."
    )
    caption_template: str | None = knob(
        None, "Caption built from attributes, e.g. 'A dermoscopic image of {diagnosis} on "
        "Fitzpatrick skin type {fst_roman}'. None keeps the dataset's own captions."
    )
    require_captions: bool = knob(False, "An empty caption is a validation problem.")
    min_size: int = knob(0, "Smallest acceptable image side in pixels; 0 = the prepare resolution.")
    max_image_pixels: int = knob(
        DEFAULT_MAX_IMAGE_PIXELS, "Largest image (width x height) any command opens, checked from the file's "
        "header before decoding; a larger file is a problem naming it (a decompression bomb is refused, not "
        "decoded). Default: Pillow's own bound, about 0.18 gigapixel (13,377 x 13,377); raise it for "
        "gigapixel scans."
    )

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise ConfigError(f"data.min_size must be >= 0, got {self.min_size}")
        if self.max_image_pixels < 1:
            raise ConfigError(f"data.max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if self.reader not in READERS:
            raise ConfigError(f"data.reader: unknown reader {self.reader!r}; available: {', '.join(READERS.names())}")


@dataclass
class SplitConfig:
    """Train/val/test splits."""

    val: float = knob(0.1, "Fraction of rows in the validation split.")
    test: float = knob(0.2, "Fraction of rows in the test split.")
    seed: int = knob(0, "Seed of the split; the same seed gives the same split.")
    stratify: list[str] = knob(["label", "fst"], "Fields stratified over (class x group).")
    group_by: str | None = knob(
        None, "Attribute whose rows stay together in one split (HAM10000: lesion_id)."
    )
    holdout_column: str | None = knob(
        None, "Hold-out by group: rows whose value of this field is in `holdout_values` form the test split."
    )
    holdout_values: list[Any] = knob([], "Values of `holdout_column` that go to the test split.")
    keep_existing: bool = knob(True, "Keep a split the dataset already assigns (a `split` column).")

    def __post_init__(self) -> None:
        for name in ("val", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"prepare.split.{name} must be in [0, 1), got {value}")
        if self.val + self.test >= 1.0:
            raise ConfigError("prepare.split.val + prepare.split.test must leave rows for training")
        if self.holdout_values and not self.holdout_column:
            raise ConfigError("prepare.split.holdout_values needs prepare.split.holdout_column")


@dataclass
class HairRemovalConfig:
    """DullRazor hair removal (black-hat, blur, threshold, Telea inpainting)."""

    enabled: bool = knob(False, "Remove dark hairs before training (on in dermatology recipes).")
    kernel: int = knob(9, "Side of the cross-shaped black-hat kernel (DDI variant: 17).")
    threshold: int = knob(10, "Black-hat response above which a pixel is hair.")
    radius: int = knob(6, "Telea inpainting radius (DDI variant: 3).")

    def __post_init__(self) -> None:
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise ConfigError(f"prepare.hair_removal.kernel must be odd and >= 3, got {self.kernel}")
        if self.radius < 1:
            raise ConfigError(f"prepare.hair_removal.radius must be >= 1, got {self.radius}")


@dataclass
class PrepareConfig:
    """`fairsynth prepare`: validated, resized, annotated and split dataset."""

    output: str = knob("", "Output folder (imagefolder: PNGs + metadata.jsonl); default <workdir>/prepared.")
    resolution: list[int] = knob(
        [512], "Target size: [side] for square, or [width, height] (garments: [512, 360]); "
        "multiples of 8. 512 for SD 1.5, 1024 for SDXL."
    )
    crop: Literal["center", "none"] = knob(
        "center", "`center`: resize the short side then centre-crop; `none`: resize exactly."
    )
    hair_removal: HairRemovalConfig = knob(default_factory=HairRemovalConfig, help="DullRazor.")
    estimate_fst: bool = knob(True, "Record ITA and an ITA-based FST estimate for every image.")
    split: SplitConfig = knob(default_factory=SplitConfig, help="Train/val/test splits.")
    drop_invalid: bool = knob(
        False, "Drop invalid rows (listed in rejects.csv) instead of refusing the dataset."
    )

    def __post_init__(self) -> None:
        if len(self.resolution) not in (1, 2):
            raise ConfigError(f"prepare.resolution must be [side] or [width, height], got {self.resolution}")
        for side in self.resolution:
            if side <= 0 or side % 8:
                raise ConfigError(f"prepare.resolution sides must be positive multiples of 8, got {side}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.resolution[0], self.resolution[-1])


# --------------------------------------------------------------------------------------
# Loading machinery
# --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting where YAML is loose (int->float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `resolution=256` means [256]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; everyone writes it
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer past a float's range (about 1.8e308)
            try:
                digits = f"{len(str(abs(value)))} digits"
            except ValueError:  # past Python's 4,300-digit limit for printing one
                digits = "over 4,300 digits"
            raise ConfigError(f"{where}: an integer of {digits} is too large for a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys are errors listing the valid ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    not_names = [key for key in values if not isinstance(key, str)]
    if not_names:  # YAML reads `1:`, `~:` and `true:` as a number, null and a boolean
        what = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}.get(type(not_names[0]), "no text")
        raise ConfigError(
            f"key {prefix}{not_names[0]!r} is {what}, not a name; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(fields)}"
        )
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(fields)}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``true``, ``256``, ``[512, 360]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[leaf] = _load_yaml_text(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError, ValueError) as err:
            problem = "nested too deeply" if isinstance(err, RecursionError) else " ".join(str(err).split(";")[0].split())
            shown = item if len(item) <= 120 else f"{item[:100]}... ({len(item)} characters)"
            raise ConfigError(f"override {shown!r}: the value is not valid YAML ({problem}); quote it") from None
    return values


#: The most values a recipe may expand to. YAML aliases share one value between several places;
#: nested aliases ("billion laughs") make a few hundred bytes expand to billions of values,
#: which every later copy of the recipe (the resolved config.yaml, fingerprints) would write out.
MAX_RECIPE_VALUES = 100_000


#: The deepest ``[``/``{`` nesting a recipe may write: PyYAML reads nesting recursively and gives
#: up past Python's recursion limit only after seconds of work.
MAX_FLOW_DEPTH = 200


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in YAML text (brackets inside quotes count too: an
    over-estimate, harmless below :data:`MAX_FLOW_DEPTH`)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}" and depth:
            depth -= 1
    return deepest


def _load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` with nesting bounded first; RecursionError where it is still too deep."""
    if _flow_depth(text) > MAX_FLOW_DEPTH:
        raise RecursionError
    return yaml.safe_load(text)


def _expanded_size(value: Any, seen: dict[int, int], depth: int = 0) -> int:
    """How many values ``value`` holds once every alias is written out (a shared value counts at every place it appears)."""
    if depth > 200:
        raise ConfigError("is nested more than 200 levels deep")
    if not isinstance(value, (dict, list)):
        return 1
    known = seen.get(id(value))
    if known is not None:
        return known
    children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
    size = 1
    for child in children:
        size += _expanded_size(child, seen, depth + 1)
        if size > MAX_RECIPE_VALUES:
            break
    seen[id(value)] = size
    return size


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        loaded = _load_yaml_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"recipe {path} is a folder, not a YAML file") from None
    except OSError as err:
        raise ConfigError(f"recipe {path} cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"recipe {path} is nested too deeply to read") from None
    except ValueError as err:  # a number of over 4,300 digits
        raise ConfigError(f"recipe {path} cannot be read: {str(err).split(';')[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections, got {type(loaded).__name__}")
    try:
        size = _expanded_size(loaded, {})
    except ConfigError as err:
        raise ConfigError(f"recipe {path} {err}") from None
    if size > MAX_RECIPE_VALUES:
        raise ConfigError(
            f"recipe {path} expands to more than {MAX_RECIPE_VALUES:,} values (nested YAML aliases?); "
            "write the values out instead"
        )
    return loaded


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load dataclass ``cls`` from a YAML file (or its defaults) plus dotted overrides."""
    values = read_yaml(path) if path else {}
    values = apply_overrides(values, list(overrides or []))
    try:
        return from_dict(cls, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_resolved(cfg: Any, directory: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output, atomically."""
    target = Path(directory) / name
    atomic_write_text(target, dump_yaml(cfg))
    return target


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, nested sections flattened."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((key, default, f.metadata.get("help", "")))
    return rows
