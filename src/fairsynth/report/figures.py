"""The report's data figures: each a picture (:mod:`.plots`), a text alternative that says what
it shows in numbers, and the data file it was drawn from, written beside the page.

One figure per question: the forest plot of per-group AUROC per arm (is the classifier better,
and fairer?), the synthetic set's cells (is it full, and does it show what it is labelled?), the
metrics per skin type (how close is it to the real images?), and where those stages ran the
ratio curve and the ablation. Every number comes from the study's files; the arithmetic here is
only the 95 % t-interval of a mean over seeds from the mean, sd and count the comparison wrote.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from fairsynth.report import plots
from fairsynth.report.collect import Generation
from fairsynth.report.verdict import DDI_TYPES, ROMAN, Comparison

#: The folder beside the page that holds each figure's PNG and data file.
FIGURES_FOLDER = "figures"
#: Per-group values of these metrics lead the metric bars (then every other metric with a direction).
METRIC_ORDER = ("fd", "cmmd", "cmmd_unbiased", "kid", "precision", "recall", "density", "coverage", "vendi")


@dataclass
class Figure:
    """One image of the page: a data URI, its caption and text alternative; a data figure also has
    a stable ``id`` (its anchor and file names), its PNG and the CSV it was drawn from."""

    uri: str
    caption: str
    alt: str = ""
    id: str = ""
    png: bytes | None = None
    data: str | None = None  # CSV text

    @property
    def files(self) -> dict[str, str]:
        """File names, relative to the page, of the PNG and the data file (empty for an image grid)."""
        if not self.id or self.data is None:
            return {}
        return {"data": f"{FIGURES_FOLDER}/{self.id}.csv", "image": f"{FIGURES_FOLDER}/{self.id}.png"}


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI (the page loads nothing from elsewhere)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV table; None as an empty field, floats in full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def data_figure(id_: str, png: bytes, caption: str, alt: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Figure:
    return Figure(data_uri(png), caption, alt, id_, png, csv_text(header, rows))


def t_interval(mean: float | None, sd: float | None, n: int | None, level: float = 0.95) -> tuple[float | None, float | None]:
    """Student t-interval of a mean over ``n`` seeds from its sd (n − 1 df); none below two seeds."""
    if mean is None or sd is None or not n or n < 2:
        return None, None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _n(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _range(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return "no interval"
    form = "+.3f" if signed else ".3f"
    return f"{low:{form}} to {high:{form}}"


# --------------------------------------------------------------------------------------
# The forest plot
# --------------------------------------------------------------------------------------


def forest_figure(c: Comparison, id_: str, question: str) -> Figure | None:
    """Per-group AUROC of every arm on one test set, the gap marked, and each arm's difference from
    real only (paired over seeds) beside it."""
    groups = [g for g in DDI_TYPES if f"auroc.{g}" in c.table]
    if not groups:
        return None
    arms = c.arms
    keys = [*(f"auroc.{g}" for g in groups), "auroc_gap"]
    points: dict[str, dict[str, plots.Estimate]] = {}
    gaps: dict[str, float | None] = {}
    deltas: dict[str, dict[str, plots.Estimate]] = {}
    noise: dict[str, dict[str, bool | None]] = {}
    rows = []
    for arm in arms:
        for key in keys:
            row = c.table.get(key) or {}
            summary = (row.get("arms") or {}).get(arm) or {}
            low, high = t_interval(summary.get("mean"), summary.get("sd"), summary.get("n"))
            name = key.removeprefix("auroc.") if key != "auroc_gap" else "gap"
            if name == "gap":
                gaps[arm] = summary.get("mean")
            else:
                points.setdefault(arm, {})[name] = (summary.get("mean"), low, high)
            delta = (row.get("delta_vs_real") or {}).get(arm) if arm != "real" else None
            if delta is not None:
                deltas.setdefault(arm, {})[name] = (delta.get("mean"), delta.get("low"), delta.get("high"))
                noise.setdefault(arm, {})[name] = delta.get("within_noise")
            rows.append([c.key, arm, name, summary.get("mean"), summary.get("sd"), summary.get("n"), low, high,
                         None if delta is None else delta.get("mean"), None if delta is None else delta.get("low"),
                         None if delta is None else delta.get("high"), None if delta is None else delta.get("within_noise")])
    seeds = f"{len(c.seeds)} seed{'s' if len(c.seeds) != 1 else ''}"
    title = f"AUROC per skin-type group on {c.key}: mean over {seeds} with its 95 % t-interval"
    png = plots.forest(groups, arms, points, gaps, deltas, noise, title)
    lines = []
    for arm in arms:
        said = ", ".join(f"{g} {_n(points[arm][g][0])} ({_range(*points[arm][g][1:])})" for g in groups if arm in points)
        lines.append(f"{arm}: {said}; gap {_n(gaps.get(arm))}")
    for arm, by_row in deltas.items():
        said = ", ".join(
            f"{name} {by_row[name][0]:+.3f} ({_range(*by_row[name][1:], signed=True)}, "
            f"{'within noise' if noise[arm].get(name) else 'beyond noise' if noise[arm].get(name) is False else 'no verdict'})"
            for name in by_row if by_row[name][0] is not None)
        lines.append(f"{arm} − real: {said}")
    alt = (f"Forest plot: {question} AUROC per skin-type group ({', '.join(groups)}) on {c.name}, mean over {seeds} with "
           "95 % t-intervals. " + ". ".join(lines) + ".")
    caption = (f"{question} AUROC per skin-type group on {c.name}: each arm's mean over {seeds} with its 95 % t-interval "
               "(left; the last row marks each arm's gap, from its worst to its best group) and its difference from "
               "real only, paired by seed (right; hollow: the interval holds 0, within noise). From downstream/compare.json.")
    header = ["test_set", "arm", "group", "mean", "sd", "seeds", "low", "high", "difference_from_real",
              "difference_low", "difference_high", "within_noise"]
    return data_figure(id_, png, caption, alt, header, rows)


# --------------------------------------------------------------------------------------
# The synthetic set per cell
# --------------------------------------------------------------------------------------


def parse_cell(cell_id: str) -> tuple[str, str]:
    """``melanoma/fst=6`` -> (``melanoma``, ``VI``); other attributes joined as they are."""
    label, *attributes = str(cell_id).split("/")
    parts = []
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        parts.append(ROMAN[int(value) - 1] if name == "fst" and value.isdigit() and 1 <= int(value) <= 6 else f"{name}={value}")
    return label, " ".join(parts) or "all"


def _column_order(column: str) -> tuple[int, str]:
    return (ROMAN.index(column), "") if column in ROMAN else (len(ROMAN), column)


def cells_figure(generation: Generation) -> Figure | None:
    """Delivered / target per class x skin-type cell, and the world's judge's reading of each."""
    report = generation.report
    cells = [c for c in report.get("cells") or [] if isinstance(c, dict) and c.get("cell") not in (None, "total")]
    if not cells:
        return None
    delivered, target = {}, {}
    for cell in cells:
        key = parse_cell(cell["cell"])
        delivered[key] = int(cell.get("selected") or 0)
        target[key] = int(cell.get("target") or 0)
    judged: dict[tuple[str, str], tuple[float | None, int]] = {}
    for cell in ((report.get("truth") or {}).get("cells") or {}).values():
        fst = cell.get("fst")
        column = ROMAN[fst - 1] if isinstance(fst, int) and 1 <= fst <= 6 else "all"
        judged[(str(cell.get("label")), column)] = (cell.get("class_as_asked"), int(cell.get("delivered") or 0))
    rows = sorted({key[0] for key in target})
    columns = sorted({key[1] for key in target}, key=_column_order)
    png = plots.cell_heatmap(rows, columns, delivered, target, judged)
    planned = [k for k in target if target[k]]
    full = sum(1 for k in planned if delivered.get(k, 0) >= target[k])
    empty = [f"{r} | {c}" for (r, c) in planned if not delivered.get((r, c))]
    worst = sorted((v[0], k) for k, v in judged.items() if v[0] is not None and v[1])
    alt = (f"Heatmap of the synthetic set, {len(rows)} classes by {len(columns)} skin types: {full} of {len(planned)} cells "
           "delivered in full" + (f"; empty: {', '.join(empty)}" if empty else "; none empty") + ". "
           + "; ".join(f"{r} | {c}: {delivered.get((r, c), 0)} of {target[(r, c)]}" for r in rows for c in columns if (r, c) in target)
           + "." + (" Judge reads the asked class, lowest cells: "
                    + ", ".join(f"{k[0]} | {k[1]} {100 * v:.0f} %" for v, k in worst[:5]) + "." if worst else ""))
    caption = ("The synthetic set per class × skin-type cell: images delivered of the target (left, generated/report.json: "
               "cells)" + (" and the share of the delivered images the world's judge reads as the asked class (right, "
                           "generated/report.json: truth)" if judged else "") + ".")
    header = ["class", "skin_type", "target", "delivered", "judge_read_as_asked", "judge_images"]
    data = [[r, c, target[(r, c)], delivered.get((r, c), 0), *judged.get((r, c), (None, None))]
            for r in rows for c in columns if (r, c) in target]
    return data_figure("synthetic-cells", png, caption, alt, header, data)


# --------------------------------------------------------------------------------------
# Metrics per skin type
# --------------------------------------------------------------------------------------


def _group_label(grouping: str, group: Any) -> str:
    text = str(group)
    if grouping == "fst" and text.isdigit() and 1 <= int(text) <= 6:
        return ROMAN[int(text) - 1]
    return text


def metrics_figure(evaluation: dict[str, Any]) -> Figure | None:
    """One panel per metric (and extractor): its value per skin type beside the overall value,
    each with its 95 % bootstrap interval."""
    results = evaluation.get("results") or []
    grouping = next((g for g in ("fst", "fst_group") if any(r.get("group_by") == g for r in results)), None)
    if grouping is None:
        return None
    rows = [r for r in results if r.get("group_by") in ("overall", grouping) and r.get("higher_is_better") is not None]
    groups = ["all", *sorted({str(r["group"]) for r in rows if r.get("group_by") == grouping and r.get("group") != "(missing)"},
                             key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))]
    kinds: dict[tuple[str, str, str], dict[str, dict[str, dict[str, Any]]]] = {}
    for r in rows:
        group = "all" if r.get("group_by") == "overall" else str(r.get("group"))
        if group not in groups:
            continue
        name = (str(r.get("display") or r.get("metric")), str(r.get("value_name")), str(r.get("extractor") or ""))
        kinds.setdefault(name, {}).setdefault(str(r.get("on") or ""), {})[group] = r
    if not kinds:
        return None
    order = {name: k for k, name in enumerate(METRIC_ORDER)}
    names = sorted(kinds, key=lambda n: (order.get(n[1], len(order)), n[0], n[1]))
    labels = [_group_label(grouping, g) for g in groups]
    panels, data, said = [], [], []
    for display, value_name, extractor in names:
        series = {}
        higher = None
        for on, by_group in kinds[(display, value_name, extractor)].items():
            estimates = []
            for group in groups:
                r = by_group.get(group) or {}
                higher = r.get("higher_is_better", higher)
                estimates.append((r.get("value"), r.get("ci_low"), r.get("ci_high")))
                if r:
                    data.append([display, value_name, extractor, on, _group_label(grouping, group), r.get("value"),
                                 r.get("ci_low"), r.get("ci_high"), r.get("n_real"), r.get("n_synthetic"),
                                 r.get("undefined") or ""])
            series[on] = estimates
        title = display if value_name in display.lower() or value_name == display.split(" ")[0].lower() else f"{display}: {value_name}"
        panels.append({"title": title, "higher_is_better": higher, "series": series})
        for on, estimates in series.items():
            defined = [(label, e) for label, e in zip(labels, estimates) if e[0] is not None]
            said.append(f"{title}, {on}: " + ", ".join(f"{label} {e[0]:.3g}" for label, e in defined))
    png = plots.metric_bars(panels, labels)
    alt = ("Bar charts, one per metric, of the value per skin type (all: overall) with 95 % bootstrap intervals. "
           + "; ".join(said) + ".")
    caption = ("Metrics per skin type (all: the whole set), each bar with its 95 % bootstrap interval; 'n/a': undefined "
               "(too few images). The extractor and weights behind each are in the tables below (evaluation/evaluation.json).")
    header = ["metric", "value_name", "extractor", "on", "group", "value", "ci_low", "ci_high", "n_real", "n_synthetic", "note"]
    return data_figure("metrics-per-group", png, caption, alt, header, data)


# --------------------------------------------------------------------------------------
# The downstream protocols: ratio curve and ablation
# --------------------------------------------------------------------------------------


def _seed_estimate(value: dict[str, Any]) -> plots.Estimate:
    low, high = value.get("seed_interval") or [None, None]
    return value.get("mean"), low, high


def _point_row(value: dict[str, Any]) -> list[Any]:
    low, high = value.get("seed_interval") or [None, None]
    t_low, t_high = value.get("test_image_interval") or [None, None]
    delta = value.get("delta_vs_real_only") or {}
    return [value.get("mean"), value.get("sd"), value.get("n"), low, high, t_low, t_high, delta.get("mean"),
            delta.get("low"), delta.get("high"), delta.get("within_noise")]


POINT_HEADER = ["mean", "sd", "seeds", "seed_low", "seed_high", "test_image_low", "test_image_high",
                "difference_from_real_only", "difference_low", "difference_high", "within_noise"]


def _compared_on(protocol: dict[str, Any], name: str | None) -> str:
    """The line naming the seeds, the test images per group and the tests of a protocol's test set."""
    description = ((((protocol.get("test_sets") or {}).get(name) or {}).get("tests")) or {}).get("description")
    return f" Compared on: {description}." if description else ""


def curve_figure(curve: dict[str, Any]) -> Figure | None:
    """The mixed arm's per-group AUROC and AUROC gap at each synthetic:real ratio (downstream/curve.json)."""
    name = curve.get("headline_test_set")
    numbers = ((curve.get("test_sets") or {}).get(name) or {}).get("numbers") or {}
    groups = [key for key in numbers if key.startswith("auroc.")]
    if not groups:
        return None
    values = numbers[groups[0]]["values"]
    ratios = [v["ratio"] for v in values]
    points = {p.get("ratio"): p for p in curve.get("points") or []}
    ticks = [f"{r:g}" + (f"\n(reached {points[r]['achieved_ratio']:.2g})" if (points.get(r) or {}).get("status") == "short" else "")
             for r in ratios]
    xs = list(range(len(ratios)))
    panels = [{"title": "AUROC per skin-type group", "ylabel": "AUROC", "limits": (0.0, 1.0),
               "series": {numbers[k]["label"]: [_seed_estimate(v) for v in numbers[k]["values"]] for k in groups}}]
    if "auroc_gap" in numbers:
        panels.append({"title": "AUROC gap (lower is fairer)", "ylabel": "AUROC gap", "limits": (0.0, 1.0),
                       "colours": {numbers["auroc_gap"]["label"]: "tab:red"},
                       "series": {numbers["auroc_gap"]["label"]: [_seed_estimate(v) for v in numbers["auroc_gap"]["values"]]}})
    seeds = len(curve.get("seeds") or [])
    png = plots.protocol_lines(xs, ticks, panels, "synthetic : real ratio (0: real only)",
                               f"The mixed arm by synthetic:real ratio on {name}: mean over {seeds} seeds, 95 % t-interval")
    keys = [*groups, *(["auroc_gap"] if "auroc_gap" in numbers else [])]
    rows = [[name, v["ratio"], v.get("achieved_ratio"), numbers[k]["label"], *_point_row(v)] for k in keys for v in numbers[k]["values"]]
    said = "; ".join(f"{numbers[k]['label']}: " + ", ".join(f"ratio {v['ratio']:g} {_n(v.get('mean'))}" for v in numbers[k]["values"])
                     for k in keys)
    alt = f"Line charts of the mixed arm against the synthetic:real ratio on {name}, mean over {seeds} seeds. {said}."
    caption = (f"The ratio curve: every real training image plus ratio × {curve.get('real_training_images')} synthetic images, "
               f"each point the mean over {seeds} seeds with its 95 % t-interval (downstream/curve.json"
               + (f"; {curve['shortfall']}" if curve.get("shortfall") else "") + ")." + _compared_on(curve, name))
    return data_figure("ratio-curve", png, caption, alt, ["test_set", "ratio", "achieved_ratio", "number", *POINT_HEADER], rows)


def ablation_figure(ablation: dict[str, Any]) -> Figure | None:
    """The group's AUROC against the share of its real training images kept, per arm (downstream/ablate.json)."""
    name = ablation.get("headline_test_set")
    numbers = ((ablation.get("test_sets") or {}).get(name) or {}).get("numbers") or {}
    number = numbers.get(ablation.get("group_number"))
    if not number:
        return None
    shares = sorted({v["keep"] for v in number["values"]})
    labels = ablation.get("arm_labels") or {}
    arms = [a for a in ablation.get("arms") or [] if any(v["arm"] == a for v in number["values"])]
    series, colours = {}, {}
    for arm in arms:
        by_share = {v["keep"]: v for v in number["values"] if v["arm"] == arm}
        label = labels.get(arm, arm)
        series[label] = [_seed_estimate(by_share.get(s) or {}) for s in shares]
        colours[label] = plots.ARM_COLOURS.get(arm, "C0")
    worth = ablation.get("worth") or {}
    levels = {}
    if worth.get("mixed_none_kept") is not None:
        levels[f"{labels.get('mixed', 'mixed')}, none kept"] = worth["mixed_none_kept"]
    seeds = len(ablation.get("seeds") or [])
    group = ablation.get("group")
    # drawn at the share actually kept: every stratum rounds to whole images (ablate.json: kept)
    kept = {k.get("keep"): k for k in ablation.get("kept") or []}
    xs = [(kept.get(s) or {}).get("share_kept", s) for s in shares]
    ticks = [f"{s:.0%}" + (f"\n({kept[s]['group_real_kept']} kept)" if s in kept else "") for s in shares]
    png = plots.protocol_lines(
        xs, ticks,
        [{"title": number["label"], "ylabel": number["label"], "limits": (0.0, 1.0), "series": series,
          "colours": colours, "levels": levels}],
        f"share of the real {group} training images kept",
        f"{number['label']} on {name}: mean over {seeds} seeds, 95 % t-interval",
    )
    rows = [[name, v["keep"], v["arm"], number["label"], *_point_row(v)] for v in number["values"]]
    said = "; ".join(f"{labels.get(a, a)}: " + ", ".join(f"{v['keep']:.0%} kept {_n(v.get('mean'))}" for v in number["values"]
                                                        if v["arm"] == a) for a in arms)
    alt = f"Line chart of {number['label']} on {name} against the share of real {group} training images kept. {said}."
    caption = (f"The ablation: {number['label']} as the real {group} training images are removed, per arm, each point the "
               f"mean over {seeds} seeds with its 95 % t-interval; dashed: real + synthetic with none kept "
               "(downstream/ablate.json)." + _compared_on(ablation, name))
    return data_figure("ablation", png, caption, alt, ["test_set", "keep", "arm", "number", *POINT_HEADER], rows)


def slug(text: str) -> str:
    """An anchor-safe form of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
