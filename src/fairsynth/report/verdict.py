"""The study's answer in a few sentences, computed from its own files: the report's first screen
and the last lines of `fairsynth run` / `fairsynth demo`.

The question a study is run for: did the synthetic data make the classifier better, and fairer
on the skin types that were rare? One sentence each, with numbers and 95 % intervals:

1. the mixed arm (real + synthetic) against real only, overall (macro AUROC);
2. the same on the rarest skin-type group, and the AUROC gap between groups;
3. how much of the oracle's effect it reaches (where the study has an oracle arm), and, where
   the ablation ran, how many real images of the group the synthetic set is worth;
4. how full and how faithful the synthetic set is (cells filled, the world's judge on V–VI);
5. what to be careful about (few seeds, the widest interval, empty cells, memorised images).

Every difference is read from ``downstream/compare.json`` (paired over seeds, with its 95 %
t-interval); a difference whose interval holds 0 is said to be within noise. The comparison is
read on the headline test set: the first external test set when there is one (the demo's
balanced test world), else the in-distribution test split — the rule of the downstream
protocols. A study without a downstream stage says so and what it can say instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fairsynth.report.collect import StudyOutputs

#: Skin-type groups of the downstream comparison (DDI's) and the types each holds.
DDI_TYPES = {"I-II": ("I", "II"), "III-IV": ("III", "IV"), "V-VI": ("V", "VI")}
ROMAN = ("I", "II", "III", "IV", "V", "VI")
#: The arm whose effect the verdict is about, first found wins, and how a reader names it.
TREATED_ARMS = {
    "mixed": "real + synthetic (mixed)",
    "hybrid": "real + images generated during training (hybrid)",
    "synthetic": "synthetic only",
}
#: Below this many seeds an interval over seeds is wide by construction: say so.
MIN_SEEDS = 3
#: Test images of the rarest group below which its AUROC is fragile.
MIN_GROUP_TEST_IMAGES = 50
#: Judge agreement on V–VI below which the synthetic images may not show what they are labelled.
MIN_JUDGE_AGREEMENT = 0.8
#: z of a two-sided 95 % interval (the judge's agreement, a proportion: Wilson score interval).
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Sentence:
    """One sentence of the verdict; ``key`` is stable (the page's anchor ``verdict-<key>``)."""

    key: str
    text: str


# --------------------------------------------------------------------------------------
# Reading the comparison
# --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The downstream comparison on its headline test set."""

    name: str  # how the sentences name the test set
    key: str  # its key in compare.json's oracle_share ("test split" or the external name)
    table: dict[str, Any]
    images: int | None
    images_by_group: dict[str, int]  # DDI group -> test images
    arms: list[str]
    seeds: list[Any]


def _ddi_counts(by_type: dict[str, Any]) -> dict[str, int]:
    """Images per DDI group from images per skin type (keys ``I``.. or ``FST I``..)."""
    out = {}
    for group, types in DDI_TYPES.items():
        found = [by_type.get(t, by_type.get(f"FST {t}")) for t in types]
        if any(isinstance(n, (int, float)) for n in found):
            out[group] = int(sum(n for n in found if isinstance(n, (int, float))))
    return out


def comparison(study: StudyOutputs) -> Comparison | None:
    """The comparison on the headline test set; None without ``downstream/compare.json``."""
    compare = study.downstream
    if compare is None:
        return None
    arms = [str(a) for a in compare.get("arms") or []]
    seeds = list(compare.get("seeds") or [])
    external = compare.get("test_sets") or {}
    if external:
        name, part = next(iter(external.items()))
        return Comparison(f"the external test set {name}", name, part.get("table") or {}, part.get("images"),
                          _ddi_counts(part.get("images_by_group") or {}), arms, seeds)
    return test_split(study)


def test_split(study: StudyOutputs) -> Comparison:
    """The comparison on the in-distribution test split (test images per group from a run's metrics)."""
    compare = study.downstream or {}
    run = next((run for by_seed in study.downstream_runs.values() for run in by_seed.values()), {})
    groups = {group: info["samples"] for group, info in
              (((run.get("metrics") or {}).get("per_ddi_group") or {}).get("groups") or {}).items()
              if isinstance(info, dict) and isinstance(info.get("samples"), int)}
    return Comparison("the test split", "test split", compare.get("table") or {}, compare.get("test_images"), groups,
                      [str(a) for a in compare.get("arms") or []], list(compare.get("seeds") or []))


def treated_arm(arms: list[str]) -> str | None:
    """The arm the verdict is about: mixed, else hybrid, else synthetic only."""
    return next((arm for arm in TREATED_ARMS if arm in arms), None)


def rarest_group(study: StudyOutputs, table: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """The skin-type group (DDI's) with the fewest prepared images among those the comparison
    reports: (group, its images, all images); V-VI with unknown counts when there are no counts."""
    groups = [g for g in DDI_TYPES if f"auroc.{g}" in table]
    if not groups:
        return None, None, None
    counts = study.counts
    by_group: dict[str, int] = {}
    total = None
    if counts is not None and "total" in counts.index:
        row = counts.loc["total"]
        by_group = _ddi_counts({str(k): int(v) for k, v in row.items()})
        total = int(row["total"]) if "total" in row.index else int(row.sum())
    elif study.real:
        by_type: dict[str, int] = {}
        for record in study.real:
            fst = record.get("fst")
            if isinstance(fst, int) and 1 <= fst <= 6:
                by_type[ROMAN[fst - 1]] = by_type.get(ROMAN[fst - 1], 0) + 1
        by_group, total = _ddi_counts(by_type), len(study.real)
    known = [g for g in groups if g in by_group]
    if not known:
        return ("V-VI" if "V-VI" in groups else groups[-1]), None, None
    group = min(known, key=lambda g: (by_group[g], -groups.index(g)))
    return group, by_group[group], total


# --------------------------------------------------------------------------------------
# Words for numbers
# --------------------------------------------------------------------------------------


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def difference(delta: dict[str, Any] | None, higher_is_better: bool) -> tuple[str, str]:
    """``(numbers, verdict)`` of a paired difference: ``+0.040 (95 % interval +0.012 to +0.068,
    paired over 3 seeds)`` — with the bootstrap interval over test images where the comparison has
    one — and one of better / worse (beyond noise), within noise (``within noise over seeds`` beside
    a test-image interval), one seed, undefined. The verdict is the t-interval's over seeds, as in
    compare.md."""
    if not delta or delta.get("mean") is None:
        return "undefined", "undefined"
    mean = float(delta["mean"])
    if delta.get("low") is None or delta.get("high") is None:
        return f"{mean:+.3f} from one seed, no interval", "one seed"
    n = delta.get("n")
    images = delta.get("test_images") or {}
    over_images = (f"; over test images {signed(images['low'])} to {signed(images['high'])}"
                   if images.get("low") is not None and images.get("high") is not None else "")
    numbers = (f"{mean:+.3f} (95 % interval {signed(delta['low'])} to {signed(delta['high'])}"
               + (f", paired over {n} seeds" if n else "") + over_images + ")")
    if delta.get("within_noise", delta["low"] <= 0 <= delta["high"]):
        return numbers, "within noise over seeds" if over_images else "within noise"
    return numbers, "better" if (mean > 0) == higher_is_better else "worse"


def mean_of(table: dict[str, Any], key: str, arm: str) -> float | None:
    value = ((table.get(key) or {}).get("arms") or {}).get(arm, {}).get("mean")
    return None if value is None else float(value)


def wilson(share: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``share`` of ``n`` (Wilson 1927)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (share + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * math.sqrt(share * (1 - share) / n + Z95 ** 2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


# --------------------------------------------------------------------------------------
# The sentences
# --------------------------------------------------------------------------------------


def _overall(c: Comparison, arm: str, rarest: str | None) -> Sentence:
    row = c.table.get("macro_auroc") or {}
    numbers, verdict = difference((row.get("delta_vs_real") or {}).get(arm), True)
    mixed, real = mean_of(c.table, "macro_auroc", arm), mean_of(c.table, "macro_auroc", "real")
    rare = f", {c.images_by_group[rarest]} of them {rarest}" if rarest and rarest in c.images_by_group else ""
    where = (f"on {c.name} ({c.images} images{rare}; {len(c.seeds)} seed{'s' if len(c.seeds) != 1 else ''})"
             if c.images is not None else f"on {c.name}")
    said = {"better": "beats", "worse": "does worse than", "within noise": "is level with",
            "within noise over seeds": "is level with", "one seed": "differs from",
            "undefined": "cannot be compared with"}[verdict]
    values = f"macro AUROC {_num(mixed)} against {_num(real)}, a difference of {numbers}"
    tail = {"within noise": ": within noise", "within noise over seeds": ": within noise over seeds",
            "one seed": ": one seed cannot tell it from noise",
            "undefined": " (undefined: too few test images of a class)"}.get(verdict, ", beyond noise")
    return Sentence("overall", f"Overall, {TREATED_ARMS[arm]} {said} real only {where}: {values}{tail}.")


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _rarest(c: Comparison, arm: str, group: str | None, prepared: int | None, total: int | None) -> Sentence:
    if group is None:
        return Sentence("rarest", "The comparison reports no AUROC per skin-type group (downstream/compare.json has no "
                                  "auroc.I-II, auroc.III-IV or auroc.V-VI): fairness across skin types is not measured.")
    key = f"auroc.{group}"
    numbers, verdict = difference(((c.table.get(key) or {}).get("delta_vs_real") or {}).get(arm), True)
    share = f" ({prepared} of the {total} prepared images)" if prepared is not None and total else ""
    said = {"better": "better, beyond noise", "worse": "worse, beyond noise",
            "one seed": "one seed cannot tell it from noise"}.get(verdict, verdict)
    text = (f"On the rarest skin-type group, {group}{share}: AUROC {_num(mean_of(c.table, key, arm))} against "
            f"{_num(mean_of(c.table, key, 'real'))} for real only, {numbers}: {said}")
    gap = c.table.get("auroc_gap")
    if gap:
        numbers, verdict = difference((gap.get("delta_vs_real") or {}).get(arm), False)
        before, after = mean_of(c.table, "auroc_gap", "real"), mean_of(c.table, "auroc_gap", arm)
        moved = "narrows" if verdict == "better" else "widens" if verdict == "worse" else "goes"
        said = {"better": "fairer, beyond noise", "worse": "less fair, beyond noise"}.get(verdict, verdict)
        text += (f"; the AUROC gap between the best and the worst group {moved} from {_num(before)} to {_num(after)}, "
                 f"{numbers}: {said}")
    return Sentence("rarest", text + ".")


def _oracle(study: StudyOutputs, c: Comparison, arm: str, group: str | None) -> Sentence:
    if "oracle" not in c.arms:
        why = ("the data is not a procedural world, so there are no true images of the synthetic set's cells"
               if study.recipe is not None and not study.recipe.get("world") else "downstream.arms has no oracle")
        return Sentence("oracle", f"No oracle arm in this comparison ({why}): how much of the achievable gain the "
                                  "synthetic data reaches is not measured.")
    shares = (((study.downstream or {}).get("oracle_share") or {}).get(c.key) or {}).get("arms", {}).get(arm) or {}
    parts = []
    for key in (f"auroc.{group}" if group else None, "auroc_gap", "macro_auroc"):
        entry = shares.get(key) if key else None
        if not entry or len(parts) == 2:
            continue
        low, high = entry.get("oracle_effect_interval") or [None, None]
        oracle = f"{signed(entry.get('oracle_effect'))}" + (f" (95 % interval {signed(low)} to {signed(high)})" if low is not None else "")
        said = f"on {entry.get('label', key)}, {arm} moves {signed(entry.get('effect'))} from real only and the oracle {oracle}"
        if entry.get("share") is None:
            parts.append(f"{said}: the oracle's own effect is within noise, so there is no share to measure")
        else:
            s_low, s_high = entry.get("share_interval") or [None, None]
            interval = f" (95 % interval {percent(s_low)} to {percent(s_high)})" if s_low is not None else ""
            parts.append(f"{said}: {percent(entry['share'])} of the oracle's effect{interval}")
    if not parts:
        return Sentence("oracle", f"The oracle arm ran, but compare.json holds no share of its effect for {arm} on {c.name}.")
    return Sentence("oracle", "Against the oracle (real + true images of the synthetic set's cells, the ceiling): "
                              + "; ".join(parts) + ".")


def _worth(study: StudyOutputs) -> Sentence | None:
    worth = ((study.ablation or {}).get("worth") or {}).get("sentence")
    return Sentence("worth", str(worth)) if worth else None


def cells(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The generation's class × attribute cells with a target (the 'total' row left out)."""
    return [c for c in report.get("cells") or [] if isinstance(c, dict) and c.get("cell") != "total" and (c.get("target") or 0) > 0]


def _synthetic(study: StudyOutputs) -> Sentence:
    generation = study.generation
    if generation is None:
        return Sentence("synthetic", "No synthetic set in this study (generated/report.json is absent): nothing was "
                                     "generated to judge.")
    report = generation.report
    planned = cells(report)
    full = sum(1 for c in planned if (c.get("selected") or 0) >= c["target"])
    empty = [c["cell"] for c in planned if not c.get("selected")]
    delivered, target = report.get("delivered") or 0, report.get("target") or 0
    text = (f"The synthetic set holds {delivered} of the {target} images asked for ({percent(delivered / target) if target else '—'}); "
            f"{full} of its {len(planned)} class × skin-type cells are full"
            + (f", {len(empty)} empty" if empty else ", none empty"))
    truth = report.get("truth")
    if truth and truth.get("delivered_V_VI"):
        n, share = int(truth["delivered_V_VI"]), float(truth.get("class_as_asked_V_VI") or 0.0)
        low, high = wilson(share, n)
        text += (f"; the world's judge reads the asked class in {percent(share)} of the {n} delivered V–VI images "
                 f"(95 % interval {percent(low)} to {percent(high)}) and in {percent(truth.get('class_as_asked'))} of all "
                 f"{truth.get('delivered')}")
    elif truth:
        text += "; no V–VI image was delivered for the world's judge to read"
    else:
        text += "; no judge of the truth read them (only a procedural world has one): see the metrics per group"
    return Sentence("synthetic", text + ".")


def _fidelity(study: StudyOutputs) -> Sentence | None:
    """Without a downstream stage: where the synthetic set is farthest from the real images."""
    evaluation = study.evaluation
    if not evaluation:
        return None
    rows = [r for r in evaluation.get("results") or [] if r.get("on") == "real vs synthetic" and r.get("value") is not None
            and r.get("higher_is_better") is not None]
    for grouping in ("fst", "fst_group"):
        for name in ("fd", "cmmd", "cmmd_unbiased", "kid"):
            groups = [r for r in rows if r.get("value_name") == name and r.get("group_by") == grouping]
            overall = next((r for r in rows if r.get("value_name") == name and r.get("group_by") == "overall"), None)
            if not groups or overall is None:
                continue
            worst = max(groups, key=lambda r: r["value"]) if not overall["higher_is_better"] else min(groups, key=lambda r: r["value"])
            label = worst.get("display") or name
            group = _group_name(grouping, worst.get("group"))
            return Sentence("fidelity", (
                f"By skin type, {label} puts the synthetic set farthest from the real images on {group}: "
                f"{worst['value']:.3g}{_ci(worst)} against {overall['value']:.3g}{_ci(overall)} overall "
                "(evaluation/evaluation.json)."))
    return None


def _group_name(grouping: str, group: Any) -> str:
    if grouping == "fst" and str(group).isdigit() and 1 <= int(group) <= 6:
        return f"FST {ROMAN[int(group) - 1]}"
    return str(group)


def _ci(row: dict[str, Any]) -> str:
    if row.get("ci_low") is None or row.get("ci_high") is None:
        return ""
    return f" (95 % interval {row['ci_low']:.3g} to {row['ci_high']:.3g})"


def _caution(study: StudyOutputs, c: Comparison | None, arm: str | None, group: str | None) -> Sentence:
    items = []
    if c is not None and arm is not None:
        if len(c.seeds) < MIN_SEEDS:
            items.append(f"{len(c.seeds)} seed{'s' if len(c.seeds) != 1 else ''} only, so every interval over seeds is wide")
        widest = None
        for key in [f"auroc.{g}" for g in DDI_TYPES] + ["macro_auroc", "auroc_gap"]:
            delta = ((c.table.get(key) or {}).get("delta_vs_real") or {}).get(arm) or {}
            if delta.get("low") is not None and delta.get("high") is not None:
                width = delta["high"] - delta["low"]
                if widest is None or width > widest[0]:
                    widest = (width, (c.table.get(key) or {}).get("label", key), delta)
        if widest is not None:
            items.append(f"the widest interval is that of {widest[1]} ({arm} − real: {signed(widest[2]['low'])} to "
                         f"{signed(widest[2]['high'])}, {widest[0]:.2f} wide)")
        if group and group in c.images_by_group and c.images_by_group[group] < MIN_GROUP_TEST_IMAGES:
            items.append(f"{c.name} holds only {c.images_by_group[group]} {group} images")
    generation = study.generation
    if generation is not None:
        planned = cells(generation.report)
        empty = [c_["cell"] for c_ in planned if not c_.get("selected")]
        short = [c_["cell"] for c_ in planned if 0 < (c_.get("selected") or 0) < c_["target"]]
        if empty:
            items.append(f"{len(empty)} cell{'s' if len(empty) != 1 else ''} of the synthetic set "
                         f"{'are' if len(empty) != 1 else 'is'} empty ({_list(empty)})")
        elif short:
            items.append(f"{len(short)} cell{'s' if len(short) != 1 else ''} of the synthetic set "
                         f"{'are' if len(short) != 1 else 'is'} short of target ({_list(short)})")
        truth = generation.report.get("truth") or {}
        if truth.get("delivered_V_VI") and (truth.get("class_as_asked_V_VI") or 0) < MIN_JUDGE_AGREEMENT:
            items.append(f"the judge reads the asked class in only {percent(truth.get('class_as_asked_V_VI'))} of the V–VI "
                         "synthetic images, which may not show what they are labelled")
        memorised = len(generation.report.get("memorised") or [])
        if memorised:
            items.append(f"the memorisation filter rejected {memorised} candidate{'s' if memorised != 1 else ''} as "
                         "copies of training images")
    flagged = sum(1 for cases in ((study.evaluation or {}).get("memorisation_worst") or {}).values()
                  for case in cases if case.get("memorised"))
    if flagged:
        items.append(f"the evaluation flags {flagged} delivered image{'s' if flagged != 1 else ''} as memorised")
    if any(r.get("test_only") for r in (study.evaluation or {}).get("results") or []):
        items.append("some metrics ran on random test-only weights")
    if not items:
        return Sentence("caution", "Nothing stands out to be careful about: no interval is flagged, every cell is "
                                   "filled and no image was flagged as memorised.")
    return Sentence("caution", "Be careful: " + "; ".join(items) + ".")


def _list(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _without_downstream(study: StudyOutputs) -> list[Sentence]:
    out = [Sentence("downstream", "No downstream comparison in this study (downstream/compare.json is absent): whether "
                                  "the synthetic data makes a classifier better, or fairer on the rare skin types, is "
                                  "not measured here.")]
    fidelity = _fidelity(study)
    if fidelity is not None:
        out.append(fidelity)
    if study.generation is None and study.counts is not None and "total" in study.counts.index:
        row = study.counts.loc["total"]
        by_group = _ddi_counts({str(k): int(v) for k, v in row.items()})
        if by_group:
            group = min(by_group, key=lambda g: by_group[g])
            total = int(row["total"]) if "total" in row.index else int(row.sum())
            out.append(Sentence("data", f"The prepared data holds {total} images; the rarest skin-type group, {group}, "
                                        f"holds {by_group[group]} ({percent(by_group[group] / total if total else None)})."))
    return out


def verdict(study: StudyOutputs) -> list[Sentence]:
    """The verdict's sentences for the study's outputs, in reading order."""
    c = comparison(study)
    arm = treated_arm(c.arms) if c is not None else None
    group = None
    if c is None:
        sentences = _without_downstream(study)
    elif "real" not in c.arms or arm is None:
        sentences = [Sentence("downstream", f"The comparison ran the arms {', '.join(c.arms) or '(none)'}: without real only "
                                            "beside an arm with synthetic data there is no effect of synthetic data to read.")]
    else:
        group, prepared, total = rarest_group(study, c.table)
        sentences = [_overall(c, arm, group), _rarest(c, arm, group, prepared, total), _oracle(study, c, arm, group)]
        worth = _worth(study)
        if worth is not None:
            sentences.append(worth)
    sentences.append(_synthetic(study))
    sentences.append(_caution(study, c, arm, group))
    return sentences
