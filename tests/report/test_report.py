"""The study report: every section from the study's own files with the numbers in them, 'not run'
for what did not run, and a clear error naming a corrupt file. The verdict is tested in
test_verdict.py, the figures in test_figures.py, the page in a browser in test_browser.py."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.report import ReportError, build_report
from tests.report.conftest import copy_study

runner = CliRunner()

#: The page's sections in order: their ids are the anchors a link to a section uses.
SECTIONS = ("verdict", "downstream", "generated", "metrics", "data", "training", "filters", "memorisation", "card", "run")


class Tables(HTMLParser):
    """The page's tables as {caption: [[cell text, ...], ...]} (header row first)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: str | None = None
        self._rows: list[list[str]] = []
        self._text: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._caption, self._rows = "", []
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th", "caption"):
            self._text = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self._caption = "".join(self._text or [])
            self._text = None
        elif tag in ("td", "th"):
            self._rows[-1].append("".join(self._text or []))
            self._text = None
        elif tag == "table":
            self.tables[self._caption or ""] = self._rows

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def find(self, caption_start: str) -> list[list[str]]:
        matches = [rows for caption, rows in self.tables.items() if caption.startswith(caption_start)]
        assert matches, f"no table captioned {caption_start!r}; tables: {list(self.tables)}"
        return matches[0]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _row(rows: list[list[str]], *first: str) -> list[str]:
    """The one row whose first cells are ``first`` (the header row, ``rows[0]``, names the columns)."""
    found = [row for row in rows[1:] if row[: len(first)] == list(first)]
    assert len(found) == 1, (first, rows)
    return found[0]


def _cell(rows: list[list[str]], row: list[str], column: str) -> str:
    return row[rows[0].index(column)]


@pytest.fixture(scope="module")
def page(study) -> str:
    """The page `fairsynth demo` wrote at the end of the study."""
    return (study / "report" / "index.html").read_text(encoding="utf-8")


def test_every_section_is_there_and_the_page_is_self_contained(study, page):
    assert re.findall(r'<section id="([^"]+)"', page) == list(SECTIONS)
    assert "Stage not run" not in page
    assert '<section id="sweep">' not in page  # no sweep in this study: no section
    assert not re.search(r'src="(?!data:)', page)  # every image inlined: nothing loaded from elsewhere
    links = re.findall(r'href="([^"]+)"', page)
    assert all(link.startswith("#") or link.startswith("figures/") for link in links), links
    for link in (link for link in links if link.startswith("figures/")):  # a figure's data file and PNG, beside the page
        assert (study / "report" / link).is_file(), link
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert (study / "report" / "index.html").stat().st_size < 15e6
    assert "must not be presented or used as real" in page


def test_the_numbers_are_those_of_the_studys_files(study, page):
    tables = Tables(page)
    # the dataset: class x skin-type counts
    counts = pd.read_csv(study / "prepared" / "counts.csv", index_col=0)
    table = tables.find("Counts (prepared/counts.csv)")
    for label in ("melanoma", "total"):
        assert _row(table, label)[1:] == [f"{int(v):,}" for v in counts.loc[label]]
    # training
    info = json.loads((study / "train" / "model" / "training_info.json").read_text())
    assert f"for {info['steps']} steps" in _text(page) and f"final loss {info['final_loss']:.3g}" in _text(page)
    scores = json.loads((study / "train" / "conditioning.json").read_text())
    table = tables.find("Read back from the grids' pixels")
    assert _cell(table, _row(table, "fine-tuned"), "class as asked") == f"{scores['fine-tuned']['class_accuracy']:.3g}"
    # generation and filters
    report = json.loads((study / "generated" / "report.json").read_text())
    assert f"{report['delivered']} images delivered of a target of {report['target']}" in _text(page)
    table = tables.find("Per class × skin-type cell")
    cell = report["cells"][4]
    row = _row(table, cell["cell"])
    assert [_cell(table, row, c) for c in ("target", "generated", "passed", "delivered")] == [
        str(cell["target"]), str(cell["generated"]), str(cell["accepted"]), str(cell["selected"])]
    candidates = [json.loads(line) for line in (study / "generated" / "candidates.jsonl").read_text().splitlines()]
    table = tables.find("Per check, over every candidate")
    assert _cell(table, _row(table, "resolution"), "passed") == str(sum(r["resolution_ok"] is True for r in candidates))
    # metrics: value, interval, extractor and weights in one row
    evaluation = json.loads((study / "evaluation" / "evaluation.json").read_text())
    fd = next(r for r in evaluation["results"] if r["metric"] == "fd" and r["group_by"] == "overall")
    table = tables.find("Grouped by overall")
    row = _row(table, fd["display"], fd["on"], fd["group"])
    assert _cell(table, row, "value") == f"{fd['value']:.3g}"
    assert _cell(table, row, "95 % interval") == f"[{fd['ci_low']:.3g}, {fd['ci_high']:.3g}]"
    assert _cell(table, row, "extractor") == fd["extractor"] == "classifier"
    weights = Path(evaluation["extractors"]["classifier"]["weights_file"]).name
    assert _cell(table, row, "weights") == f"{weights}, sha256 {fd['weights_sha256'][:12]}…"
    assert all(_cell(table, r, "weights") != "—" and _cell(table, r, "extractor") != "—" for r in table[1:])
    # downstream: mean ± sd over seeds, and each run's bootstrap interval
    compare = json.loads((study / "downstream" / "compare.json").read_text())
    table = tables.find("downstream/compare.json")
    accuracy = compare["table"]["accuracy"]["arms"]["real"]
    assert _cell(table, _row(table, "accuracy ↑"), "real") == f"{accuracy['mean']:.3g} ± {accuracy['sd']:.3g}"
    run = json.loads((study / "downstream" / "real" / "seed-0" / "metrics.json").read_text())
    auroc = run["metrics"]["per_ddi_group"]["group_auroc"]["I-II"]
    table = tables.find("AUROC per group per run")
    expected = f"{auroc['estimate']:.3g} [{auroc['low']:.3g}, {auroc['high']:.3g}]" if auroc["low"] is not None else f"{auroc['estimate']:.3g}"
    assert _cell(table, _row(table, "real", "0"), "AUROC I-II") == expected
    # the external test world, never pooled with the test split, and the share of the oracle's effect
    tested = compare["test_sets"]["world-test"]
    table = tables.find("External test set world-test")
    auroc = tested["table"]["auroc.V-VI"]["arms"]["oracle"]
    assert _cell(table, _row(table, "AUROC V-VI ↑"), "oracle") == f"{auroc['mean']:.3g} ± {auroc['sd']:.3g}"
    table = tables.find("Share of the oracle's effect on world-test")
    entry = compare["oracle_share"]["world-test"]["arms"]["mixed"]["accuracy"]
    share = _cell(table, _row(table, "mixed", "accuracy ↑"), "share of the oracle's effect")
    assert share == (f"undefined: {entry['note']}" if entry["share"] is None else share)
    assert share.startswith("undefined") == (entry["share"] is None)
    # the truth: the world's judge reads every delivered image, per cell
    truth = report["truth"]
    table = tables.find("The truth per class × skin-type cell")
    cell = next(c for c in truth["cells"].values() if c["delivered"])
    row = _row(table, f"{cell['label']} | {['I', 'II', 'III', 'IV', 'V', 'VI'][cell['fst'] - 1]}")
    assert _cell(table, row, "delivered") == str(cell["delivered"])
    assert _cell(table, row, "class as asked (delivered)") == f"{cell['class_as_asked']:.0%}"
    assert f"the asked class in {truth['class_as_asked']:.0%} of the {truth['delivered']} delivered images" in _text(page)
    # the model card: synthetic images per classifier run
    mixed = json.loads((study / "downstream" / "mixed" / "seed-1" / "metrics.json").read_text())["train_images"]
    table = tables.find("Training images per classifier run")
    row = _row(table, "mixed", "1")
    assert [_cell(table, row, "real"), _cell(table, row, "synthetic")] == [str(mixed["real"]), str(mixed["synthetic"])]
    assert _cell(table, row, "synthetic share") == f"{100 * mixed['synthetic'] / (mixed['real'] + mixed['synthetic']):.1f} %"
    assert _cell(table, _row(table, "real", "0"), "synthetic") == "0"
    card = page.split('<section id="card">')[1].split("</section>")[0]
    assert f"<code>{info['method']}</code>" in card and info["base_model"]["source"] in card


def test_a_study_that_only_prepared_says_the_other_stages_did_not_run(study, tmp_path):
    work = copy_study(study, tmp_path / "only", "prepared")
    page = build_report(work).read_text()
    not_run = re.findall(r"Stage not run: no outputs of (.+?) in this study", page)
    assert not_run == ["`downstream`", "`generate`", "`evaluate`", "`train`", "`generate`", "`generate` or `evaluate`"]
    assert '<section id="data">' in page and "Counts (prepared/counts.csv)" in page
    assert "The generator: stage not run" in page and "The classifiers: stage not run" in page
    assert '<section id="run">' not in page and '<section id="sweep">' not in page
    assert re.search(r"\d\.\d{3}", _text(page).split("Stage not run")[1]) is None  # no number where nothing ran


@pytest.mark.parametrize("location", ["sweep/table.json", "sweep.json"])
def test_a_sweep_table_shows_every_column(study, tmp_path, location):
    work = copy_study(study, tmp_path / "s", "prepared")
    rows = [{"configuration": "rank=4", "FD@classifier": 12.25, "seconds": 3},
            {"configuration": "rank=8", "AUROC V-VI": 0.71, "note": None}]
    (work / location).parent.mkdir(parents=True, exist_ok=True)
    (work / location).write_text(json.dumps(rows))
    table = Tables(build_report(work).read_text()).find(location)
    assert table == [["configuration", "FD@classifier", "seconds", "AUROC V-VI", "note"],
                     ["rank=4", "12.2", "3", "—", "—"], ["rank=8", "—", "—", "0.71", "—"]]


CORRUPT = [
    ("evaluation/evaluation.json", "{truncated", r"evaluation\.json is not valid JSON"),
    ("prepared/counts.csv", "class,FST I,total\nmelanoma,many,3\n", r"counts\.csv is not a table of image counts"),
    ("generated/metadata.jsonl", '{"file_name": "a.png"}\n{"file_na\n', r"metadata\.jsonl, line 2: not valid JSON"),
    ("downstream/mixed/seed-1/metrics.json", "[1, 2", r"seed-1/metrics\.json is not valid JSON"),
    ("sweep/table.json", '{"not": "rows"}', r"table\.json is not a list of rows"),
    ("downstream/compare.json", "[1, 2]", r"compare\.json is not a JSON object"),
    ("downstream/curve.json", '{"points": [', r"curve\.json is not valid JSON"),
    ("downstream/ablate.json", "[]", r"ablate\.json is not a JSON object"),
]


@pytest.mark.parametrize(("name", "content", "message"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_a_corrupt_input_is_an_error_naming_the_file(study, tmp_path, name, content, message):
    work = copy_study(study, tmp_path / "bad")
    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(content)
    with pytest.raises(ReportError, match=message):
        build_report(work)
    result = runner.invoke(app, ["report", str(work)])
    assert result.exit_code == 2 and re.search(message, result.output.replace("\n", "")), result.output
    assert not (work / "report").exists()  # nothing half-written: no page, no figure file


def test_validation_grids_are_shown_spread_over_training(study, tmp_path):
    from PIL import Image

    work = copy_study(study, tmp_path / "v", "prepared", "train")
    (work / "train" / "validation").mkdir(exist_ok=True)
    for step in (10, 20, 30, 40, 50, 60):  # as training.validation.save_grid names them
        Image.new("RGB", (48, 32), (4 * step, 90, 120)).save(work / "train" / "validation" / f"step-{step:06d}.png")
    page = build_report(work).read_text()
    assert re.findall(r"<figcaption>Validation grid at step (\d+)", page) == ["10", "30", "40", "60"]


def test_an_unreadable_image_is_an_error_naming_it(study, tmp_path):
    work = copy_study(study, tmp_path / "img")
    first = json.loads((work / "generated" / "metadata.jsonl").read_text().splitlines()[0])
    (work / "generated" / first["file_name"]).write_bytes(b"not a png")
    with pytest.raises(ReportError, match=re.escape(first["file_name"]) + " is not a readable image"):
        build_report(work)


def test_filter_rejections_and_memorised_images_are_shown_with_the_training_image(study, tmp_path):
    """A generation whose memorisation filter rejected one candidate (its manifest columns as the filter writes them)."""
    work = copy_study(study, tmp_path / "m", "prepared", "generated")
    generated = work / "generated"
    candidates = [json.loads(line) for line in (generated / "candidates.jsonl").read_text().splitlines()]
    training = next(json.loads(line) for line in (work / "prepared" / "metadata.jsonl").read_text().splitlines())
    copied = next(row for row in candidates if row["status"] == "surplus")
    for row in candidates:
        row.update(memorisation_distance=0.4, memorisation_percentile=50.0, memorisation_nearest=training["file_name"],
                   memorisation_ok=True)
    copied.update(memorisation_distance=0.01, memorisation_percentile=0.0, memorisation_ok=False,
                  accepted=False, status="rejected", rejected_by="memorisation")
    (generated / "candidates.jsonl").write_text("".join(json.dumps(row) + "\n" for row in candidates))
    report = json.loads((generated / "report.json").read_text())
    report["checks"]["memorisation"] = {"extractor": "dinov2", "percentile": 5.0}
    report["memorised"] = [{"image": copied["file_name"], "copies": training["file_name"], "distance": 0.01, "lpips": None}]
    cell = next(c for c in report["cells"] if c["cell"] == copied["cell"])
    cell["rejected_by"] = {"memorisation": 1}
    cell["accepted"] -= 1
    (generated / "report.json").write_text(json.dumps(report))

    page = build_report(work).read_text()
    tables = Tables(page)
    per_check = tables.find("Per check, over every candidate")
    row = _row(per_check, "memorisation")
    assert [_cell(per_check, row, c) for c in ("passed", "rejected", "not measured")] == [str(len(candidates) - 1), "1", "0"]
    assert "distance 0.01 / 0.4 / 0.4" in _cell(per_check, row, "values")
    per_cell = tables.find("Per class × skin-type cell")
    assert _cell(per_cell, _row(per_cell, copied["cell"]), "rejected by memorisation") == "1"
    assert _cell(per_cell, _row(per_cell, report["cells"][0]["cell"] if report["cells"][0]["cell"] != copied["cell"]
                                else report["cells"][1]["cell"]), "rejected by memorisation") == "0"
    assert "memorisation filter rejected 1 images" in _text(page)
    caption = f"Rejected by the filter: {copied['file_name']} (left) and the training image it copies, {training['file_name']} (right)"
    assert caption in page
    figure = page.split('<section id="memorisation">')[1].split("</section>")[0]
    assert figure.count('<img src="data:image/png;base64,') == 1
