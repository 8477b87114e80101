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


def auroc_bars(
    table: Mapping[str, Any], arms: Sequence[str], groups: Sequence[str],
    runs: Mapping[str, Mapping[Any, Mapping[str, Any]]] | None = None,
) -> bytes:
    """Per-group AUROC, one bar per arm at the mean over seeds with the sd over seeds as its error
    bar; ``runs[arm][seed][group]`` (``estimate``, ``low``, ``high``), where given, adds each run's
    bootstrap 95 % interval as a dot with a thin line inside its bar."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(1.8 + 1.8 * len(groups), 3.2))
    width = 0.8 / max(1, len(arms))
    lows = [1.0]
    for index, arm in enumerate(arms):
        means, errors = [], []
        for group in groups:
            summary = (table.get(f"auroc.{group}") or {}).get("arms", {}).get(arm) or {}
            means.append(np.nan if summary.get("mean") is None else summary["mean"])
            errors.append(0.0 if summary.get("sd") is None else summary["sd"])
        positions = np.arange(len(groups)) + (index - (len(arms) - 1) / 2) * width
        bars = axes.bar(positions, means, width * 0.92, yerr=errors, capsize=3, alpha=0.75, label=arm,
                        error_kw={"elinewidth": 1.4})
        lows += [m - e for m, e in zip(means, errors) if not np.isnan(m)]
        seeds = list((runs or {}).get(arm, {}).items())
        for k, (_, per_group) in enumerate(seeds):
            offset = (k - (len(seeds) - 1) / 2) * width * 0.6 / max(1, len(seeds))
            for position, group in zip(positions, groups):
                run = per_group.get(group) or {}
                if run.get("estimate") is None:
                    continue
                low, high = run.get("low"), run.get("high")
                if low is not None and high is not None:
                    axes.plot([position + offset] * 2, [low, high], color="#555555", lw=0.7, alpha=0.8)
                    lows.append(low)
                axes.plot(position + offset, run["estimate"], "o", ms=3, color=bars.patches[0].get_facecolor(),
                          markeredgecolor="#333333", markeredgewidth=0.6)
    axes.set_xticks(range(len(groups)), [f"FST {g}" for g in groups])
    axes.set_ylabel("AUROC")
    axes.set_ylim(max(0.0, min(0.5, float(np.nanmin(lows)) - 0.05)), 1.02)
    axes.axhline(0.5, color="#999999", lw=0.8, ls=":")
    axes.legend(frameon=False, ncol=len(arms), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)
