"""The documentation: the generated reference is current, every page is in the site's
navigation, and every link between pages (and from the README) leads somewhere."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _build_reference():
    spec = importlib.util.spec_from_file_location("build_reference", REPO / "scripts" / "build_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_is_current():
    # in a fresh process: tests register test-only members (a bias method) into the registries of this one
    checked = subprocess.run([sys.executable, str(REPO / "scripts" / "build_reference.py"), "--check"],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
    assert checked.returncode == 0, checked.stderr or checked.stdout


def test_the_reference_covers_every_command_and_recipe_section():
    pages = _build_reference().pages()
    for command in ("ls", "validate", "prepare", "train", "evaluate", "generate", "filter", "run", "sweep", "report",
                    "demo", "weights list", "weights fetch", "downstream compare", "downstream train", "downstream curve",
                    "downstream ablate", "review export", "review import"):
        assert f"`fairsynth {command}`" in pages["commands.md"], command
    for key in ("`data.reader`", "`prepare.split.stratify`", "`train.balance.mix`", "`generate.plan.distribution`",
                "`filter.checks`", "`evaluate.metrics`", "`evaluate.cmmd_estimator`", "`downstream.arms`",
                "`downstream.curve.ratios`", "`downstream.ablate.keep`", "`world.skin_type_effect`"):
        assert key in pages["recipe.md"], key
    for name in ("### `lora`", "### `pivotal`", "### `classifier_confidence`", "`fitzpatrick17k`", "`inception`"):
        assert name in pages["registries.md"], name


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_page_is_in_the_navigation_and_every_entry_exists():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = _nav_files(config["nav"])
    assert sorted(set(listed)) == sorted(listed), "a page is listed twice"
    missing = [name for name in listed if not (DOCS / name).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"
    unlisted = [str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in listed]
    assert not unlisted, f"pages missing from mkdocs.yml's nav: {unlisted}"


def _prose(text: str) -> str:
    """The text outside fenced code blocks (where `](` and `#` mean nothing)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _anchors(path: Path) -> set[str]:
    """The ids of a page's headings, as mkdocs' toc (and GitHub, for these simple headings) make them."""
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text(encoding="utf-8")), flags=re.MULTILINE):
        text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[-\s]+", "-", text))
    return ids


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_links_lead_to_pages_and_headings_that_exist(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif page.is_relative_to(DOCS) and not linked.is_relative_to(DOCS):
            broken.append(f"{target}: outside docs/ (the site cannot link there)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
