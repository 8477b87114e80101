"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import pandas as pd


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen: the report is built anywhere
    import matplotlib.pyplot as plt

    return plt


def imbalance_heatmap(counts: pd.DataFrame) -> bytes:
    """Class x skin-type counts as a heatmap (the 'total' row and column left out)."""
    plt = _pyplot()
    table = counts.drop(index="total", columns="total", errors="ignore")
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 0.8 + 0.5 * table.shape[0]))
    image = axes.imshow(table.to_numpy(dtype=float), cmap="Blues")
    axes.set_xticks(range(table.shape[1]), [str(c).removeprefix("FST ") for c in table.columns])
    axes.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    axes.set_xlabel("skin type")
    peak = float(table.to_numpy().max()) if table.size else 0.0
    for (row, column), value in np.ndenumerate(table.to_numpy()):
        axes.text(column, row, f"{int(value)}", ha="center", va="center",
                  color="white" if value > 0.6 * peak else "black", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label="images")
    return _png(figure)


def loss_curve(losses: Sequence[tuple[int, float]]) -> bytes:
    """Training loss per logged step, with a moving average."""
    plt = _pyplot()
    steps = np.array([s for s, _ in losses])
    values = np.array([v for _, v in losses])
    figure, axes = plt.subplots(figsize=(6, 2.8))
    axes.plot(steps, values, lw=0.8, alpha=0.5, label="loss")
    if len(values) >= 10:
        window = max(3, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1:], smooth, lw=1.6, label=f"moving average ({window} logs)")
    axes.set_xlabel("step")
    axes.set_ylabel("denoising loss")
    axes.legend(frameon=False)
    axes.grid(alpha=0.3)
    return _png(figure)


def auroc_bars(table: dict[str, Any], arms: Sequence[str], groups: Sequence[str]) -> bytes:
    """Per-group AUROC, one bar per arm: mean over seeds, error bar = sd over seeds."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(1.5 + 1.6 * len(groups), 3))
    width = 0.8 / max(1, len(arms))
    for index, arm in enumerate(arms):
        means, errors = [], []
        for group in groups:
            summary = table.get(f"auroc.{group}", {}).get("arms", {}).get(arm) or {}
            means.append(np.nan if summary.get("mean") is None else summary["mean"])
            errors.append(0.0 if summary.get("sd") is None else summary["sd"])
        positions = np.arange(len(groups)) + (index - (len(arms) - 1) / 2) * width
        axes.bar(positions, means, width, yerr=errors, capsize=3, label=arm)
    axes.set_xticks(range(len(groups)), [f"FST {g}" for g in groups])
    axes.set_ylabel("AUROC")
    low = np.nanmin([table.get(f"auroc.{g}", {}).get("arms", {}).get(a, {}).get("mean") or np.nan
                     for g in groups for a in arms] + [1.0])
    axes.set_ylim(max(0.0, min(0.5, low - 0.05)), 1.0)
    axes.legend(frameon=False, ncol=len(arms), loc="lower right")
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)
