from __future__ import annotations

import pytest

from fairsynth.data.captions import placeholder_token, render_caption
from fairsynth.data.records import Record


def test_template_from_attributes():
    record = Record("1", "a.png", label="melanoma", attributes={"fst": 6, "site": "back"})
    text = render_caption(
        "A dermoscopic image of {diagnosis} on Fitzpatrick skin type {fst_roman} ({fst_group}), {site}", record
    )
    assert text == "A dermoscopic image of melanoma on Fitzpatrick skin type VI (V-VI), back"


def test_placeholder_tokens():
    assert placeholder_token("melanoma", 6) == "<melanoma-FST-VI>"
    assert placeholder_token("basal cell carcinoma", 1) == "<basal-cell-carcinoma-FST-I>"
    record = Record("1", "a.png", label="melanoma", attributes={"fst": 5})
    assert render_caption("a photo of {token}", record) == "a photo of <melanoma-FST-V>"


def test_missing_field_names_the_row():
    with pytest.raises(KeyError, match="row 7.*site"):
        render_caption("{diagnosis} on {site}", Record("7", "a.png", label="x"))
