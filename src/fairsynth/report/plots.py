"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

Each function takes plain numbers or images and returns the PNG; nothing here reads a file.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

#: Resolution of every figure, in dots per inch (with the figure sizes below: ~600-900 px wide).
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen: the report is built anywhere
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def imbalance_heatmap(counts: pd.DataFrame) -> bytes:
    """Class x skin-type counts as a heatmap (the 'total' row and column left out)."""
    plt = _pyplot()
    table = counts.drop(index="total", columns="total", errors="ignore")
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 0.8 + 0.5 * table.shape[0]))
    image = axes.imshow(table.to_numpy(dtype=float), cmap="Blues")
    axes.set_xticks(range(table.shape[1]), [str(c).removeprefix("FST ") for c in table.columns])
    axes.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    axes.set_xlabel("Fitzpatrick skin type")
    peak = float(table.to_numpy().max()) if table.size else 0.0
    for (row, column), value in np.ndenumerate(table.to_numpy()):
        axes.text(column, row, f"{int(value)}", ha="center", va="center",
                  color="white" if value > 0.6 * peak else "black", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label="images")
    return _png(figure)


def loss_curve(losses: Sequence[tuple[int, float]]) -> bytes:
    """Training loss per logged step, with a moving average once there are enough points."""
    plt = _pyplot()
    steps = np.array([s for s, _ in losses])
    values = np.array([v for _, v in losses])
    figure, axes = plt.subplots(figsize=(6, 2.8))
    axes.plot(steps, values, lw=0.8, alpha=0.5, marker="." if len(values) < 30 else None, label="loss")
    if len(values) >= 10:
        window = max(3, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1:], smooth, lw=1.6, label=f"moving average ({window} logs)")
    axes.set_xlabel("step")
    axes.set_ylabel("denoising loss")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(frameon=False)
    axes.grid(alpha=0.3)
    return _png(figure)


def cell_grid(
    images: Mapping[tuple[str, Any], Image.Image], rows: Sequence[str], columns: Sequence[Any],
    title: str, column_label: str = "skin type",
) -> bytes:
    """One image per (row, column) cell with the row and column names; an empty cell says 'none'."""
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.4 + 0.62 * len(columns), 0.45 + 0.62 * len(rows)), squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = images.get((row, column))
            if image is None:
                ax.set_facecolor("#eeeeee")
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="#888888", fontsize=8, transform=ax.transAxes)
            else:
                ax.imshow(np.asarray(image), interpolation="nearest")
            for spine in ax.spines.values():
                spine.set_color("#cccccc")
            if r == 0:
                ax.set_title(str(column), fontsize=8)
            if c == 0:
                ax.set_ylabel(str(row), rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(f"{title} (columns: {column_label})", fontsize=10, y=1.0, va="bottom")
    figure.subplots_adjust(wspace=0.06, hspace=0.06)
    return _png(figure)


#: One estimate with its 95 % interval: (value, low, high); low and high None where unknown.
Estimate = tuple[float | None, float | None, float | None]
#: Colours of the downstream arms, the same in every figure.
ARM_COLOURS = {"real": "#1f77b4", "mixed": "#ff7f0e", "synthetic": "#9467bd", "oracle": "#2ca02c", "hybrid": "#8c564b"}


def _arm_colour(arm: str, index: int) -> str:
    return ARM_COLOURS.get(arm, f"C{index % 10}")


def _whisker(axes: Any, position: float, estimate: Estimate, limits: tuple[float, float], colour: str,
             horizontal: bool = True, filled: bool = True, size: float = 5.0) -> None:
    """A point and its interval; an interval that runs past ``limits`` ends in an arrow there."""
    value, low, high = estimate
    if value is None:
        return
    lo, hi = limits
    if low is not None and high is not None:
        a, b = max(low, lo), min(high, hi)
        if horizontal:
            axes.plot([a, b], [position, position], color=colour, lw=1.6, solid_capstyle="butt")
        else:
            axes.plot([position, position], [a, b], color=colour, lw=1.6, solid_capstyle="butt")
        for end, clipped, marker in ((a, low < lo, "<" if horizontal else "v"), (b, high > hi, ">" if horizontal else "^")):
            if clipped:
                xy = (end, position) if horizontal else (position, end)
                axes.plot(*xy, marker=marker, color=colour, ms=5)
    xy = (min(max(value, lo), hi), position) if horizontal else (position, min(max(value, lo), hi))
    axes.plot(*xy, "o", ms=size, color=colour if filled else "white", markeredgecolor=colour, markeredgewidth=1.4, zorder=3)


def forest(
    groups: Sequence[str], arms: Sequence[str], points: Mapping[str, Mapping[str, Estimate]],
    gaps: Mapping[str, float | None], deltas: Mapping[str, Mapping[str, Estimate]],
    within_noise: Mapping[str, Mapping[str, bool | None]], title: str,
) -> bytes:
    """A forest plot of per-group AUROC: left, each arm's AUROC per group with its interval, and a
    last row marking each arm's gap (a bar from its worst to its best group); right, each arm's
    difference from real only per group and in the gap, with its interval (hollow: within noise).

    ``points[arm][group]``, ``gaps[arm]``, ``deltas[arm][group or "gap"]`` and
    ``within_noise[arm][group or "gap"]`` (the arms other than real on the right)."""
    plt = _pyplot()
    others = [arm for arm in arms if arm != "real" and arm in deltas]
    rows = [*groups, "gap"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10.5, 0.9 + 0.2 * len(rows) * max(2, len(arms))),
                                         gridspec_kw={"width_ratios": [1.15, 1]}, sharey=True)
    spacing = 0.7 / max(1, len(arms))
    for index, arm in enumerate(arms):
        colour = _arm_colour(arm, index)
        offset = (index - (len(arms) - 1) / 2) * spacing
        for row, group in enumerate(groups):
            _whisker(left, row + offset, points.get(arm, {}).get(group, (None, None, None)), (0.0, 1.0), colour)
        means = [points.get(arm, {}).get(g, (None,))[0] for g in groups]
        defined = [m for m in means if m is not None]
        if len(defined) >= 2:
            y = len(groups) + offset
            left.plot([min(defined), max(defined)], [y, y], color=colour, lw=5, alpha=0.55, solid_capstyle="butt")
            left.text(max(defined) + 0.01, y, f"{gaps.get(arm) if gaps.get(arm) is not None else max(defined) - min(defined):.3f}",
                      va="center", fontsize=7, color=colour)
        left.plot([], [], "o", color=colour, label=arm)
    left.set_xlim(0.0, 1.0)
    left.axvline(0.5, color="#999999", lw=0.8, ls=":")
    left.set_xlabel("AUROC (gap row: worst to best group)")
    left.legend(frameon=False, ncol=len(arms), loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8)
    spread = [abs(v) for arm in others for e in deltas[arm].values() for v in e if v is not None]
    bound = min(1.0, max(0.1, 1.1 * max(spread, default=0.1)))
    for index, arm in enumerate(arms):
        if arm not in others:
            continue
        colour = _arm_colour(arm, index)
        offset = (index - (len(arms) - 1) / 2) * spacing
        for row, key in enumerate(rows):
            noise = within_noise.get(arm, {}).get(key)
            _whisker(right, row + offset, deltas[arm].get(key, (None, None, None)), (-bound, bound), colour,
                     filled=noise is False)
    right.axvline(0.0, color="#333333", lw=0.9)
    right.set_xlim(-bound, bound)
    right.xaxis.set_major_locator(plt.MaxNLocator(7, symmetric=True))
    right.set_xlabel("difference from real only (gap: lower is fairer)")
    right.set_title("filled: beyond noise · hollow: within noise", fontsize=8)
    left.set_yticks(range(len(rows)), [f"FST {g}" if g != "gap" else "AUROC gap" for g in rows])
    left.invert_yaxis()
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
        for row in range(len(rows)):
            axes.axhline(row + 0.5, color="#eeeeee", lw=0.8)
    figure.suptitle(title, fontsize=9, y=1.02)
    return _png(figure)


def cell_heatmap(
    rows: Sequence[str], columns: Sequence[str], delivered: Mapping[tuple[str, str], int],
    target: Mapping[tuple[str, str], int], judged: Mapping[tuple[str, str], tuple[float | None, int]],
) -> bytes:
    """The synthetic set per class x skin-type cell: left, delivered / target (colour: the share
    delivered); right, where a judge read the cells, the share it reads as the asked class."""
    plt = _pyplot()
    panels = 2 if judged else 1
    figure, axes = plt.subplots(1, panels, figsize=(panels * (1.6 + 0.72 * len(columns)), 0.9 + 0.45 * len(rows)),
                                squeeze=False)
    share = np.full((len(rows), len(columns)), np.nan)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            if target.get((row, column)):
                share[r, c] = min(1.0, delivered.get((row, column), 0) / target[(row, column)])
    panel = axes[0][0]
    image = panel.imshow(np.ma.masked_invalid(share), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for (r, c), value in np.ndenumerate(share):
        key = (rows[r], columns[c])
        text = f"{delivered.get(key, 0)}/{target[key]}" if key in target and target[key] else "–"
        panel.text(c, r, text, ha="center", va="center", fontsize=7, color="black")
    panel.set_title("delivered / target", fontsize=9)
    figure.colorbar(image, ax=panel, shrink=0.8, label="share delivered")
    if judged:
        agree = np.full((len(rows), len(columns)), np.nan)
        for (row, column), (value, _) in judged.items():
            if row in rows and column in columns and value is not None:
                agree[rows.index(row), columns.index(column)] = value
        panel = axes[0][1]
        image = panel.imshow(np.ma.masked_invalid(agree), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        for r, row in enumerate(rows):
            for c, column in enumerate(columns):
                value, n = judged.get((row, column), (None, 0))
                panel.text(c, r, "–" if value is None else f"{100 * value:.0f}%\nof {n}", ha="center", va="center",
                           fontsize=6.5, color="black")
        panel.set_title("judge reads the asked class", fontsize=9)
        figure.colorbar(image, ax=panel, shrink=0.8, label="share read as asked")
    for panel in axes[0]:
        panel.set_xticks(range(len(columns)), list(columns))
        panel.set_yticks(range(len(rows)), list(rows))
        panel.set_xlabel("Fitzpatrick skin type")
        panel.set_facecolor("#eeeeee")
    for panel in axes[0][1:]:
        panel.set_yticklabels([])
    return _png(figure)


def metric_bars(panels: Sequence[Mapping[str, Any]], groups: Sequence[str]) -> bytes:
    """One panel per metric: a bar per group and series (e.g. real vs synthetic, or synthetic and
    real for a one-set metric), its 95 % interval as an error bar; 'n/a' where undefined.

    Each panel: ``title``, ``higher_is_better`` and ``series`` {name: [Estimate per group]}."""
    plt = _pyplot()
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False)
    for index, spec in enumerate(panels):
        ax = axes[index // columns][index % columns]
        series = spec["series"]
        width = 0.8 / max(1, len(series))
        for k, (name, estimates) in enumerate(series.items()):
            positions = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
            values = [np.nan if e[0] is None else e[0] for e in estimates]
            low = [0.0 if e[0] is None or e[1] is None else max(0.0, e[0] - e[1]) for e in estimates]
            high = [0.0 if e[0] is None or e[2] is None else max(0.0, e[2] - e[0]) for e in estimates]
            ax.bar(positions, values, width * 0.9, yerr=[low, high], capsize=2.5, label=name, alpha=0.8,
                   color=f"C{k}", error_kw={"elinewidth": 1.0})
            for position, e in zip(positions, estimates):
                if e[0] is None:
                    ax.text(position, 0, "n/a", ha="center", va="bottom", fontsize=6, color="#888888", rotation=90)
        direction = {True: " (higher is better)", False: " (lower is better)"}.get(spec.get("higher_is_better"), "")
        ax.set_title(f"{spec['title']}{direction}", fontsize=8.5)
        ax.set_xticks(range(len(groups)), list(groups), fontsize=7.5)
        ax.grid(axis="y", alpha=0.3)
        if len(series) > 1:
            ax.legend(frameon=False, fontsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.tight_layout()
    return _png(figure)


def protocol_lines(
    xs: Sequence[float], ticks: Sequence[str], panels: Sequence[Mapping[str, Any]], xlabel: str, title: str,
) -> bytes:
    """Lines of means with their 95 % intervals, one panel per question: the ratio curve and the
    ablation. Each panel: ``title``, ``ylabel``, ``series`` {name: [Estimate per x]}, optional
    ``levels`` {label: y} drawn as dashed lines, ``colours`` {name: colour} and ``limits`` (the y range
    intervals are clipped to)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    step = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    for ax, spec in zip(axes[0], panels):
        series = spec["series"]
        limits = spec.get("limits", (-np.inf, np.inf))
        for k, (name, estimates) in enumerate(series.items()):
            colour = (spec.get("colours") or {}).get(name, f"C{k}")
            offset = (k - (len(series) - 1) / 2) * step * 0.012
            shown = [(x + offset, e) for x, e in zip(xs, estimates) if e[0] is not None]
            ax.plot([x for x, _ in shown], [e[0] for _, e in shown], "-", color=colour, lw=1.4, label=name)
            for x, e in shown:
                _whisker(ax, x, e, limits, colour, horizontal=False, size=4)
        for label, level in (spec.get("levels") or {}).items():
            ax.axhline(level, color="#777777", ls="--", lw=0.9, label=label)
        if np.isfinite(limits[0]) and np.isfinite(limits[1]):
            ax.set_ylim(*limits)
        ax.set_xticks(list(xs), list(ticks), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(spec.get("ylabel", ""))
        ax.set_title(spec["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    figure.suptitle(title, fontsize=9, y=1.02)
    figure.tight_layout()
    return _png(figure)
