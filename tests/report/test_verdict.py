"""The verdict: sentences computed from the study's files (never typed in), 'within noise' when an
interval holds 0, what a study without a downstream stage can say, and the same sentences at the
end of `fairsynth demo` and `fairsynth report`."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.report import build_report
from fairsynth.report.collect import collect
from fairsynth.report.verdict import verdict
from tests.report.conftest import DEMO_OUTPUT, copy_study

runner = CliRunner()


def sentences(work: Path) -> dict[str, str]:
    return {s.key: s.text for s in verdict(collect(work))}


def page_sentences(page: str) -> dict[str, str]:
    found = re.findall(r'<p class="sentence[^"]*" id="verdict-([a-z]+)" data-verdict="\1">(.*?)</p>', page, re.S)
    return {key: html.unescape(text) for key, text in found}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def test_the_verdict_is_the_studys_numbers_on_its_headline_test_set(study):
    said = sentences(study)
    assert list(said) == ["overall", "rarest", "oracle", "synthetic", "caution"]
    compare = _json(study / "downstream" / "compare.json")
    name, tested = next(iter(compare["test_sets"].items()))  # the first external test set: the balanced test world
    table = tested["table"]
    row = table["macro_auroc"]
    delta = row["delta_vs_real"]["mixed"]
    assert f"on the external test set {name} ({tested['images']} images" in said["overall"]
    assert (f"macro AUROC {row['arms']['mixed']['mean']:.3f} against {row['arms']['real']['mean']:.3f}, a difference of "
            f"{_signed(delta['mean'])} (95 % interval {_signed(delta['low'])} to {_signed(delta['high'])}, paired over "
            f"{delta['n']} seeds") in said["overall"]
    over_images = (delta.get("test_images") or {}).get("low") is not None  # compare.json's bootstrap over test images
    within = ": within noise over seeds." if over_images else ": within noise."
    assert said["overall"].endswith(within if delta["within_noise"] else ", beyond noise.")
    if over_images:
        images = delta["test_images"]
        assert f"; over test images {_signed(images['low'])} to {_signed(images['high'])})" in said["overall"]
    # the rarest group, from prepared/counts.csv
    counts = pd.read_csv(study / "prepared" / "counts.csv", index_col=0).loc["total"]
    groups = {"I-II": counts["FST I"] + counts["FST II"], "III-IV": counts["FST III"] + counts["FST IV"],
              "V-VI": counts["FST V"] + counts["FST VI"]}
    rarest = min(groups, key=groups.get)
    row = table[f"auroc.{rarest}"]
    delta = row["delta_vs_real"]["mixed"]
    assert said["rarest"].startswith(f"On the rarest skin-type group, {rarest} ({groups[rarest]} of the {counts['total']} "
                                     f"prepared images): AUROC {row['arms']['mixed']['mean']:.3f} against "
                                     f"{row['arms']['real']['mean']:.3f} for real only, {_signed(delta['mean'])} (95 % interval "
                                     f"{_signed(delta['low'])} to {_signed(delta['high'])}")
    gap = table["auroc_gap"]
    assert (f"goes from {gap['arms']['real']['mean']:.3f} to {gap['arms']['mixed']['mean']:.3f}" in said["rarest"]
            or "narrows" in said["rarest"] or "widens" in said["rarest"])
    # the share of the oracle's effect
    share = compare["oracle_share"][name]["arms"]["mixed"][f"auroc.{rarest}"]
    if share["share"] is None:
        assert "no share to measure" in said["oracle"]
    else:
        low, high = share["share_interval"]
        assert (f"{100 * share['share']:.0f} % of the oracle's effect (95 % interval {100 * low:.0f} % to {100 * high:.0f} %)"
                in said["oracle"])
    # the synthetic set: fullness and the judge on V-VI
    report = _json(study / "generated" / "report.json")
    truth = report["truth"]
    assert said["synthetic"].startswith(f"The synthetic set holds {report['delivered']} of the {report['target']} images")
    assert (f"reads the asked class in {100 * truth['class_as_asked_V_VI']:.0f} % of the {truth['delivered_V_VI']} delivered "
            "V–VI images (95 % interval") in said["synthetic"]
    # what to be careful about: two seeds in this study
    assert said["caution"].startswith("Be careful: 2 seeds only")


def test_the_page_and_the_demo_output_carry_the_same_sentences(study):
    said = sentences(study)
    page = (study / "report" / "index.html").read_text(encoding="utf-8")
    assert page_sentences(page) == said
    assert page.index('id="verdict"') < page.index('id="downstream"')  # the answer opens the page
    printed = (study.parent / DEMO_OUTPUT).read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert printed[-len(said):] == list(said.values())  # the demo's output ends with the verdict
    assert "verdict" in printed[-len(said) - 1]


def _edit(work: Path, name: str, key: str, arm: str, **delta) -> None:
    path = work / "downstream" / "compare.json"
    compare = _json(path)
    part = next(iter(compare["test_sets"].values()))
    part["table"][key]["delta_vs_real"][arm].update(delta)
    _write(path, compare)


@pytest.mark.parametrize(("delta", "overall", "tail"), [
    ({"mean": 0.05, "low": 0.01, "high": 0.09, "within_noise": False}, "beats real only", ", beyond noise."),
    ({"mean": -0.05, "low": -0.09, "high": -0.01, "within_noise": False}, "does worse than real only", ", beyond noise."),
    ({"mean": 0.05, "low": -0.01, "high": 0.11, "within_noise": True}, "is level with real only", ": within noise."),
    ({"mean": 0.05, "low": None, "high": None, "within_noise": None, "n": 1}, "differs from real only",
     ": one seed cannot tell it from noise."),
], ids=["better", "worse", "within-noise", "one-seed"])
def test_the_words_follow_the_interval(study, tmp_path, delta, overall, tail):
    work = copy_study(study, tmp_path / "w", "prepared", "generated", "downstream")
    # the words of the t-interval over seeds alone (with a test-image interval beside it: the test below)
    _edit(work, "world-test", "macro_auroc", "mixed", test_images=None, **delta)
    said = sentences(work)["overall"]
    assert overall in said and said.endswith(tail), said
    if delta["low"] is not None:
        assert f"a difference of {_signed(delta['mean'])} (95 % interval {_signed(delta['low'])} to {_signed(delta['high'])}" in said


def test_a_narrower_gap_beyond_noise_is_fairer_and_a_test_image_interval_is_shown(study, tmp_path):
    work = copy_study(study, tmp_path / "g", "prepared", "generated", "downstream")
    _edit(work, "world-test", "auroc_gap", "mixed", mean=-0.08, low=-0.12, high=-0.04, within_noise=False, test_images=None)
    _edit(work, "world-test", "auroc.V-VI", "mixed", mean=0.02, low=-0.01, high=0.05, within_noise=True,
          test_images={"low": 0.004, "high": 0.036, "within_noise": False})
    said = sentences(work)["rarest"]
    assert "the AUROC gap between the best and the worst group narrows from" in said
    assert "-0.080 (95 % interval -0.120 to -0.040, paired over 2 seeds): fairer, beyond noise." in said
    assert "+0.020 (95 % interval -0.010 to +0.050, paired over 2 seeds; over test images +0.004 to +0.036): within noise over seeds" in said


def test_the_rarest_group_is_read_from_the_counts(study, tmp_path):
    work = copy_study(study, tmp_path / "r", "prepared", "generated", "downstream")
    counts = pd.read_csv(work / "prepared" / "counts.csv", index_col=0)
    counts.loc["total", ["FST I", "FST II"]] = [0, 1]
    counts.to_csv(work / "prepared" / "counts.csv")
    said = sentences(work)
    assert said["rarest"].startswith("On the rarest skin-type group, I-II (1 of the")
    assert ", 200 of them I-II;" in said["overall"]


def test_without_an_oracle_arm_the_share_is_not_measured(study, tmp_path):
    work = copy_study(study, tmp_path / "o", "prepared", "generated", "downstream")
    compare = _json(work / "downstream" / "compare.json")
    compare["arms"].remove("oracle")
    compare.pop("oracle_share")
    _write(work / "downstream" / "compare.json", compare)
    assert sentences(work)["oracle"].startswith("No oracle arm in this comparison (downstream.arms has no oracle)")


def test_empty_cells_and_memorised_images_are_cautions(study, tmp_path):
    work = copy_study(study, tmp_path / "c", "prepared", "generated", "downstream")
    report = _json(work / "generated" / "report.json")
    emptied = report["cells"][-1]
    emptied["selected"] = 0
    report["memorised"] = [{"image": "a.png", "copies": "b.png", "distance": 0.01}] * 2
    _write(work / "generated" / "report.json", report)
    said = sentences(work)
    assert f"1 empty;" in said["synthetic"]
    assert f"1 cell of the synthetic set is empty ({emptied['cell']})" in said["caution"]
    assert "the memorisation filter rejected 2 candidates as copies of training images" in said["caution"]


def test_a_study_without_downstream_says_what_it_can(study, tmp_path):
    work = copy_study(study, tmp_path / "n", "prepared", "generated", "evaluation")
    said = sentences(work)
    assert list(said) == ["downstream", "fidelity", "synthetic", "caution"]
    assert said["downstream"].startswith("No downstream comparison in this study (downstream/compare.json is absent)")
    evaluation = _json(work / "evaluation" / "evaluation.json")
    rows = [r for r in evaluation["results"] if r["metric"] == "fd" and r["value"] is not None]
    worst = max((r for r in rows if r["group_by"] == "fst"), key=lambda r: r["value"])
    overall = next(r for r in rows if r["group_by"] == "overall")
    assert said["fidelity"] == (
        f"By skin type, {worst['display']} puts the synthetic set farthest from the real images on "
        f"FST {['I', 'II', 'III', 'IV', 'V', 'VI'][int(worst['group']) - 1]}: {worst['value']:.3g} (95 % interval "
        f"{worst['ci_low']:.3g} to {worst['ci_high']:.3g}) against {overall['value']:.3g} (95 % interval "
        f"{overall['ci_low']:.3g} to {overall['ci_high']:.3g}) overall (evaluation/evaluation.json).")
    page = build_report(work).read_text(encoding="utf-8")
    assert page_sentences(page) == said
    # a study that only prepared its data
    only = copy_study(study, tmp_path / "p", "prepared")
    said = sentences(only)
    assert list(said) == ["downstream", "data", "synthetic", "caution"]
    counts = pd.read_csv(only / "prepared" / "counts.csv", index_col=0).loc["total"]
    assert said["data"].startswith(f"The prepared data holds {counts['total']} images; the rarest skin-type group")
    assert said["synthetic"].startswith("No synthetic set in this study")
    assert re.search(r"\d\.\d{3}", " ".join(said.values())) is None  # no metric where nothing ran


def test_fairsynth_report_prints_the_verdict_last(study, tmp_path):
    work = copy_study(study, tmp_path / "p", "prepared", "generated", "downstream")
    result = runner.invoke(app, ["report", str(work)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n").splitlines()[-len(sentences(work)):] == list(sentences(work).values())


def test_a_comparison_without_real_only_has_no_effect_to_read(study, tmp_path):
    work = copy_study(study, tmp_path / "a", "prepared", "generated", "downstream")
    compare = _json(work / "downstream" / "compare.json")
    compare["arms"] = ["mixed", "oracle"]
    _write(work / "downstream" / "compare.json", compare)
    said = sentences(work)
    assert list(said) == ["downstream", "synthetic", "caution"]
    assert said["downstream"].startswith("The comparison ran the arms mixed, oracle: without real only")
