"""Fitzpatrick skin type (FST) encodings shared by readers, captions, ITA and sampling."""

from __future__ import annotations

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}

#: DDI's grouping of skin types, also used for grouped per-group metrics.
GROUPS = {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}
GROUP_NAMES = ("I-II", "III-IV", "V-VI")


def to_roman(fst: int | None) -> str:
    return ROMAN.get(fst, "unknown") if fst is not None else "unknown"


def group_of(fst: int | None) -> str | None:
    return GROUPS.get(fst) if fst is not None else None


def parse_fst(value: object) -> int | None:
    """Parse a skin type written as 1-6, '1'..'6', 'I'..'VI' or 'FST V'; None for unknown (-1, blank).

    Raises ValueError for anything else so that the validator can name the row.
    """
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN: blank cell
            return None
        if not value.is_integer():
            raise ValueError(f"skin type {value!r} is not a whole number")
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None
        if value in ROMAN:
            return value
        raise ValueError(f"skin type {value} is outside 1-6 (-1 = unknown)")
    text = str(value).strip().upper().removeprefix("FST").strip()
    if text in ("", "-1", "NAN", "UNKNOWN", "NONE"):
        return None
    for number, roman in ROMAN.items():
        if text == roman:
            return number
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"skin type {value!r} is not a number") from None
    return parse_fst(number)
