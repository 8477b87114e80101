"""`fairsynth review import`: the filled sheets read with the key, summarised into ``review.json``.

Every number is over the (rater, image) ratings of its set: the synthetic images overall, per
stratum (e.g. diagnosis x skin type), per skin type and per class; the real images as the
reference; per rater; how well the raters told real from synthetic; their agreement; and the
acceptance verdict (see :mod:`fairsynth.review.stats` for the methods).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from fairsynth.io import atomic_write_text
from fairsynth.review.config import ImportConfig
from fairsynth.review.ratings import Rating, ReviewError, read_key, read_sheets
from fairsynth.review.stats import acceptance, guess_accuracy, krippendorff_alpha_ordinal, rating_auroc, summary


def _by(rated: list[Rating], key: dict[str, dict[str, Any]], field: str, cfg: ImportConfig) -> dict[str, Any]:
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in rated:
        if key[r.id]["source"] == "synthetic":
            value = key[r.id].get(field)
            groups["unknown" if value is None else str(value)].append((r.id, r.score))
    return {name: summary(scores, cfg.low_below, cfg.level) for name, scores in sorted(groups.items())}


def review_summary(
    raters: Sequence[str], ratings: Sequence[Rating], key: dict[str, dict[str, Any]], cfg: ImportConfig,
) -> dict[str, Any]:
    """Every number of the review from validated ratings and the key (no files)."""
    rated = [r for r in ratings if r.score is not None]
    if not rated:
        raise ReviewError("no image has a rating in any sheet")

    def source(r: Rating) -> str:
        return key[r.id]["source"]

    synthetic = [(r.id, r.score) for r in rated if source(r) == "synthetic"]
    real = [(r.id, r.score) for r in rated if source(r) == "real"]
    guessed = [r for r in ratings if r.guess is not None]

    per_rater: dict[str, Any] = {}
    for name in raters:
        own = [r for r in rated if r.rater == name]
        own_guesses = [r for r in guessed if r.rater == name]
        per_rater[name] = {
            "rated": len(own),
            "rated_synthetic": sum(1 for r in own if source(r) == "synthetic"),
            "rated_real": sum(1 for r in own if source(r) == "real"),
            "synthetic_mean": summary([(r.id, r.score) for r in own if source(r) == "synthetic"], cfg.low_below, cfg.level)["mean"],
            "real_mean": summary([(r.id, r.score) for r in own if source(r) == "real"], cfg.low_below, cfg.level)["mean"],
            "guesses": len(own_guesses),
            "guess_accuracy": guess_accuracy([source(r) for r in own_guesses], [r.guess for r in own_guesses]).get("accuracy"),
            "rating_auroc": rating_auroc([source(r) for r in own], [r.score for r in own]),
        }

    ids = sorted({r.id for r in rated})
    scores = {(r.rater, r.id): r.score for r in rated}
    matrix = [[scores.get((name, i)) for i in ids] for name in raters]
    twice = sum(1 for column in zip(*matrix) if sum(v is not None for v in column) >= 2) if matrix else 0
    alpha = krippendorff_alpha_ordinal(matrix)

    overall = summary(synthetic, cfg.low_below, cfg.level)
    verdict = acceptance(overall, cfg.acceptance_mean, cfg.acceptance_low_share)
    by_fst = _by(rated, key, "fst", cfg)
    verdict["rule"] = (f"synthetic mean rating > {cfg.acceptance_mean:g} and share of ratings below {cfg.low_below} "
                       f"< {cfg.acceptance_low_share:.0%}")
    verdict["by_fst"] = {name: acceptance(part, cfg.acceptance_mean, cfg.acceptance_low_share)["accepted"]
                         for name, part in by_fst.items()}
    return {
        "config": asdict(cfg),
        "raters": per_rater,
        "images_in_key": {s: sum(1 for e in key.values() if e["source"] == s) for s in ("synthetic", "real")},
        "images_rated": {s: len({i for i, _ in part}) for s, part in (("synthetic", synthetic), ("real", real))},
        "synthetic": overall,
        "real": summary(real, cfg.low_below, cfg.level),
        "synthetic_by_stratum": _by(rated, key, "stratum", cfg),
        "synthetic_by_fst": by_fst,
        "synthetic_by_label": _by(rated, key, "label", cfg),
        "discrimination": {
            **guess_accuracy([source(r) for r in guessed], [r.guess for r in guessed]),
            "rating_auroc_real_vs_synthetic": rating_auroc([source(r) for r in rated], [r.score for r in rated]),
        },
        "agreement": {
            "measure": "Krippendorff's alpha, ordinal",
            "alpha": alpha,
            "raters": len(raters),
            "images_rated_by_two_or_more": twice,
            "note": None if alpha is not None else "undefined: needs two raters, an image both rated and two different ratings",
        },
        "acceptance": verdict,
    }


def import_ratings(
    sheets: Sequence[str | Path], key_path: str | Path, cfg: ImportConfig | None = None,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Read every sheet with the key; write ``review.json`` (default beside the key) and return its content."""
    cfg = cfg or ImportConfig()
    key = read_key(key_path)
    raters, ratings = read_sheets(sheets, key)
    report = {"key": str(key_path), "sheets": {name: str(path) for name, path in zip(raters, sheets)}}
    report.update(review_summary(raters, ratings, key, cfg))
    path = Path(output) if output is not None else Path(key_path).parent / "review.json"
    atomic_write_text(path, json.dumps(report, indent=1, allow_nan=False) + "\n")
    report["output"] = str(path)
    return report
