"""The study report: every section from the study's own files, 'not run' for what did not run,
and a page that loads in headless Chromium with every image resolved."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.report import ReportError, build_report

runner = CliRunner()

TINY = [
    "world.n=96", "world.size=64", "prepare.resolution=[32]", "train.steps=4", "train.options.ti_steps=2",
    "train.options.lora_steps=2", "train.batch_size=4", "train.log_every=1", "generate.plan.total=24",
    "generate.plan.max_attempts=1.5", "generate.steps=2", "generate.batch_size=12", "downstream.epochs=1",
    "downstream.seeds=[0,1]", "downstream.bootstrap_resamples=20", "downstream.image_size=32",
    "filter.checks=[resolution]", "filter.options={}", "evaluate.metrics=[fd@classifier, vendi@classifier]",
    "evaluate.extractor_options={classifier: {arch: test_resnet, size: 32}}", "evaluate.bootstrap=10",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_base) -> Path:
    """A whole tiny study (the demo recipe with seconds-long settings on the random tiny base)."""
    work = tmp_path_factory.mktemp("report") / "study"
    result = runner.invoke(app, ["demo", "--workdir", str(work), f"train.base.source={tiny_base}", *TINY])
    assert result.exit_code == 0, result.output
    return work


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_every_section_is_there_with_the_numbers_of_the_studys_files(study):
    page = (study / "report" / "index.html").read_text()
    for section in ("data", "training", "generated", "filters", "metrics", "memorisation", "downstream", "card", "run"):
        assert f'<section id="{section}">' in page, section
    assert "Stage not run" not in page
    counts = (study / "prepared" / "counts.csv").read_text().splitlines()
    total = counts[-1].split(",")[-1]
    assert f"<td>{int(total):,}</td>" in page  # the class x skin-type total
    report = json.loads((study / "generated" / "report.json").read_text())
    assert f"{report['delivered']} images delivered of a target of {report['target']}" in _text(page)
    evaluation = json.loads((study / "evaluation" / "evaluation.json").read_text())
    fd = next(r for r in evaluation["results"] if r["metric"] == "fd" and r["group_by"] == "overall")
    assert f"<td>{fd['value']:.3g}</td>" in page and fd["weights_sha256"][:12] in page
    compare = json.loads((study / "downstream" / "compare.json").read_text())
    accuracy = compare["table"]["accuracy"]["arms"]["real"]
    assert f"{accuracy['mean']:.3g} ± {accuracy['sd']:.3g}" in page
    assert "synthetic share" in page and "must not be presented or used as real" in page
    # self-contained: no address outside the page
    assert not re.search(r'(src|href)="(?!data:|#)', page)


def test_a_study_that_only_prepared_says_the_other_stages_did_not_run(study, tmp_path):
    shutil.copytree(study / "prepared", tmp_path / "only" / "prepared")
    page = build_report(tmp_path / "only").read_text()
    assert page.count("Stage not run") == 6  # training, generated, filters, metrics, memorisation, downstream
    assert '<section id="data">' in page and "Stage not run: no outputs of `train`" in page


def test_a_sweep_table_is_shown_when_there_is_one(study, tmp_path):
    shutil.copytree(study / "prepared", tmp_path / "s" / "prepared")
    (tmp_path / "s" / "sweep").mkdir()
    (tmp_path / "s" / "sweep" / "table.json").write_text(json.dumps([{"configuration": "rank=4", "FD@classifier": 12.25}]))
    page = build_report(tmp_path / "s").read_text()
    assert '<section id="sweep">' in page and "<td>rank=4</td>" in page and "<td>12.2</td>" in page


def test_a_corrupt_input_is_an_error_naming_the_file(study, tmp_path):
    shutil.copytree(study / "prepared", tmp_path / "bad" / "prepared")
    (tmp_path / "bad" / "evaluation").mkdir()
    (tmp_path / "bad" / "evaluation" / "evaluation.json").write_text("{truncated")
    with pytest.raises(ReportError, match=r"evaluation\.json is not valid JSON"):
        build_report(tmp_path / "bad")
    result = runner.invoke(app, ["report", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "evaluation.json is not valid JSON" in result.output
    assert not (tmp_path / "bad" / "report" / "index.html").exists()


def _browser():
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("Debian's chromium and chromium-driver packages are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_page_loads_in_headless_chromium_with_every_image_and_no_console_error(study, tmp_path):
    page = study / "report" / "index.html"
    driver = _browser()
    try:
        driver.get(page.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert len(images) >= 6
    assert all(complete and width > 0 for complete, width, _ in images), [alt for c, w, alt in images if not (c and w)]
    assert errors == []
    from PIL import Image

    with Image.open(shot) as screenshot:
        colours = screenshot.convert("L").getextrema()
        assert screenshot.size[0] >= 1000 and colours[1] - colours[0] > 100  # not a blank page
