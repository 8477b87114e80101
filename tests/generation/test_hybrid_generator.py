"""The hybrid arm's generator: a `counts` generation run over the chosen cells, cached per round."""

from __future__ import annotations

from fairsynth.generation.hybrid import cell_id, recipe_generator
from fairsynth.recipe import load_recipe
from tests.generation.conftest import overrides


def test_recipe_generator_makes_the_chosen_cells_and_reuses_a_finished_round(tmp_path, tiny_base, real_manifest, lora_output):
    recipe = load_recipe(None, overrides(tmp_path, tiny_base, real_manifest, lora_output))
    messages = []
    generate_cells = recipe_generator(recipe, seed=1, log=messages.append)
    samples = generate_cells([("melanoma", "II"), ("psoriasis", "III")], 2, 0)
    assert sorted((s.label, s.group) for s in samples) == [("melanoma", "II")] * 2 + [("psoriasis", "III")] * 2
    assert all(s.synthetic and s.path.is_file() for s in samples)
    round_dir = tmp_path / "downstream" / "hybrid" / "seed-1" / "round-0"
    assert all(round_dir in s.path.parents for s in samples)
    mtimes = {s.path: s.path.stat().st_mtime_ns for s in samples}
    again = generate_cells([("melanoma", "II"), ("psoriasis", "III")], 2, 0)
    assert {s.path: s.path.stat().st_mtime_ns for s in again} == mtimes  # the finished round is reused as it is
    assert cell_id("melanoma", "VI", "fst") == "melanoma/fst=6" and cell_id("scratch", "steel", "surface") == "scratch/surface=steel"
