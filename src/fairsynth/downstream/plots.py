"""The downstream protocols' figures (matplotlib, Agg), drawn from their JSON results, as PNG bytes.

Every point is the mean over seeds with its 95 % t-interval over seeds as an error bar; each
seed's own value is a small dot beside it, so a reader sees the spread the interval summarises.
"""

from __future__ import annotations

import io
from typing import Any

#: Resolution of every figure (dots per inch).
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _series(axes: Any, xs: list[float], values: list[dict[str, Any]], label: str, offset: float = 0.0, **style: Any) -> None:
    """Means with t-interval error bars, and each seed's value as a dot."""
    shown = [(x, v) for x, v in zip(xs, values) if v.get("mean") is not None]
    if not shown:
        return
    x = [p[0] + offset for p in shown]
    means = [p[1]["mean"] for p in shown]
    low = [p[1]["mean"] - (p[1]["seed_interval"][0] if p[1]["seed_interval"][0] is not None else p[1]["mean"]) for p in shown]
    high = [(p[1]["seed_interval"][1] if p[1]["seed_interval"][1] is not None else p[1]["mean"]) - p[1]["mean"] for p in shown]
    line = axes.errorbar(x, means, yerr=[low, high], marker="o", ms=4, capsize=3, lw=1.4, label=label, **style)
    colour = line[0].get_color()
    for xi, (_, value) in zip(x, shown):
        seeds = [v for v in value.get("per_seed", {}).values() if v is not None]
        axes.scatter([xi] * len(seeds), seeds, s=8, color=colour, alpha=0.35, zorder=1)


def curve_figure(result: dict[str, Any]) -> bytes:
    """Accuracy and balanced accuracy, AUROC per group, and the AUROC gap against the synthetic:real
    ratio, on the headline test set. The ratios are evenly spaced (they are roughly logarithmic and
    include 0); a ratio the generated set could not reach is labelled with the ratio it reached."""
    plt = _pyplot()
    part = result["test_sets"][result["headline_test_set"]]
    numbers = part["numbers"]
    figure, panels = plt.subplots(1, 3, figsize=(13, 3.6))
    ratios = [v["ratio"] for v in next(iter(numbers.values()))["values"]]
    reached = {e["ratio"]: e for e in result["points"]}
    xs = list(range(len(ratios)))
    ticks = [f"{r:g}" if reached[r].get("status") != "short" else f"{r:g}\n(reached {reached[r]['achieved_ratio']:.2g})"
             for r in ratios]
    for key in ("accuracy", "balanced_accuracy"):
        _series(panels[0], xs, numbers[key]["values"], numbers[key]["label"])
    panels[0].set_title("accuracy")
    groups = [key for key in numbers if key.startswith("auroc.")]
    for key in groups:
        _series(panels[1], xs, numbers[key]["values"], numbers[key]["label"])
    panels[1].set_title("AUROC per group")
    _series(panels[2], xs, numbers["auroc_gap"]["values"], numbers["auroc_gap"]["label"], color="tab:red")
    panels[2].set_title("AUROC gap (lower is fairer)")
    for axes in panels:
        axes.set_xticks(xs, ticks, fontsize=8)
        axes.set_xlabel("synthetic : real ratio")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(
        f"Mixed arm by synthetic:real ratio on {result['headline_test_set']}: mean over {len(result['seeds'])} seeds, "
        "95 % t-interval over seeds, dots = seeds", fontsize=9,
    )
    return _png(figure)


def ablate_figure(result: dict[str, Any]) -> bytes:
    """The group's AUROC against the share of its real training images kept, one line per arm, on
    the headline test set; the mixed arm's level with none kept is a dashed line."""
    plt = _pyplot()
    part = result["test_sets"][result["headline_test_set"]]
    number = part["numbers"][result["group_number"]]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    colours = {"real": "tab:blue", "mixed": "tab:orange", "oracle": "tab:green"}
    labels = {"real": "real only", "mixed": "real + synthetic", "oracle": "real + true images (oracle)"}
    # at the share actually kept: every stratum rounds to whole images (a stratum of one keeps it at 50 %)
    kept = {entry["keep"]: entry["share_kept"] for entry in result.get("kept", [])}
    for offset, arm in zip((-0.006, 0.0, 0.006), result["arms"]):
        values = [v for v in number["values"] if v["arm"] == arm]
        _series(axes, [kept.get(v["keep"], v["keep"]) for v in values], values, labels.get(arm, arm), offset=offset,
                color=colours.get(arm))
    worth = result.get("worth") or {}
    level = worth.get("mixed_none_kept")
    if level is not None:
        axes.axhline(level, color=colours["mixed"], ls="--", lw=0.8, alpha=0.7, label="real + synthetic, none kept")
    if worth.get("share"):  # where real only reaches that level: what the synthetic set is worth
        axes.axvline(worth["share"], color="grey", ls=":", lw=1, label=f"worth {worth['share']:.0%} of the real images")
    axes.set_xlabel(f"share of the real {result['group']} training images kept (of {result['group_real_training_images']})")
    axes.set_ylabel(number["label"])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(
        f"{number['label']} on {result['headline_test_set']}: mean over {len(result['seeds'])} seeds, 95 % t-interval",
        fontsize=9,
    )
    return _png(figure)
