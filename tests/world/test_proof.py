"""Scoring drawn images against the requested class and skin type, and the grid of a sampler."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairsynth.world.judge import JUDGE_CLASSES, derm_images
from fairsynth.world.proof import DERM_TEMPLATE, grid_cells, grid_image, measure_conditioning, score_images, token_prompt


@pytest.fixture(scope="module")
def world():
    return derm_images(96, seed=7)  # 4 classes x 6 skin types x 4, balanced


def test_world_images_score_as_their_own_labels(world, small_judge):
    images, labels, fsts = world
    score = score_images(images, labels, fsts, small_judge[0])
    assert score.n == 96
    assert score.class_accuracy >= 0.85 and score.fst_within_one >= 0.95
    assert set(score.per_fst) == {"I", "II", "III", "IV", "V", "VI"} and set(score.per_class) == set(JUDGE_CLASSES)
    assert sum(score.confusion["melanoma"].values()) == 24


def test_wrong_requests_score_low(world, small_judge):
    images, labels, fsts = world
    shifted = [JUDGE_CLASSES[(JUDGE_CLASSES.index(label) + 1) % 4] for label in labels]
    opposite = [7 - f for f in fsts]  # I <-> VI, II <-> V, III <-> IV
    score = score_images(images, shifted, opposite, small_judge[0])
    assert score.class_accuracy <= 0.15
    # only III <-> IV stay within one type: a third of the images
    assert score.fst_within_one == pytest.approx(sum(abs(a - b) <= 1 for a, b in zip(fsts, opposite)) / 96)


def test_cells_prompts_and_token_prompts():
    cells = grid_cells(["melanoma", "psoriasis"], [1, 6])
    assert [c.prompt for c in cells] == [
        DERM_TEMPLATE.format(diagnosis=d, fst_roman=r) for d in ("melanoma", "psoriasis") for r in ("I", "VI")
    ]
    assert token_prompt(cells[1]) == "<melanoma-FST-VI>, A dermoscopic image of melanoma on Fitzpatrick skin type VI"
    assert token_prompt(cells[1], "class").startswith("<melanoma>, ")
    assert token_prompt(cells[1], "class_plus_fst").startswith("<melanoma> <FST-VI>, ")


class _Replay:
    """A stand-in sampler that returns world images of whatever each request asks for."""

    def __init__(self):
        self.calls = []

    def __call__(self, requests, size):
        from fairsynth.world.derm import render_layers

        self.calls.append([r.prompt for r in requests])
        return [
            Image.fromarray(render_layers(r.label, r.attributes["fst"], np.random.default_rng(r.seed), size=size[0], hair=False).image)
            for r in requests
        ]


def test_measure_conditioning_requests_every_cell_with_its_seed(small_judge):
    sampler = _Replay()
    score, images, cells = measure_conditioning(sampler, small_judge[0], per_cell=2, seed=10, batch_size=16)
    assert images.shape == (48, 64, 64, 3) and len(cells) == 24
    assert sum(len(c) for c in sampler.calls) == 48 and len(sampler.calls) == 3
    assert sampler.calls[0][:2] == [cells[0].prompt] * 2
    assert score.class_accuracy >= 0.85 and score.fst_within_one >= 0.95
    sheet = grid_image(images, rows=4, columns=6, per_cell=2)
    assert sheet.size == (6 * 64, 4 * 64)
    assert np.array_equal(np.asarray(sheet)[64:128, 0:64], images[12])  # row 1, column 0: cell 6, its first image
