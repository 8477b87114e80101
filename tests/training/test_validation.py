"""The validation grid's cells and prompts, and a validation loss that only the weights change."""

from __future__ import annotations

import torch

from fairsynth.data.records import Record
from fairsynth.methods.base import Components, encode_prompts
from fairsynth.models.architectures import tiny_sd_components, training_noise_scheduler
from fairsynth.training.caching import LatentCache
from fairsynth.training.config import ValidationConfig
from fairsynth.training.data import make_examples
from fairsynth.training.validation import grid_cells, validation_loss
from tests.training.conftest import make_prepared

RECORDS = [
    Record("a", "a.png", "melanoma", "melanoma, light skin", {"fst": 1, "diagnosis": "malignant melanoma"}),
    Record("b", "b.png", "psoriasis", "psoriasis, dark skin", {"fst": 6}),
]


def test_a_template_asks_for_every_class_and_skin_type_even_unseen_ones():
    cfg = ValidationConfig(caption_template="{diagnosis} on Fitzpatrick skin type {fst_roman}")
    classes, skin_types, cells = grid_cells(RECORDS, cfg)
    assert classes == ["melanoma", "psoriasis"] and skin_types == [1, 6]
    assert [c.prompt for c in cells] == [
        "malignant melanoma on Fitzpatrick skin type I",
        "malignant melanoma on Fitzpatrick skin type VI",  # no such record: still asked for
        "psoriasis on Fitzpatrick skin type I",
        "psoriasis on Fitzpatrick skin type VI",
    ]
    assert cells[1].record.fst == 6 and cells[1].record.label == "melanoma"


def test_without_a_template_cells_use_a_matching_caption_or_stay_empty():
    _, _, cells = grid_cells(RECORDS, ValidationConfig(fst=[1, 6], classes=["melanoma"]))
    assert [c.prompt for c in cells] == ["melanoma, light skin", None]


def test_unlabelled_data_gets_one_row():
    records = [Record("a", "a.png", None, "a jacket", {})]
    classes, skin_types, cells = grid_cells(records, ValidationConfig())
    assert classes == [None] and skin_types == [None] and [c.prompt for c in cells] == ["a jacket"]


def test_validation_loss_is_fixed_for_fixed_weights(tmp_path):
    manifest = make_prepared(tmp_path / "prepared", n_train=0, n_val=3, size=16)
    from fairsynth.data.records import read_manifest

    examples = make_examples(read_manifest(manifest), manifest.parent, (16, 16))
    raw = tiny_sd_components(seed=0)
    components = Components(
        raw["unet"], raw["vae"], [raw["text_encoder"]], [raw["tokenizer"]], training_noise_scheduler(raw["scheduler"])
    )
    latents = LatentCache(tmp_path / "cache", components.vae)
    condition = lambda batch: encode_prompts(components, batch.captions)  # noqa: E731
    measure = lambda: validation_loss(components, examples, latents, condition, "epsilon", 2, 0, "cpu")  # noqa: E731
    first = measure()
    assert measure() == first
    with torch.no_grad():
        components.unet.conv_out.bias.add_(0.1)
    assert measure() != first
