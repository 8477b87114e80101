"""How much of the achievable gain the synthetic data delivers: the share of the oracle's effect.

On a procedural world the ``oracle`` arm trains on the real images plus *true* world images
with exactly the synthetic set's count in every class × skin-type cell: what perfect synthetic
images could do. For a headline number m, with arms' means over seeds,

    share = (m_mixed − m_real) / (m_oracle − m_real)

is the part of the oracle's effect that the synthetic arm reaches (1: as good as true images;
0: no better than real data alone; below 0: worse). Its interval is a two-level percentile
bootstrap: each replicate resamples the seeds (paired across arms) and the test images (within
each skin type, the same images for every arm and seed), and recomputes every arm's mean. Where
the oracle's own effect is within noise (its interval holds 0) the share is undefined: there is
nothing to reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fairsynth.downstream import fairness
from fairsynth.downstream.config import DownstreamConfig

#: The numbers whose oracle share is reported: (key, label, higher is better, report path, DDI groups).
SHARED_NUMBERS: tuple[tuple[str, str, bool, tuple, bool], ...] = (
    ("accuracy", "accuracy", True, ("accuracy",), False),
    ("balanced_accuracy", "balanced accuracy", True, ("balanced_accuracy",), False),
    ("macro_auroc", "macro AUROC", True, ("macro_auroc",), False),
    ("auroc.V-VI", "AUROC V-VI", True, ("group_auroc", "V-VI"), True),
    ("auroc_gap", "AUROC gap (DDI groups)", False, ("auroc_gap",), True),
)

#: Most bootstrap replicates of the share (each recomputes every arm x seed).
MAX_RESAMPLES = 500


def _numbers(p: fairness.Predictions, ddi: fairness.Predictions, rows: np.ndarray, config: DownstreamConfig) -> dict[str, float | None]:
    minimum = config.min_positives
    types = fairness._report_numbers_fast(p.subset(rows), (), minimum, minimum)
    grouped = fairness._report_numbers_fast(ddi.subset(rows), (), minimum, minimum)
    return {key: (grouped if on_ddi else types).get(path) for key, _, _, path, on_ddi in SHARED_NUMBERS}


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _share(effect: float | None, ceiling: float | None) -> float | None:
    if effect is None or ceiling is None or ceiling == 0:
        return None
    return effect / ceiling


def _interval(draws: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    if len(draws) < 10:
        return None, None
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def shares_for(
    predictions: dict[str, dict[int, fairness.Predictions]], config: DownstreamConfig, seed: int = 0,
    resamples: int | None = None,
) -> dict[str, Any]:
    """The oracle share of every headline number for every synthetic arm, from test predictions.

    ``predictions[arm][seed]`` must hold the same test images in the same order for every arm
    and seed; ``real`` and ``oracle`` must be among the arms.
    """
    seeds = sorted(predictions["real"])
    arms = [arm for arm in predictions if arm not in ("real", "oracle")]
    first = predictions["real"][seeds[0]]
    ddi = {arm: {s: fairness.regroup(p, fairness.ddi_group) for s, p in by_seed.items()} for arm, by_seed in predictions.items()}
    every = np.arange(first.labels.shape[0])

    def arm_means(rows: np.ndarray, chosen: Sequence[int]) -> dict[str, dict[str, float | None]]:
        means = {}
        for arm in predictions:
            values = [_numbers(predictions[arm][s], ddi[arm][s], rows, config) for s in chosen]
            means[arm] = {key: _mean([v[key] for v in values]) for key, *_ in SHARED_NUMBERS}
        return means

    def effects(means: dict[str, dict[str, float | None]]) -> dict[tuple[str, str], tuple[float | None, float | None]]:
        out = {}
        for key, *_ in SHARED_NUMBERS:
            real = means["real"][key]
            ceiling = None if real is None or means["oracle"][key] is None else means["oracle"][key] - real
            for arm in arms:
                effect = None if real is None or means[arm][key] is None else means[arm][key] - real
                out[(arm, key)] = (effect, ceiling)
        return out

    estimate = effects(arm_means(every, seeds))
    rng = np.random.default_rng(seed)
    count = min(MAX_RESAMPLES, resamples or config.bootstrap_resamples)
    draws: dict[tuple[str, str], dict[str, list[float]]] = {k: {"effect": [], "ceiling": [], "share": []} for k in estimate}
    for _ in range(count):
        rows = fairness.resample_rows(first, rng)
        chosen = list(rng.choice(seeds, size=len(seeds), replace=True))
        for name, (effect, ceiling) in effects(arm_means(rows, chosen)).items():
            if effect is not None:
                draws[name]["effect"].append(effect)
            if ceiling is not None:
                draws[name]["ceiling"].append(ceiling)
            share = _share(effect, ceiling)
            if share is not None:
                draws[name]["share"].append(share)
    out: dict[str, Any] = {
        "method": f"share = (arm - real) / (oracle - real) of means over seeds; 95 % two-level percentile bootstrap "
                  f"({count} replicates: seeds resampled, paired across arms, and test images within each skin type)",
        "seeds": seeds, "test_images": int(first.labels.shape[0]), "arms": {},
    }
    for arm in arms:
        rows_out = {}
        for key, label, higher, *_ in SHARED_NUMBERS:
            effect, ceiling = estimate[(arm, key)]
            found = draws[(arm, key)]
            ceiling_low, ceiling_high = _interval(found["ceiling"])
            oracle_noise = ceiling_low is None or ceiling_low <= 0 <= ceiling_high
            share_low, share_high = _interval(found["share"])
            rows_out[key] = {
                "label": label, "higher_is_better": higher,
                "effect": effect, "effect_interval": list(_interval(found["effect"])),
                "oracle_effect": ceiling, "oracle_effect_interval": [ceiling_low, ceiling_high],
                "share": None if oracle_noise else _share(effect, ceiling),
                "share_interval": [None, None] if oracle_noise else [share_low, share_high],
                "note": "the oracle's own effect is within noise: no share to measure" if oracle_noise else "",
            }
        out["arms"][arm] = rows_out
    return out


def oracle_shares(output: str | Path, config: DownstreamConfig, test_sets: Sequence[str | None]) -> dict[str, Any]:
    """:func:`shares_for` on every test set of a finished comparison (None: the in-distribution split),
    read from the runs' ``predictions.csv`` / ``predictions-<name>.csv``."""
    from fairsynth.downstream.train import read_predictions

    output = Path(output)
    result = {}
    for name in test_sets:
        file = "predictions.csv" if name is None else f"predictions-{name}.csv"
        predictions = {
            arm: {seed: read_predictions(output / arm / f"seed-{seed}" / file) for seed in config.seeds}
            for arm in config.arms
        }
        result["test split" if name is None else name] = shares_for(predictions, config)
    return result


def _fmt(value: float | None, interval: Sequence[float | None], percent: bool = False) -> str:
    if value is None:
        return "undefined"
    text = f"{value:.0%}" if percent else f"{value:+.3f}"
    if interval[0] is None:
        return text
    low, high = interval
    return f"{text} [{low:.0%}, {high:.0%}]" if percent else f"{text} [{low:+.3f}, {high:+.3f}]"


def render_shares(shares: dict[str, Any]) -> str:
    """Markdown: per test set, arm and headline number, the arm's and the oracle's effect and the share."""
    lines = ["## Share of the oracle's effect", ""]
    for name, part in shares.items():
        lines.append(f"### {name} ({part['test_images']} images, seeds {', '.join(map(str, part['seeds']))})")
        lines.append("")
        lines.append("| arm | metric | arm − real | oracle − real | share of the oracle's effect |")
        lines.append("|---|---|---|---|---|")
        for arm, rows in part["arms"].items():
            for row in rows.values():
                share = _fmt(row["share"], row["share_interval"], percent=True) if row["share"] is not None else (
                    "undefined (oracle within noise)" if row["note"] else "undefined")
                lines.append(
                    f"| {arm} | {row['label']}{' ↑' if row['higher_is_better'] else ' ↓'} | "
                    f"{_fmt(row['effect'], row['effect_interval'])} | "
                    f"{_fmt(row['oracle_effect'], row['oracle_effect_interval'])} | {share} |"
                )
        lines.append("")
        lines.append(part["method"] + ".")
        lines.append("")
    return "\n".join(lines)
