"""`fairsynth downstream ablate`: how many real images of a rare group the synthetic set is worth.

The honest form of the FairSkin claim is a curve: keep 100 / 50 / 25 / 10 / 0 % of the real
training images of one group (skin types V-VI), with and without synthetic data, on the same
test set. At each share kept (``downstream.ablate.keep``):

1. that share of the group's real training images stays, seeded by the run's seed and
   stratified by class and skin type (each class × type stratum keeps round(share · n) of its n
   images, a prefix of one seeded order, so a smaller share keeps a subset of a larger one's);
   every other real training image stays too (:func:`remove_share`);
2. three arms train on it, with every seed, through the comparison's own code
   (:mod:`fairsynth.downstream.points`): **real only**; **real + synthetic**, with the synthetic
   images the mixed arm uses with every real image (``downstream.mix`` on the whole training
   split) held fixed, so that along the curve only the real images change; and, on a procedural
   world, the **oracle** — the same with true world images of the synthetic set's cells;
3. the group's AUROC is plotted against the share kept.

The headline: the share s* at which the real-only curve (linear between the shares actually kept:
each stratum rounds to whole images) reaches what
real + synthetic scores with 100 % of the group's real images removed — the synthetic set is
worth s* · N real images of the group. Its interval is a two-level percentile bootstrap: each
replicate resamples the seeds (paired across arms and shares) and the test images (within each
group, the same rows for every run) and finds s* again. Where real + synthetic with none kept is
not above real only with none kept (its paired t-interval over seeds holds 0, or it is below),
the set is worth none that the study can detect, and the sentence says so.

Outputs in ``downstream.output``: ``ablate.json``, ``ablate.md``, ``ablate.png``; the runs in
``ablate/keep-<share>/<arm>/seed-<k>/``.
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fairsynth.downstream.config import DownstreamConfig
from fairsynth.downstream.data import Sample, Sets, check_sets, load_sets, mix_training_set
from fairsynth.downstream.fairness import ddi_group
from fairsynth.downstream.paired import (
    PAIRED_TEST,
    TEST_IMAGE_BOOTSTRAP,
    RunDraws,
    describe,
    draw_runs,
    format_difference,
    images_by_group,
    paired_difference,
    point,
)
from fairsynth.downstream.points import (
    Point,
    chosen_test_set,
    point_predictions,
    run_config,
    run_point,
    test_set_label,
    with_training,
)
from fairsynth.io import atomic_write_bytes, atomic_write_text, remove_temporaries

#: Arm names as the ablation reports them.
ARM_LABELS = {"real": "real only", "mixed": "real + synthetic", "oracle": "real + true images (oracle)"}

#: Numbers reported beside the group's AUROC: (key, label, higher is better).
CONTEXT_NUMBERS: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", True),
    ("balanced_accuracy", "balanced accuracy", True),
    ("macro_auroc", "macro AUROC", True),
    ("auroc_gap", "AUROC gap", False),
)


class AblationError(ValueError):
    """An ablation that cannot be run as asked (the message names the group, share or class)."""


# ---------------------------------------------------------------------------------------------
# Which images go
# ---------------------------------------------------------------------------------------------


def group_matcher(sets: Sets, group: str, group_by: str) -> tuple[Callable[[Sample], bool], str]:
    """Whether a sample belongs to ``group``, and the headline number of that group.

    ``group`` is a value of ``group_by`` (a skin type "VI") or, for skin types, a DDI group
    ("V-VI"). A group the data does not have is an :class:`AblationError` listing those it has.
    """
    present = sorted({s.group for s in [*sets.train, *sets.test]})
    if group in present:
        key = f"auroc_type.{group}" if group_by == "fst" else f"auroc.{group}"
        return (lambda sample: sample.group == group), key
    if group_by == "fst":
        ddi = sorted({g for g in map(lambda v: ddi_group(v) if v != "unknown" else None, present) if g})
        if group in ddi:
            return (lambda sample: sample.group != "unknown" and ddi_group(sample.group) == group), f"auroc.{group}"
        also = f", and DDI groups {', '.join(ddi)}" if ddi else ""
    else:
        also = ""
    raise AblationError(
        f"downstream.ablate.group: {group!r} is not a group of the data (downstream.group_by = {group_by}); its groups: "
        f"{', '.join(present)}{also}"
    )


def _stratum_order(seed: int, stratum: tuple[str, str], n: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(("ablate|" + "|".join(stratum)).encode()),)))
    return rng.permutation(n)


def kept_count(n: int, share: float) -> int:
    """Images a stratum of ``n`` keeps at ``share`` (rounded half up)."""
    return math.floor(share * n + 0.5)


def remove_share(
    train: Sequence[Sample], is_member: Callable[[Sample], bool], share: float, seed: int,
) -> tuple[list[Sample], dict[str, Any]]:
    """The training images left when only ``share`` of the group's stay, and the account per stratum.

    Strata are (class, group value) within the group; each keeps :func:`kept_count` images, the
    first of one seeded order per stratum (so the kept sets are nested across shares).
    """
    strata: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in train:
        if is_member(sample):
            strata[(sample.label, sample.group)].append(sample)
    kept_ids: set[int] = set()
    account = {}
    for stratum in sorted(strata):
        members = strata[stratum]
        keep = kept_count(len(members), share)
        for index in _stratum_order(seed, stratum, len(members))[:keep]:
            kept_ids.add(id(members[index]))
        account[f"{stratum[0]} | {stratum[1]}"] = {"real": len(members), "kept": keep}
    kept = [s for s in train if not is_member(s) or id(s) in kept_ids]
    return kept, account


def check_every_class_keeps_an_image(train: Sequence[Sample], is_member: Callable[[Sample], bool], group: str,
                                     shares: Sequence[float]) -> None:
    """Refuse an ablation that would leave a class with no training image, naming the class."""
    totals = Counter(s.label for s in train)
    by_stratum = Counter((s.label, s.group) for s in train if is_member(s))
    for share in sorted(shares):
        for label in sorted(totals):
            removed = sum(n - kept_count(n, share) for (lab, _), n in by_stratum.items() if lab == label)
            if totals[label] - removed == 0:
                raise AblationError(
                    f"downstream.ablate: keeping {share:.0%} of the {group} training images leaves class {label!r} with no "
                    f"training image (all its {totals[label]} real training image(s) are {group}); keep a larger share "
                    "(downstream.ablate.keep) or study a class that other groups have too"
                )


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------


def _share_name(share: float) -> str:
    return f"keep-{share:g}"


def plan_points(config: DownstreamConfig, sets: Sets, output: Path, is_member: Callable[[Sample], bool]) -> tuple[dict[tuple[float, str], Point], list[str], dict[str, Any]]:
    """The runs by (share, arm), the arms, and what was held fixed."""
    arms = ["real", "mixed"] + (["oracle"] if sets.oracle else [])
    settings = run_config(config, config.ablate.epochs)
    shares = config.mix.shares()
    fixed: dict[str, dict[int, list[Sample]]] = {"mixed": {}, "oracle": {}}
    for seed in config.seeds:
        fixed["mixed"][seed] = mix_training_set(sets.train, sets.synthetic, shares, seed)[0]
        if sets.oracle:
            fixed["oracle"][seed] = mix_training_set(sets.train, sets.oracle, shares, seed)[0]
    points: dict[tuple[float, str], Point] = {}
    for share in sorted(map(float, config.ablate.keep), reverse=True):
        kept = {seed: remove_share(sets.train, is_member, share, seed) for seed in config.seeds}
        first = kept[config.seeds[0]]
        for arm in arms:
            per_seed = {}
            for seed in config.seeds:
                train = kept[seed][0]
                if arm == "real":
                    per_seed[seed] = with_training(sets, train=train)
                elif arm == "mixed":
                    per_seed[seed] = with_training(sets, train=train, synthetic=fixed["mixed"][seed])
                else:
                    per_seed[seed] = with_training(sets, train=train, oracle=fixed["oracle"][seed])
            info = {"keep": share, "group_real_kept": sum(v["kept"] for v in first[1].values()),
                    "real_images": len(first[0]),
                    "mixed_in_images": 0 if arm == "real" else len(fixed[arm][config.seeds[0]])}
            points[(share, arm)] = Point(f"keep {share:g} {arm}", output / "ablate" / _share_name(share) / arm,
                                         arm, per_seed, settings, info)
    held = {
        "synthetic_images": len(fixed["mixed"][config.seeds[0]]),
        "synthetic_by_group": dict(sorted(Counter(s.group for s in fixed["mixed"][config.seeds[0]]).items())),
        "how": "the synthetic images the mixed arm uses with every real training image (downstream.mix on the whole "
               "training split, seeded by the run's seed), held fixed across shares",
    }
    if sets.oracle:
        held["oracle_images"] = len(fixed["oracle"][config.seeds[0]])
    return points, arms, held


def _numbers(group_key: str, group: str) -> list[tuple[str, str, bool]]:
    return [(group_key, f"AUROC {group}", True), *CONTEXT_NUMBERS]


def summarise_test_set(points: dict[tuple[float, str], Point], arms: list[str], config: DownstreamConfig,
                       test_set: str | None, group_key: str) -> tuple[dict[str, Any], dict[tuple[float, str], dict[int, RunDraws]]]:
    """Per number, share and arm: the point over seeds and its paired difference from real only."""
    predictions = point_predictions(points, config.seeds, test_set)
    draws = draw_runs(predictions, high_risk=config.high_risk, min_positives=config.min_positives,
                      resamples=config.bootstrap_resamples, ddi_groups=config.group_by == "fst")
    runs = {name: {seed: draws[(name, seed)] for seed in config.seeds} for name in points}
    groups = images_by_group(next(iter(predictions.values())), config.group_by == "fst")
    out: dict[str, Any] = {
        "images_by_group": groups,
        "tests": {"seeds": list(config.seeds), "paired_test": PAIRED_TEST, "test_image_bootstrap": TEST_IMAGE_BOOTSTRAP,
                  "resamples": config.bootstrap_resamples,
                  "description": describe(config.seeds, groups, config.bootstrap_resamples, test_set_label(test_set))},
        "numbers": {},
    }
    shares = sorted({share for share, _ in points}, reverse=True)
    for key, label, higher in _numbers(group_key, config.ablate.group):
        values = []
        for share in shares:
            for arm in arms:
                entry = {"keep": share, "arm": arm, **point(runs[(share, arm)], key)}
                entry["delta_vs_real_only"] = None if arm == "real" else paired_difference(runs[(share, arm)], runs[(share, "real")], key)
                values.append(entry)
        out["numbers"][key] = {"label": label, "higher_is_better": higher, "values": values}
    return out, runs


def crossing(shares: Sequence[float], values: Sequence[float], target: float) -> float:
    """The smallest share at which the piecewise-linear curve through (shares, values) reaches
    ``target`` (shares ascending): 0 when it starts there, ``inf`` when it never does."""
    if values[0] >= target:
        return 0.0
    for i in range(1, len(shares)):
        if values[i] >= target:
            low, high = values[i - 1], values[i]
            return shares[i - 1] + (target - low) / (high - low) * (shares[i] - shares[i - 1])
    return math.inf


def worth(runs: dict[tuple[float, str], dict[int, RunDraws]], key: str, seeds: list[int], group: str, group_real: int,
          label: str, level: float = 0.95, seed: int = 0, kept: dict[float, float] | None = None) -> dict[str, Any]:
    """How many real images of the group the synthetic set is worth, with its two-level interval and sentence.

    ``kept`` maps each share asked for to the share actually kept (strata round to whole images: a
    stratum of one image keeps it at 50 %); the curve is read on the shares actually kept.
    """
    shares = sorted({share for share, _ in runs})
    actual = [float((kept or {}).get(share, share)) for share in shares]  # ascending: removal is nested
    out: dict[str, Any] = {
        "method": "s* = the smallest share kept at which the real-only mean over seeds (linear between the shares "
                  "actually kept) "
                  "reaches the real + synthetic mean with none kept; worth s* x the group's real training images. "
                  "95 % two-level percentile bootstrap: seeds resampled (paired across arms and shares) and test images "
                  "within each group (the same rows for every run)",
        "share": None, "images": None, "interval_share": [None, None], "interval_images": [None, None],
        "group_real_images": group_real,
    }
    if 0.0 not in shares or len(shares) < 2 or (0.0, "mixed") not in runs:
        out["sentence"] = ("No headline: it needs the share 0 (real + synthetic with every real image of the group removed) "
                           "and at least one other share (downstream.ablate.keep).")
        return out
    mixed0, real0 = runs[(0.0, "mixed")], runs[(0.0, "real")]
    difference = paired_difference(mixed0, real0, key, level)
    real_means = [point(runs[(share, "real")], key)["mean"] for share in shares]
    mixed_mean = point(mixed0, key)["mean"]
    out.update(mixed_none_kept=mixed_mean, real_only_curve=dict(zip(map(str, shares), real_means)),
               share_kept=dict(zip(map(str, shares), actual)),
               difference_none_kept=difference)
    if mixed_mean is None or any(v is None for v in real_means) or difference["mean"] is None:
        out["sentence"] = f"No headline: {label} is undefined in some runs (too few test images of a class in the group)."
        return out
    n = difference["n"]
    said = (f"with all {group_real} real {group} training images removed, real + synthetic scores {label} {mixed_mean:.3f} "
            f"against real only {real_means[0]:.3f} (difference {difference['mean']:+.3f}, 95 % paired t-interval over "
            f"{n} seeds [{_signed(difference['low'])}, {_signed(difference['high'])}]")
    detectable = difference["low"] is not None and difference["low"] > 0
    if not detectable:
        verdict = "within noise" if difference["within_noise"] else ("worse" if difference["mean"] < 0 else "one seed")
        out["share"], out["images"] = 0.0, 0
        out["sentence"] = (f"The synthetic set is worth no real {group} training images that this study can detect: "
                           f"{said}, {verdict}).")
        return out
    star = crossing(actual, real_means, mixed_mean)
    # replicates: seeds resampled (paired across runs) and test images (the draws)
    draws = {name: np.vstack([by_seed[s].draws[key] for s in seeds]) for name, by_seed in runs.items()}  # (n_seeds, R)
    resamples = next(iter(draws.values())).shape[1]
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(seeds), size=(resamples, len(seeds)))  # (R, n_seeds)
    columns = np.arange(resamples)

    def means(name: tuple[float, str]) -> np.ndarray:
        picked = draws[name][chosen.T, columns]  # (n_seeds, R)
        with warnings.catch_warnings():  # a replicate where every chosen seed is undefined stays NaN, and is left out
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(picked, axis=0)

    real_curves = np.vstack([means((share, "real")) for share in shares])  # (K, R)
    targets = means((0.0, "mixed"))  # (R,)
    stars = []
    for r in range(resamples):
        if np.isnan(targets[r]) or np.isnan(real_curves[:, r]).any():
            continue
        stars.append(crossing(actual, list(real_curves[:, r]), float(targets[r])))
    low = high = None
    if 2 * len(stars) >= resamples:
        # a crossing beyond the largest share is +inf; quantiles of a finite stand-in keep it there
        finite = np.where(np.isinf(stars), 1e12, stars)
        low, high = (math.inf if q >= 1e12 else float(q) for q in np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]))
    top = max(actual)
    span = _span(low, high, group_real, top)
    # beyond the largest share is written as null with a flag (JSON has no infinity)
    out.update(share=None if math.isinf(star) else star, replicates=len(stars),
               interval_share=[low, None if high is None or math.isinf(high) else high],
               interval_beyond_largest_share=bool(high is not None and math.isinf(high)))
    out["images"] = None if math.isinf(star) else star * group_real
    out["interval_images"] = [None if v is None or math.isinf(v) else v * group_real for v in (low, high)]
    if math.isinf(star):
        out["sentence"] = (f"The synthetic set is worth more real {group} training images than the study kept: real only with "
                           f"{top:.0%} of them ({real_means[-1]:.3f}) stays below real + synthetic with none ({mixed_mean:.3f}); "
                           f"{said}, beyond noise).")
    else:
        out["sentence"] = (f"The synthetic set is worth about {star * group_real:.0f} real {group} training images "
                           f"({star:.0%} of the {group_real}; 95 % interval {span}): real only needs {star:.0%} of them "
                           f"to reach the {label} of real + synthetic with none; {said}, beyond noise).")
    return out


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _span(low: float | None, high: float | None, n: int, top: float) -> str:
    if low is None:
        return "not estimable (too few defined replicates)"
    upper = f"beyond {top:.0%} kept" if math.isinf(high) else f"{high:.0%} ({high * n:.0f} images)"
    return f"{low:.0%} ({low * n:.0f} images) to {upper}"


def ablate(config: DownstreamConfig, output: str | Path, log: Callable[[str], None] = print, sets: Sets | None = None) -> dict[str, Any]:
    """Run (or reuse) every share × arm × seed and write ``ablate.json``, ``ablate.md`` and ``ablate.png``."""
    output = Path(output)
    group = config.ablate.group
    headline_set = chosen_test_set(config, config.ablate.test_set, "downstream.ablate")
    if sets is None:
        if not config.synthetic or not Path(config.synthetic).is_file():
            raise AblationError(f"downstream.synthetic: {config.synthetic or '(not set)'} does not exist; the real + synthetic "
                                "arm needs the generated set (run `fairsynth generate` first)")
        sets = load_sets(config.real, config.synthetic, config.group_by, config.test_sets, config.oracle or None)
        for warning in check_sets(sets, config.real, config.synthetic):
            log(f"warning: {warning}")
    if not sets.synthetic:
        raise AblationError(f"the generated set {config.synthetic} has no images: real + synthetic is real only")
    is_member, group_key = group_matcher(sets, group, config.group_by)
    members = [s for s in sets.train if is_member(s)]
    if not members:
        raise AblationError(f"downstream.ablate.group: the training split has no {group} image: there is nothing to remove")
    check_every_class_keeps_an_image(sets.train, is_member, group, config.ablate.keep)
    if len(config.seeds) < 3:
        log(f"warning: {len(config.seeds)} seed(s): intervals over seeds need at least 3 to mean much")
    points, arms, held = plan_points(config, sets, output, is_member)
    # writes a kill interrupted: in the ablation's runs, and its own files beside the comparison's
    remove_temporaries(output / "ablate")
    remove_temporaries(output, recursive=False)
    if not sets.oracle:
        log("no oracle arm: the data is not a procedural world (downstream.oracle is not set)")
    for name, pt in points.items():
        for seed in config.seeds:
            run_point(pt, seed, log)
    summaries, headline_runs = {}, None
    for name in [None, *sets.external]:
        summary, runs = summarise_test_set(points, arms, config, name, group_key)
        summaries[test_set_label(name)] = summary
        if name == headline_set:
            headline_runs = runs
    label = f"AUROC {group}"
    # the share each asked share actually kept (every stratum rounds to whole images), the same for every seed and arm
    kept = {share: pt.info["group_real_kept"] / len(members) for (share, _), pt in points.items()}
    result = {
        "what": f"real training images of group {group} removed, the rest kept; real only, real + synthetic"
                + (" and the oracle" if "oracle" in arms else "") + " at each share kept, every seed",
        "group": group, "group_by": config.group_by, "group_number": group_key,
        "keep": [float(k) for k in config.ablate.keep], "arms": arms, "arm_labels": {a: ARM_LABELS[a] for a in arms},
        "seeds": list(config.seeds),
        "group_real_training_images": len(members),
        "group_real_by_class": dict(sorted(Counter(s.label for s in members).items())),
        "real_training_images": len(sets.train),
        "removal": "per run seed, stratified by class and skin type within the group (each stratum keeps round(share x n), "
                   "half up), nested: a smaller share keeps a subset of a larger one's images",
        "held_fixed": held,
        "oracle": "true world images of the synthetic set's cells, chosen as the mixed arm chooses" if "oracle" in arms
                  else "not run: the data is not a procedural world",
        "settings": {"epochs": config.ablate.epochs or config.epochs, "backbone": config.backbone,
                     "image_size": config.image_size},
        "points": [{"keep": share, "arm": arm, "folder": str(pt.folder), **pt.info} for (share, arm), pt in points.items()],
        "kept": [{"keep": share, "group_real_kept": pt.info["group_real_kept"], "share_kept": kept[share]}
                 for (share, arm), pt in points.items() if arm == "real"],
        "headline_test_set": test_set_label(headline_set),
        "intervals": {
            "level": 0.95,
            "point_over_seeds": "mean over seeds, sd, and a Student t-interval of the mean (n - 1 df)",
            "point_over_test_images": f"{TEST_IMAGE_BOOTSTRAP}, of the mean over seeds",
            "difference": f"arm - real only at the same share: {PAIRED_TEST}; and {TEST_IMAGE_BOOTSTRAP}",
        },
        "test_sets": summaries,
    }
    result["worth"] = worth(headline_runs, group_key, list(config.seeds), group, len(members), label,
                            seed=config.seeds[0], kept=kept)
    output.mkdir(parents=True, exist_ok=True)
    from fairsynth.downstream.plots import ablate_figure

    atomic_write_bytes(output / "ablate.png", ablate_figure(result))
    atomic_write_text(output / "ablate.md", render_ablation(result))
    # ablate.json last: its presence says the ablation is complete
    atomic_write_text(output / "ablate.json", json.dumps(result, indent=1, default=_json_number, allow_nan=False) + "\n")
    return result


def _json_number(value: Any) -> Any:
    return float(value)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def render_ablation(result: dict[str, Any]) -> str:
    """ablate.md: the headline sentence, what was removed and held, and per test set the numbers
    per share and arm with the differences from real only, each with the line naming the tests."""
    from fairsynth.downstream.curve import fmt_point

    group = result["group"]
    lines = [f"# How many real {group} images is the synthetic set worth?", "", f"**{result['worth']['sentence']}**", ""]
    lines.append(f"Headline on {result['headline_test_set']}; {result['worth']['method']}.")
    lines.append("")
    by_class = ", ".join(f"{k} {v}" for k, v in result["group_real_by_class"].items())
    lines.append(
        f"{result['group_real_training_images']} of the {result['real_training_images']} real training images are {group} "
        f"({by_class}); at each share kept, that share of them stays ({result['removal']}) and every other real image "
        f"too. Real + synthetic adds {result['held_fixed']['synthetic_images']} synthetic images "
        f"({', '.join(f'{g} {n}' for g, n in result['held_fixed']['synthetic_by_group'].items())}): "
        f"{result['held_fixed']['how']}. Oracle: {result['oracle']}. {result['settings']['epochs']} epochs per run; seeds "
        f"{', '.join(map(str, result['seeds']))}."
    )
    order = [result["headline_test_set"], *[n for n in result["test_sets"] if n != result["headline_test_set"]]]
    kept = {entry["keep"]: entry["group_real_kept"] for entry in result.get("kept", [])}

    def share(keep: float) -> str:
        return f"{keep:.0%}" + (f" ({kept[keep]} of {result['group_real_training_images']})" if keep in kept else "")

    for name in order:
        part = result["test_sets"][name]
        lines += ["", f"## {name}{' (the headline and the plot)' if name == result['headline_test_set'] else ''}", ""]
        numbers = part["numbers"]
        header = ["share kept", "arm", *[n["label"] + (" ↑" if n["higher_is_better"] else " ↓") for n in numbers.values()]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        first = next(iter(numbers.values()))["values"]
        for index, value in enumerate(first):
            cells = [share(value["keep"]), result["arm_labels"][value["arm"]]]
            cells += [fmt_point(n["values"][index]) for n in numbers.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Mean ± sd over seeds [95 % t-interval over seeds].", ""]
        header = ["share kept", "arm", *[f"{n['label']} − real only" for n in numbers.values()]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for index, value in enumerate(first):
            if value["arm"] == "real":
                continue
            cells = [share(value["keep"]), result["arm_labels"][value["arm"]]]
            cells += [format_difference(n["values"][index]["delta_vs_real_only"]) for n in numbers.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Compared on: {part['tests']['description']}.", ""]
    return "\n".join(lines).rstrip() + "\n"
