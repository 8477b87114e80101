"""Every shipped recipe parses into typed configs and opens with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairsynth.recipe import DEMO_RECIPE, load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml")) + [DEMO_RECIPE]


def test_the_five_reference_workflows_ship():
    names = {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    assert {"fairskin_derm", "kohya_derm_lora", "fewshot_defects", "garment_sdxl", "peft_comparison_medical"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem or path == DEMO_RECIPE


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_opens_with_the_command_that_runs_it(path):
    head = "\n".join(path.read_text().splitlines()[:4])
    assert "fairsynth " in head, f"{path.name} must open with the command that runs it"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_names_a_registered_reader(path):
    from fairsynth.data.readers import READERS

    assert load_recipe(path).data.reader in READERS
