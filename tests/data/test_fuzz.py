"""Fuzzed dataset files and recipes end in a problem report or a ConfigError naming the file,
never in a traceback or a hang (the cases and the property: tests/data/fuzzing.py).

The default run tries a modest, fixed set of cases per target; ``-m slow`` (or
FAIRSYNTH_RUN_SLOW=1) tries at least 500 fresh random cases per target. The counts are printed
at the end of the run, and ``benchmarks/hostile_inputs.py`` prints them as a table.
"""

from __future__ import annotations

import os

import pytest

from tests.data.fuzzing import TARGETS, fuzz

#: Cases per target in the default run (derandomized: the same cases every run, so CI is stable).
FAST = 30
#: Cases per target under -m slow (random: new cases every run).
SLOW = 500


def slow_selected(config: pytest.Config) -> bool:
    """Whether this run asked for slow tests (`-m slow`, or FAIRSYNTH_RUN_SLOW=1)."""
    expression = config.getoption("markexpr") or ""
    return os.environ.get("FAIRSYNTH_RUN_SLOW") == "1" or ("slow" in expression and "not slow" not in expression)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzzed_inputs_end_in_a_clear_report(target):
    tally = fuzz(target, FAST, derandomize=True)
    assert tally.tried == FAST


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("target", list(TARGETS))
def test_many_fuzzed_inputs_end_in_a_clear_report(target, request):
    if not slow_selected(request.config):
        pytest.skip(f"{SLOW} random cases per target (about 15 seconds each): run with -m slow")
    tally = fuzz(target, SLOW)
    assert tally.tried >= SLOW


# ---- what fuzzing found, kept as examples ------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from fairsynth.config import ConfigError, DataConfig  # noqa: E402
from fairsynth.data.validation import validate  # noqa: E402
from fairsynth.recipe import load_recipe  # noqa: E402
from tests.helpers import make_image  # noqa: E402


def _errors(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind and p.severity == "error"]


@pytest.mark.parametrize("label", [[], {"a": 1}, True, float("inf")])
def test_an_imagefolder_label_that_is_no_text_is_a_problem_not_its_repr(tmp_path, label):
    make_image(tmp_path / "a.jpg", size=32)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.jpg", "label": label}) + "\n")
    report = validate(DataConfig(reader="imagefolder", path=str(tmp_path)), tmp_path)
    assert report.records == [] or report.valid_records() == []
    (problem,) = _errors(report, "bad_value")
    assert problem.line == 1 and problem.file.endswith("metadata.jsonl") and "label is" in problem.message


def test_imagefolder_nan_means_no_value_and_infinity_is_refused(tmp_path):
    make_image(tmp_path / "a.jpg", size=32)
    make_image(tmp_path / "b.jpg", size=32)
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.jpg", "label": NaN, "ita": NaN}\n{"file_name": "b.jpg", "label": "x", "ita": Infinity}\n'
    )
    report = validate(DataConfig(reader="imagefolder", path=str(tmp_path)), tmp_path)
    (record,) = report.records
    assert record.label is None and record.attributes["ita"] is None
    json.dumps(record.to_row(), allow_nan=False)  # the manifest prepare writes stays strict JSON
    (problem,) = _errors(report, "bad_value")
    assert problem.line == 2 and "ita is inf" in problem.message


def _table(tmp_path: Path, header: str, row: str) -> Path:
    path = tmp_path / "meta.csv"
    path.write_text(f"{header}\n{row}\n")
    return path


@pytest.mark.parametrize("age", ["1e309", "inf", "-5", "200"])
def test_a_ham10000_age_that_is_no_age_is_a_problem(tmp_path, age):
    path = _table(tmp_path, "lesion_id,image_id,dx,dx_type,age,sex,localization", f"L1,a,mel,histo,{age},male,back")
    report = validate(DataConfig(reader="ham10000", path=str(path)), path)
    (problem,) = _errors(report, "bad_value")
    assert problem.row_id == "a" and problem.line == 2 and f"age {age!r}" in problem.message


@pytest.mark.parametrize("weight", ["inf", "nan", "-1", "x"])
def test_an_isic_score_weight_that_is_no_weight_is_a_problem(tmp_path, weight):
    path = _table(tmp_path, "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK,score_weight", f"a,1,0,0,0,0,0,0,0,0,{weight}")
    report = validate(DataConfig(reader="isic2019", path=str(path)), path)
    (problem,) = _errors(report, "bad_value")
    assert problem.row_id == "a" and "score_weight" in problem.message


def test_a_kohya_folder_asking_for_a_million_repeats_is_refused(tmp_path):
    make_image(tmp_path / "1000000_dog" / "a.png", size=32)
    make_image(tmp_path / "10_dog" / "b.png", size=32)
    report = validate(DataConfig(reader="kohya", path=str(tmp_path)), tmp_path)
    assert [r.id for r in report.records] == ["10_dog/b.png"]
    (problem,) = _errors(report, "bad_folder_name")
    assert "1000000_dog" in problem.message and "10,000" in problem.message


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdef", "bcdefg")
) + "train: {options: {x: *g}}\n"


@pytest.mark.parametrize("text, words", [
    (b"\x80name: x\n", "not UTF-8"),
    (b"1: x\n", "key 1 is a number, not a name"),
    (b"~: x\n", "key None is null"),
    (b"prepare: {true: 1}\n", "key prepare.True is a boolean"),
    (ALIAS_BOMB.encode(), "expands to more than 100,000 values"),
    (b"a: &a [*a]\n", "nested more than 200 levels"),
    (("x: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nested too deeply"),
])
def test_a_recipe_that_cannot_be_read_is_a_config_error_naming_it(tmp_path, text, words):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_recipe(path)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_a_folder_or_a_bad_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_recipe(tmp_path)
    for override in ("name=[", "name=x: y: z", "name=\x1b"):
        with pytest.raises(ConfigError, match="override .* is not valid YAML"):
            load_recipe(None, [override])


@pytest.mark.parametrize("value", ["9" * 5000, "[" * 5000 + "]" * 5000, "[" * 40 + "]" * 40])
def test_json_that_python_cannot_read_is_a_problem_naming_the_line(tmp_path, value):
    """A 5,000-digit number passes JSON's grammar but not Python's 4,300-digit limit; nesting
    passes it but not Python's recursion limit (or, 40 deep, a manifest's)."""
    make_image(tmp_path / "a.jpg", size=32)
    make_image(tmp_path / "b.jpg", size=32)
    (tmp_path / "metadata.jsonl").write_text(f'{{"file_name": "a.jpg"}}\n{{"file_name": "b.jpg", "x": {value}}}\n')
    report = validate(DataConfig(reader="imagefolder", path=str(tmp_path)), tmp_path)
    assert [r.id for r in report.records] == ["a.jpg"]
    (problem,) = [p for p in report.problems if p.severity == "error"]
    assert problem.line == 2 and problem.kind in ("unparseable_json", "bad_value")
    (tmp_path / "captions.json").write_text(f'{{"a.jpg": {value}}}')
    report = validate(DataConfig(reader="deepfashion", path=str(tmp_path)), tmp_path)
    assert report.records == [] and report.problems[0].file.endswith("captions.json")


def test_a_recipe_number_python_cannot_read_is_a_config_error(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="4300 digits"):
        load_recipe(path)
    with pytest.raises(ConfigError, match=r"override 'seed=9+\.\.\. \(5005 characters\)'"):
        load_recipe(None, ["seed=" + "9" * 5000])


def test_an_integer_past_a_floats_range_is_a_config_error(tmp_path):
    """A number knob given a 400-digit integer: Python reads it, float() cannot hold it."""
    path = tmp_path / "recipe.yaml"
    path.write_text("generate:\n  img2img:\n    strength: " + "9" * 400 + "\n")
    with pytest.raises(ConfigError, match=r"generate\.img2img\.strength: an integer of 400 digits is too large"):
        load_recipe(path)
    with pytest.raises(ConfigError, match=r"generate\.img2img\.strength: an integer of 400 digits is too large"):
        load_recipe(None, ["generate.img2img.strength=" + "9" * 400])
