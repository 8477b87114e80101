"""The report's figures: each with a text alternative in numbers, a stable anchor and its data file
beside the page holding the numbers of the study's files; the full tables collapsed below; the
ratio curve and the ablation when those stages ran."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from fairsynth.report import build_report
from tests.report.conftest import copy_study

#: The data figures of the tiny study and the section each belongs to.
FIGURES = {"forest": "verdict", "forest-test-split": "downstream", "synthetic-cells": "generated",
           "metrics-per-group": "metrics"}


@pytest.fixture(scope="module")
def page(study) -> str:
    return (study / "report" / "index.html").read_text(encoding="utf-8")


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _section(page: str, id_: str) -> str:
    return page.split(f'<section id="{id_}"')[1].split("</section>")[0]


def _figure(page: str, id_: str) -> str:
    return page.split(f'<figure id="figure-{id_}">')[1].split("</figure>")[0]


def test_every_data_figure_has_its_anchor_text_alternative_and_files(study, page):
    for id_, section in FIGURES.items():
        assert f'<figure id="figure-{id_}">' in _section(page, section), id_
        figure = _figure(page, id_)
        alt = re.search(r'alt="([^"]*)"', figure).group(1)
        assert len(alt) > 80 and len(re.findall(r"\d+", alt)) > 10, (id_, alt)  # says what it shows, in numbers
        assert f'href="figures/{id_}.csv"' in figure and f'href="figures/{id_}.png"' in figure
        data, png = study / "report" / "figures" / f"{id_}.csv", study / "report" / "figures" / f"{id_}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _rows(data)
    # every image of the page says what it shows
    assert all(alt.strip() for alt in re.findall(r'<img [^>]*alt="([^"]*)"', page))
    assert len(re.findall(r"<img ", page)) == len(re.findall(r'<img [^>]*alt="[^"]+"', page))


def test_the_forest_plots_data_are_the_comparisons_numbers(study):
    compare = json.loads((study / "downstream" / "compare.json").read_text())
    name, tested = next(iter(compare["test_sets"].items()))
    rows = _rows(study / "report" / "figures" / "forest.csv")
    assert {r["test_set"] for r in rows} == {name}
    assert {r["arm"] for r in rows} == set(compare["arms"])
    row = next(r for r in rows if r["arm"] == "mixed" and r["group"] == "V-VI")
    summary = tested["table"]["auroc.V-VI"]["arms"]["mixed"]
    assert float(row["mean"]) == pytest.approx(summary["mean"], abs=1e-12)
    half = stats.t.ppf(0.975, summary["n"] - 1) * summary["sd"] / math.sqrt(summary["n"])  # 95 % t-interval over seeds
    assert float(row["low"]) == pytest.approx(summary["mean"] - half) and float(row["high"]) == pytest.approx(summary["mean"] + half)
    delta = tested["table"]["auroc.V-VI"]["delta_vs_real"]["mixed"]
    assert [float(row[k]) for k in ("difference_from_real", "difference_low", "difference_high")] == pytest.approx(
        [delta["mean"], delta["low"], delta["high"]])
    assert row["within_noise"] == str(delta["within_noise"])
    gap = next(r for r in rows if r["arm"] == "real" and r["group"] == "gap")
    assert float(gap["mean"]) == pytest.approx(tested["table"]["auroc_gap"]["arms"]["real"]["mean"])
    assert gap["difference_from_real"] == ""  # real against itself: no difference
    split = _rows(study / "report" / "figures" / "forest-test-split.csv")
    assert {r["test_set"] for r in split} == {"test split"}
    assert float(next(r for r in split if r["arm"] == "real" and r["group"] == "I-II")["mean"]) == pytest.approx(
        compare["table"]["auroc.I-II"]["arms"]["real"]["mean"])


def test_the_cells_and_metrics_data_are_the_generation_and_evaluation_numbers(study):
    report = json.loads((study / "generated" / "report.json").read_text())
    rows = {(r["class"], r["skin_type"]): r for r in _rows(study / "report" / "figures" / "synthetic-cells.csv")}
    roman = ["I", "II", "III", "IV", "V", "VI"]
    for cell in report["cells"]:
        label, fst = cell["cell"].split("/fst=")
        row = rows[(label, roman[int(fst) - 1])]
        assert (int(row["target"]), int(row["delivered"])) == (cell["target"], cell["selected"])
        truth = report["truth"]["cells"].get(f"{label}|{fst}")
        if truth is not None:
            assert float(row["judge_read_as_asked"]) == pytest.approx(truth["class_as_asked"])
            assert int(row["judge_images"]) == truth["delivered"]
    evaluation = json.loads((study / "evaluation" / "evaluation.json").read_text())
    rows = _rows(study / "report" / "figures" / "metrics-per-group.csv")
    fd = next(r for r in evaluation["results"] if r["metric"] == "fd" and r["group_by"] == "fst" and r["group"] == "5")
    row = next(r for r in rows if r["value_name"] == "fd" and r["group"] == "V")
    assert [float(row[k]) for k in ("value", "ci_low", "ci_high")] == pytest.approx([fd["value"], fd["ci_low"], fd["ci_high"]])
    assert next(r for r in rows if r["value_name"] == "fd" and r["group"] == "VI")["value"] == ""  # undefined: no bar


def test_full_tables_stay_collapsed_below_their_figures(page):
    for id_, caption in (("metrics", "Grouped by overall"), ("generated", "The truth per class × skin-type cell"),
                         ("downstream", "downstream/compare.json"), ("data", "Counts (prepared/counts.csv)")):
        section = _section(page, id_)
        assert re.search(r"<details><summary>Table: " + re.escape(caption), section), (id_, caption)
        assert section.index("<figure") < section.index("<details>")


def test_the_contents_link_every_section_by_a_stable_anchor(page):
    nav = page.split('<nav aria-label="Contents">')[1].split("</nav>")[0]
    targets = re.findall(r'href="#([^"]+)"', nav)
    assert targets == re.findall(r'<section id="([^"]+)"', page)
    assert targets[:2] == ["verdict", "downstream"]
    for target in targets:
        assert f'<a class="self" href="#{target}"' in page


def _point(mean: float, sd: float, delta: float | None) -> dict:
    """One point of curve.json / ablate.json as `fairsynth downstream curve|ablate` writes it."""
    return {"per_seed": {"0": mean - sd, "1": mean + sd}, "n": 2, "mean": mean, "sd": sd,
            "seed_interval": [mean - 2 * sd, mean + 2 * sd], "test_image_interval": [mean - sd / 2, mean + sd / 2],
            "delta_vs_real_only": None if delta is None else {
                "mean": delta, "low": delta - 0.05, "high": delta + 0.05, "within_noise": abs(delta) < 0.05, "n": 2}}


def curve_json() -> dict:
    ratios = [0.0, 0.5, 1.0]
    numbers = {
        f"auroc.{g}": {"label": f"AUROC {g}", "higher_is_better": True,
                       "values": [{"ratio": r, "achieved_ratio": r, **_point(base + 0.02 * k, 0.01, None if r == 0 else 0.02 * k)}
                                  for k, r in enumerate(ratios)]}
        for g, base in (("I-II", 0.9), ("III-IV", 0.85), ("V-VI", 0.7))
    }
    numbers["auroc_gap"] = {"label": "AUROC gap", "higher_is_better": False,
                            "values": [{"ratio": r, "achieved_ratio": r, **_point(0.2 - 0.03 * k, 0.01, None if r == 0 else -0.03 * k)}
                                       for k, r in enumerate(ratios)]}
    return {"ratios": [0.5, 1.0], "seeds": [0, 1], "real_training_images": 60, "synthetic_available": 40,
            "shortfall": "the generated set holds 40 images; ratio 1 needs 60",
            "points": [{"ratio": 0.0, "status": "run", "achieved_ratio": 0.0}, {"ratio": 0.5, "status": "run", "achieved_ratio": 0.5},
                       {"ratio": 1.0, "status": "short", "achieved_ratio": 0.667}],
            "headline_test_set": "world-test", "test_sets": {"world-test": {"numbers": numbers}}}


def ablate_json() -> dict:
    values = [{"keep": keep, "arm": arm, **_point(mean, 0.01, None if arm == "real" else mean - real)}
              for keep, real in ((1.0, 0.74), (0.5, 0.7), (0.0, 0.61))
              for arm, mean in (("real", real), ("mixed", real + 0.05), ("oracle", real + 0.08))]
    return {"group": "V-VI", "group_number": "auroc.V-VI", "keep": [1.0, 0.5, 0.0], "arms": ["real", "mixed", "oracle"],
            "arm_labels": {"real": "real only", "mixed": "real + synthetic", "oracle": "real + true images (oracle)"},
            "seeds": [0, 1], "headline_test_set": "world-test",
            "test_sets": {"world-test": {"numbers": {"auroc.V-VI": {"label": "AUROC V-VI", "higher_is_better": True,
                                                                    "values": values}}}},
            "worth": {"share": 0.55, "mixed_none_kept": 0.66, "sentence": "The synthetic set is worth about 8 real V-VI "
                      "training images (55 % of the 14; 95 % interval 20 % (3 images) to 90 % (13 images))."}}


def test_the_ratio_curve_and_the_ablation_are_drawn_when_they_ran(study, tmp_path):
    work = copy_study(study, tmp_path / "p", "prepared", "generated", "downstream")
    page = build_report(work).read_text(encoding="utf-8")
    assert 'id="figure-ratio-curve"' not in page and 'id="figure-ablation"' not in page  # they did not run
    curve, ablation = curve_json(), ablate_json()
    (work / "downstream" / "curve.json").write_text(json.dumps(curve))
    (work / "downstream" / "ablate.json").write_text(json.dumps(ablation))
    page = build_report(work).read_text(encoding="utf-8")
    section = _section(page, "downstream")
    for id_ in ("ratio-curve", "ablation"):
        assert f'<figure id="figure-{id_}">' in section
    assert "ratio 0.5 0.920" in re.search(r'alt="([^"]*)"', _figure(page, "ratio-curve")).group(1)
    assert "the generated set holds 40 images; ratio 1 needs 60" in page
    rows = _rows(work / "report" / "figures" / "ratio-curve.csv")
    row = next(r for r in rows if r["number"] == "AUROC V-VI" and r["ratio"] == "1.0")
    value = curve["test_sets"]["world-test"]["numbers"]["auroc.V-VI"]["values"][2]
    assert [float(row[k]) for k in ("mean", "seed_low", "seed_high", "difference_from_real_only")] == pytest.approx(
        [value["mean"], *value["seed_interval"], value["delta_vs_real_only"]["mean"]])
    rows = _rows(work / "report" / "figures" / "ablation.csv")
    assert len(rows) == 9 and {r["arm"] for r in rows} == {"real", "mixed", "oracle"}
    assert float(next(r for r in rows if r["arm"] == "oracle" and r["keep"] == "0.0")["mean"]) == pytest.approx(0.69)
    # the ablation's headline sentence is part of the verdict, as the study wrote it
    assert f'id="verdict-worth" data-verdict="worth">{ablation["worth"]["sentence"]}</p>' in page
