"""The report in a real browser: headless Chromium at 1280 × 800 shows the whole verdict without
scrolling, loads every image, logs no console error, and its screenshot is written beside the
report. The same check fails on a page whose verdict is pushed below the fold, whose image is
broken, or whose console logs an error."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from fairsynth.report.collect import collect
from fairsynth.report.verdict import verdict
from tests.report.browser import BROWSERS, Chromium, find_browser

#: Where the first screen's screenshot goes, beside the report.
SCREENSHOT = "screenshot-1280x800.png"


@pytest.fixture(scope="module")
def browser():
    if find_browser() is None:
        pytest.skip(f"no Chromium on this machine (looked for {', '.join(BROWSERS)}; .ci/run installs Debian's chromium)")
    with Chromium() as chromium:
        yield chromium


def test_the_report_answers_on_its_first_screen_in_chromium(study, browser):
    page = study / "report" / "index.html"
    rendering = browser.render(page, 1280, 800)
    shot = page.parent / SCREENSHOT
    shot.write_bytes(rendering.screenshot)
    assert rendering.problems() == []
    inspection = rendering.inspection
    assert inspection["viewport"] == [1280, 800] and inspection["scroll"] == [0, 0]
    said = verdict(collect(study))
    assert [s["key"] for s in inspection["sentences"]] == [s.key for s in said]
    assert [re.sub(r"\s+", " ", s["text"]) for s in inspection["sentences"]] == [s.text for s in said]
    html = page.read_text(encoding="utf-8")
    assert len(inspection["images"]) == html.count("<img ") >= 10  # forest x2, cells, metrics, counts, loss, grids ...
    assert all(image["complete"] and image["width"] > 0 for image in inspection["images"])
    assert all(anchor.lstrip("#") in inspection["ids"] for anchor in inspection["anchors"])  # every contents link lands
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 800)
        low, high = image.convert("L").getextrema()
        assert high - low > 100 and len(image.convert("RGB").getcolors(1 << 24)) > 50  # not a blank page


BROKEN = [
    ("below the fold", lambda html: html.replace("<main>", '<main><div style="height:900px"></div>', 1),
     "is outside the first 1280 x 800 screen"),
    ("broken image", lambda html: re.sub(r'src="data:image/png;base64,[^"]+"', 'src="data:image/png;base64,iVBORw0KGgo="', html, count=1),
     "image does not load"),
    ("no alt", lambda html: re.sub(r'alt="[^"]*"', 'alt=""', html, count=1), "image without a text alternative"),
    ("console error", lambda html: html.replace("</body>", "<script>console.error('figure missing')</script></body>"),
     "console error: figure missing"),
    ("script error", lambda html: html.replace("</body>", "<script>undefinedFunction()</script></body>"),
     "console error: ReferenceError"),
]


@pytest.mark.parametrize(("name", "break_page", "problem"), BROKEN, ids=[b[0] for b in BROKEN])
def test_the_check_fails_on_a_page_that_misses(study, browser, tmp_path, name, break_page, problem):
    page = tmp_path / "index.html"
    page.write_text(break_page((study / "report" / "index.html").read_text(encoding="utf-8")), encoding="utf-8")
    problems = browser.render(page, 1280, 800).problems()
    assert any(problem in p for p in problems), problems
    if name == "below the fold":  # every sentence of the verdict is pushed out
        assert sum("is outside the first" in p for p in problems) == len(verdict(collect(study)))
