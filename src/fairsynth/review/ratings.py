"""Reading filled rating sheets back with the key (``fairsynth review import``).

Numbers, each over every (rater, image) rating of its set:

* synthetic mean score with a 95 % t-interval, share rated below 3 (1 or 2), per stratum and
  per skin type; the real images' mean is the reference;
* telling real from synthetic: accuracy of the raters' guesses (0.5 = chance, with a
  two-sided binomial test) and the AUROC of the rating as a score for "real" (0.5 = ratings
  do not separate them; sklearn);
* agreement of two or more raters: Krippendorff's alpha for ordinal data (the
  ``krippendorff`` package), over the images each rated;
* the acceptance verdict of the FairSkin plan: synthetic mean > 5.0 and < 10 % below 3.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fairsynth.io import atomic_write_text
from fairsynth.review.sample import SHEET_COLUMNS

#: Ratings below this count as poor in the acceptance rule ("below 3": 1 or 2).
LOW = 3


class ReviewError(ValueError):
    """A rating sheet or key that cannot be read (names the file and row)."""


@dataclass(frozen=True)
class Rating:
    rater: str
    id: str
    score: int | None
    guess: str | None


def read_key(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{id: key entry}`` from the key file written by the export."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = {str(entry["id"]): entry for entry in data["images"]}
    except FileNotFoundError as err:
        raise ReviewError(f"key {path} does not exist") from err
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReviewError(f"{path} is not a review key (expected {{'images': [{{'id', 'source', ...}}]}}): {err}") from err
    return entries


def read_sheet(path: str | Path, key: dict[str, dict[str, Any]]) -> list[Rating]:
    """One rater's filled ``ratings.csv``; every problem names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"rating sheet {path} does not exist")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SHEET_COLUMNS[:3] if c not in (reader.fieldnames or [])]
        if missing:
            raise ReviewError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(SHEET_COLUMNS)}")
        out, seen = [], set()
        for line, row in enumerate(reader, 2):
            image_id = (row.get("id") or "").strip()
            if image_id not in key:
                raise ReviewError(f"{path}, line {line}: id {image_id!r} is not in the key")
            if image_id in seen:
                raise ReviewError(f"{path}, line {line}: id {image_id} is rated twice")
            seen.add(image_id)
            text = (row.get("rating") or "").strip()
            score = None
            if text:
                if not text.isdigit() or not 1 <= int(text) <= 7:
                    raise ReviewError(f"{path}, line {line}: rating {text!r} is not an integer 1-7 (blank: not rated)")
                score = int(text)
            guess = (row.get("real_or_synthetic") or "").strip().lower() or None
            if guess not in (None, "real", "synthetic"):
                raise ReviewError(f"{path}, line {line}: real_or_synthetic {guess!r} must be real, synthetic or blank")
            out.append(Rating(path.stem if path.stem != "ratings" else path.parent.name, image_id, score, guess))
    return out


def mean_interval(scores: Sequence[int], level: float = 0.95) -> dict[str, Any]:
    """Mean with a t-interval (None where fewer than two scores)."""
    from scipy import stats

    n = len(scores)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(scores) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def summary(scores: Sequence[int]) -> dict[str, Any]:
    out = mean_interval(scores)
    out["share_below_3"] = sum(1 for s in scores if s < LOW) / len(scores) if scores else None
    return out


def krippendorff_ordinal(ratings: list[Rating], raters: Sequence[str]) -> float | None:
    """Krippendorff's alpha (ordinal) over images rated by at least two raters; None if none are."""
    import krippendorff
    import numpy as np

    ids = sorted({r.id for r in ratings if r.score is not None})
    by = {(r.rater, r.id): r.score for r in ratings if r.score is not None}
    data = np.array([[by.get((rater, i), np.nan) for i in ids] for rater in raters], dtype=float)
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2) if data.size else np.array([], dtype=bool)
    if len(raters) < 2 or not pairable.any() or len(set(data[:, pairable][~np.isnan(data[:, pairable])])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(range(1, 8))))


def import_ratings(
    sheets: Sequence[str | Path], key_path: str | Path, *, output: str | Path | None = None,
    acceptance_mean: float = 5.0, acceptance_low_share: float = 0.10,
) -> dict[str, Any]:
    """Read every sheet with the key; write ``review.json`` (default beside the key) and return it."""
    if not sheets:
        raise ReviewError("no rating sheet given")
    key = read_key(key_path)
    ratings: list[Rating] = []
    raters: list[str] = []
    for number, sheet in enumerate(sheets, 1):
        rows = read_sheet(sheet, key)
        name = f"rater {number} ({Path(sheet).name})"
        rows = [Rating(name, r.id, r.score, r.guess) for r in rows]
        raters.append(name)
        ratings += rows
    rated = [r for r in ratings if r.score is not None]
    if not rated:
        raise ReviewError("no image has a rating in any sheet")

    def source(r: Rating) -> str:
        return key[r.id]["source"]

    synthetic = [r.score for r in rated if source(r) == "synthetic"]
    real = [r.score for r in rated if source(r) == "real"]
    per_stratum: dict[str, list[int]] = defaultdict(list)
    per_fst: dict[str, list[int]] = defaultdict(list)
    for r in rated:
        if source(r) == "synthetic":
            per_stratum[key[r.id].get("stratum", "")].append(r.score)
            per_fst[str(key[r.id].get("fst"))].append(r.score)

    guesses = [r for r in ratings if r.guess is not None]
    discrimination: dict[str, Any] = {"guesses": len(guesses)}
    if guesses:
        from scipy import stats

        correct = sum(1 for r in guesses if r.guess == source(r))
        discrimination.update(
            guess_accuracy=correct / len(guesses),
            guess_p_value=float(stats.binomtest(correct, len(guesses), 0.5).pvalue),
        )
    if synthetic and real:
        from sklearn.metrics import roc_auc_score

        labels = [1 if source(r) == "real" else 0 for r in rated]
        discrimination["rating_auroc_real_vs_synthetic"] = float(roc_auc_score(labels, [r.score for r in rated]))

    overall = summary(synthetic)
    accepted = (
        overall["mean"] is not None and overall["mean"] > acceptance_mean and overall["share_below_3"] < acceptance_low_share
    )
    report = {
        "key": str(key_path),
        "raters": {name: sum(1 for r in rated if r.rater == name) for name in raters},
        "images_in_key": {"synthetic": sum(1 for e in key.values() if e["source"] == "synthetic"),
                          "real": sum(1 for e in key.values() if e["source"] == "real")},
        "synthetic": overall,
        "real": summary(real),
        "synthetic_by_stratum": {name: summary(scores) for name, scores in sorted(per_stratum.items())},
        "synthetic_by_fst": {name: summary(scores) for name, scores in sorted(per_fst.items())},
        "discrimination": discrimination,
        "agreement_krippendorff_alpha_ordinal": krippendorff_ordinal(ratings, raters),
        "acceptance": {"rule": f"synthetic mean > {acceptance_mean} and share below {LOW} < {acceptance_low_share:.0%}",
                       "accepted": bool(accepted)},
    }
    path = Path(output) if output is not None else Path(key_path).parent / "review.json"
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    report["output"] = str(path)
    return report
