"""The numbers of the review (pure functions of ratings; no files).

* **Mean rating with a t-interval, images as clusters.** Several raters' ratings of one image
  are not independent, so the standard error of the mean over all ratings is the
  cluster-robust (linearised ratio) one over the ``k`` rated images,
  ``SE^2 = k / (k - 1) * sum_i (S_i - mean * n_i)^2 / N^2`` (``S_i``, ``n_i``: sum and
  number of image ``i``'s ratings, ``N = sum n_i``), with ``k - 1`` degrees of freedom. With
  one rating per image it is the ordinary t-interval; with every image rated by every rater,
  the t-interval of the per-image means. The share below 3 is the same mean of 0/1 values.
* **Telling real from synthetic.** Accuracy of the raters' real/synthetic guesses, and the
  balanced accuracy (mean of the two per-source accuracies), whose chance level is 0.5 at any
  mix of real and synthetic (plain accuracy is 0.8 for "always synthetic" when 20 % are
  real); Fisher's exact test of guess against source (p small: the guesses carry
  information). The AUROC of the rating as a score for "real" (sklearn): 0.5 when ratings do
  not separate real from synthetic images.
* **Agreement.** Krippendorff's alpha for ordinal data (Krippendorff 2011, "Computing
  Krippendorff's alpha-reliability"), over the images at least two raters rated; 1 is
  perfect agreement, 0 agreement at chance level. Computed by the ``krippendorff`` package.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

from fairsynth.review.config import SCALE


def cluster_mean(values: Sequence[tuple[str, float]], level: float = 0.95) -> dict[str, Any]:
    """Mean of ``(image id, value)`` pairs with its t-interval over images as clusters.

    Returns ``mean``, ``low``, ``high`` (None with fewer than two images), ``n`` (values) and
    ``images``.
    """
    from scipy import stats

    n = len(values)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for image_id, value in values:
        sums[image_id] += value
        counts[image_id] += 1
    k = len(sums)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "images": 0}
    mean = sum(sums.values()) / n
    if k < 2:
        return {"mean": mean, "low": None, "high": None, "n": n, "images": k}
    variance = k / (k - 1) * sum((sums[i] - mean * counts[i]) ** 2 for i in sums) / n**2
    half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * math.sqrt(variance)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "images": k}


def summary(scores: Sequence[tuple[str, int]], low_below: int = 3, level: float = 0.95) -> dict[str, Any]:
    """Mean rating and share of ratings below ``low_below``, each with its interval."""
    out = cluster_mean(scores, level)
    low = cluster_mean([(i, float(s < low_below)) for i, s in scores], level)
    out.update(share_below=low["mean"], share_below_low=low["low"], share_below_high=low["high"])
    return out


def guess_accuracy(truth: Sequence[str], guesses: Sequence[str]) -> dict[str, Any]:
    """How well ``guesses`` (real/synthetic) match ``truth``: accuracy, balanced accuracy, Fisher's p."""
    from scipy import stats

    n = len(guesses)
    if n == 0:
        return {"guesses": 0}
    table = [[sum(1 for t, g in zip(truth, guesses) if t == actual and g == said) for said in ("real", "synthetic")]
             for actual in ("real", "synthetic")]
    correct = table[0][0] + table[1][1]
    per_source = [row[i] / sum(row) for i, row in enumerate(table) if sum(row)]
    return {
        "guesses": n,
        "accuracy": correct / n,
        "balanced_accuracy": sum(per_source) / 2 if len(per_source) == 2 else None,
        "always_synthetic_accuracy": sum(table[1]) / n,
        "real_called_real": table[0][0] / sum(table[0]) if sum(table[0]) else None,
        "synthetic_called_synthetic": table[1][1] / sum(table[1]) if sum(table[1]) else None,
        "fisher_p_value": float(stats.fisher_exact(table).pvalue),
        "table": {"real": {"real": table[0][0], "synthetic": table[0][1]},
                  "synthetic": {"real": table[1][0], "synthetic": table[1][1]}},
    }


def rating_auroc(truth: Sequence[str], scores: Sequence[int]) -> float | None:
    """AUROC of the rating as a score for "real"; None unless both sources are rated."""
    from sklearn.metrics import roc_auc_score

    labels = [1 if t == "real" else 0 for t in truth]
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def krippendorff_alpha_ordinal(matrix: Sequence[Sequence[float | None]]) -> float | None:
    """Krippendorff's ordinal alpha of a raters x images matrix (None: not rated).

    None when it is undefined: fewer than two raters, no image rated twice, or a single value
    among the images rated twice (no expected disagreement).
    """
    import krippendorff
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        return None
    data = data[:, np.sum(~np.isnan(data), axis=0) >= 2]
    if data.shape[1] == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    domain = list(range(SCALE[0], SCALE[1] + 1))
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=domain))


def acceptance(overall: dict[str, Any], mean_above: float, low_share_under: float) -> dict[str, Any]:
    """The FairSkin verdict on a :func:`summary`: mean above ``mean_above`` and share below under ``low_share_under``."""
    mean_ok = overall.get("mean") is not None and overall["mean"] > mean_above
    low_ok = overall.get("share_below") is not None and overall["share_below"] < low_share_under
    return {"mean_ok": bool(mean_ok), "low_share_ok": bool(low_ok), "accepted": bool(mean_ok and low_ok)}
