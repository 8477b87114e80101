"""Fine-tuning the shipped embedded base teaches it new words: a small task that fits in CI.

The full proof (four classes x six skin types, every method, minutes per method) is
``scripts/prove_finetuning.py`` and the demo's own before/after grid; their numbers are in
the README. Here: two lesion classes (melanoma, psoriasis) on the two ends of the skin-type
scale (I, VI), the demo's method (pivotal tuning: a token per class x skin type that starts
from a description in the base's own words, then a LoRA), 300 steps on one core. The base
has never seen a lesion or a skin word: before fine-tuning it draws one skin tone and one
kind of lesion whatever the prompt asks.

Measured (32 images, seeds fixed): the base 50 % class (chance 50 %), 25 % skin type within
one; fine-tuned 72 % class, 100 % skin type. Earlier, with every token starting from the one
word "blob", the class stayed at 44-50 % (the model drew a dark irregular lesion for both).
"""

from __future__ import annotations

import dataclasses

import pytest

from fairsynth.models.embedded import EmbeddedBaseMissing, embedded_base_path

CLASSES = ("melanoma", "psoriasis")
TYPES = (1, 6)
STEPS = 300


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    try:
        embedded_base_path()
    except EmbeddedBaseMissing as missing:
        pytest.skip(f"shipped weights not built yet: {missing}")
    from fairsynth.data.prepare import prepare
    from fairsynth.recipe import DEMO_RECIPE, load_recipe
    from fairsynth.training.loop import train
    from fairsynth.world.derm import generate_world

    work = tmp_path_factory.mktemp("proof")
    recipe = load_recipe(DEMO_RECIPE, [
        f"workdir={work}", "world.n=160", "world.size=64", "world.hair_probability=0.0",
        "world.class_distribution={melanoma: 0.5, psoriasis: 0.5}", "world.fst_distribution={'1': 0.5, '6': 0.5}",
        "prepare.hair_removal.enabled=false", "prepare.split.test=0.1", "prepare.split.val=0.05",
        f"train.steps={STEPS}", "train.batch_size=8", "train.checkpoint_every=0",
    ])
    generate_world(recipe.world_dir, recipe.world)
    prepare(recipe)
    trained = train(recipe, progress=False)
    return recipe, trained


def _score(recipe, adapters):
    from fairsynth.generation.pipeline import load_sampler
    from fairsynth.world.judge import shipped_judge
    from fairsynth.world.proof import measure_conditioning, token_prompt

    sampler = load_sampler(dataclasses.replace(recipe.generate, adapters=adapters, steps=20))
    score, _, _ = measure_conditioning(
        sampler, shipped_judge()[0], classes=CLASSES, fsts=TYPES, per_cell=8, seed=500,
        prompt_for=(lambda cell: token_prompt(cell)) if adapters else None,
    )
    print(f"{'fine-tuned' if adapters else 'base'}: {score.line()}")
    return score


def test_base_draws_one_skin_tone_whatever_the_prompt(study):
    recipe, _ = study
    score = _score(recipe, [])
    assert score.fst_within_one <= 0.65, score.line()  # measured 0.25-0.50: one tone for both requests
    assert score.class_accuracy <= 0.65, score.line()  # measured 0.50: one kind of lesion for both words


@pytest.fixture(scope="module")
def fine_tuned(study):
    from fairsynth.generation.config import AdapterSpec

    recipe, trained = study
    return _score(recipe, [AdapterSpec(path=str(trained.model_dir))])


def test_fine_tuned_model_draws_the_requested_skin_type(fine_tuned):
    score = fine_tuned
    assert score.fst_within_one >= 0.9, score.line()
    assert min(score.per_fst.values()) >= 0.8, score.line()  # type VI as well as type I


def test_fine_tuned_model_draws_the_requested_lesion_class(fine_tuned):
    score = fine_tuned
    assert score.class_accuracy >= 0.6, score.line()  # measured 0.72 (chance 0.50)
