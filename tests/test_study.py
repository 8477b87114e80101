"""`fairsynth run`'s core: fingerprints, what is up to date, crash resume, stale outputs set aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairsynth.recipe import DEMO_RECIPE, load_recipe
from fairsynth.study import STATE_NAME, StudyError, fingerprints, plan, run_study, stages_of


def demo(tmp_path: Path, *overrides: str):
    return load_recipe(DEMO_RECIPE, [f"workdir={tmp_path / 'study'}", *overrides])


class FakeStages:
    """Stage runners that write each stage's outputs, count calls and can crash on demand."""

    def __init__(self, recipe) -> None:
        self.stages = {stage.name: stage for stage in stages_of(recipe)}
        self.calls: list[tuple[str, str]] = []
        self.crash: str | None = None

    def runner(self, name: str):
        def run(recipe, action):
            self.calls.append((name, action))
            stage = self.stages[name]
            for folder in stage.folders:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "partial.txt").write_text(name)
            if self.crash == name:
                raise KeyboardInterrupt(f"killed during {name}")
            for path in stage.outputs:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(name)

        return run

    def __getitem__(self, name: str):
        return self.runner(name)


def test_demo_recipe_runs_its_configured_stages_and_the_classifier_its_filter_reads(tmp_path):
    names = [stage.name for stage in stages_of(demo(tmp_path))]
    assert names == ["world", "prepare", "train", "classifier", "generate", "evaluate", "downstream", "report"]
    # named or not, the classifier runs before the stages that read it
    implied = demo(tmp_path, "stages=[world, prepare, train, generate]")
    assert [stage.name for stage in stages_of(implied)] == ["world", "prepare", "train", "classifier", "generate"]
    without = demo(tmp_path, "stages=[world, prepare, train, generate]", "filter.checks=[resolution]", "filter.options={}")
    assert "classifier" not in [stage.name for stage in stages_of(without)]
    explicit = demo(tmp_path, "stages=[prepare, train, evaluate]", "evaluate.metrics=[fd@inception]")
    assert [stage.name for stage in stages_of(explicit)] == ["prepare", "train", "evaluate"]


def test_a_changed_setting_changes_its_stage_and_every_later_stage_only(tmp_path):
    before = fingerprints(demo(tmp_path), stages_of(demo(tmp_path)))
    after = fingerprints(demo(tmp_path, "generate.steps=10"), stages_of(demo(tmp_path)))
    same = [name for name in before if before[name] == after[name]]
    assert same == ["world", "prepare", "train", "classifier"]
    trained = fingerprints(demo(tmp_path, "train.learning_rate=3e-4"), stages_of(demo(tmp_path)))
    assert [name for name in before if before[name] == trained[name]] == ["world", "prepare", "classifier"]


def test_data_the_study_did_not_make_is_hashed(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    recipe = load_recipe(None, [f"workdir={tmp_path / 'w'}", f"data.path={csv}", "stages=[prepare]"])
    first = fingerprints(recipe, stages_of(recipe))["prepare"]
    assert fingerprints(recipe, stages_of(recipe))["prepare"] == first
    csv.write_text("a,b\n1,3\n")
    assert fingerprints(recipe, stages_of(recipe))["prepare"] != first
    csv.unlink()
    with pytest.raises(StudyError, match="data.csv does not exist"):
        fingerprints(recipe, stages_of(recipe))


def test_a_second_run_skips_everything_and_a_change_reruns_only_what_it_affects(tmp_path):
    recipe = demo(tmp_path)
    fake = FakeStages(recipe)
    first = run_study(recipe, fake, log=lambda m: None)
    assert [a for _, a, _ in first] == ["run"] * 8
    fake.calls.clear()
    second = run_study(recipe, fake, log=lambda m: None)
    assert [a for _, a, _ in second] == ["skip"] * 8 and fake.calls == []

    changed = demo(tmp_path, "downstream.epochs=3")
    third = run_study(changed, fake, log=lambda m: None)
    assert {n: a for n, a, _ in third} == {
        "world": "skip", "prepare": "skip", "train": "skip", "classifier": "rerun", "generate": "rerun",
        "evaluate": "rerun", "downstream": "rerun", "report": "rerun",
    }
    # the earlier outputs were set aside intact, named by their old fingerprint
    stale = tmp_path / "study" / "stale"
    assert any(path.name.startswith("generate-") and (path / "generated" / "report.json").is_file() for path in stale.iterdir())


def test_a_crash_resumes_the_interrupted_stage_and_keeps_the_finished_ones(tmp_path):
    recipe = demo(tmp_path)
    fake = FakeStages(recipe)
    fake.crash = "generate"
    with pytest.raises(KeyboardInterrupt):
        run_study(recipe, fake, log=lambda m: None)
    state = json.loads((tmp_path / "study" / STATE_NAME).read_text())
    assert "finished" in state["train"] and "finished" not in state["generate"]

    fake.crash, fake.calls = None, []
    again = run_study(recipe, fake, log=lambda m: None)
    assert {n: a for n, a, _ in again}["generate"] == "resume"
    assert fake.calls[0] == ("generate", "resume")  # nothing before it ran again
    assert (tmp_path / "study" / "generated" / "partial.txt").is_file()  # what it had written is still there


def test_force_and_until(tmp_path):
    recipe = demo(tmp_path)
    fake = FakeStages(recipe)
    done = run_study(recipe, fake, until="train", log=lambda m: None)
    assert [n for n, _, _ in done] == ["world", "prepare", "train"]
    run_study(recipe, fake, log=lambda m: None)
    fake.calls.clear()
    run_study(recipe, fake, force=["downstream"], log=lambda m: None)
    assert [name for name, _ in fake.calls] == ["downstream", "report"]
    with pytest.raises(StudyError, match="unknown stage"):
        plan(recipe, ["trian"])
    with pytest.raises(StudyError, match="--until"):
        run_study(recipe, fake, until="everything", log=lambda m: None)


def test_a_stage_that_writes_nothing_is_not_marked_finished(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    recipe = load_recipe(None, [f"workdir={tmp_path / 'study'}", f"data.path={csv}", "stages=[prepare]"])
    with pytest.raises(StudyError, match="finished without writing .*metadata.jsonl"):
        run_study(recipe, {"prepare": lambda recipe, action: None}, log=lambda m: None)
    assert "finished" not in json.loads((tmp_path / "study" / STATE_NAME).read_text())["prepare"]


def test_a_corrupt_state_file_is_a_clear_error(tmp_path):
    recipe = demo(tmp_path)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / STATE_NAME).write_text("{not json")
    with pytest.raises(StudyError, match="run-state.json is not valid JSON"):
        plan(recipe)


def test_a_study_without_the_upstream_stage_hashes_what_it_reads_from_it(tmp_path):
    parent = demo(tmp_path)
    prepared = Path(parent.prepare.output) / "metadata.jsonl"
    classifier = Path(parent.filter.options["classifier_confidence"]["model"]) / "model.safetensors"
    for path, text in ((prepared, "{}\n"), (classifier, "weights")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    part = demo(tmp_path, "stages=[train, generate]", f"workdir={tmp_path / 'part'}",
                f"train.data={prepared}", f"generate.real={prepared}", f"filter.real={prepared}", f"filter.train={prepared}",
                f"filter.options.classifier_confidence.model={classifier.parent}")
    stages = {stage.name: stage for stage in stages_of(part)}
    assert prepared in stages["train"].inputs and classifier in stages["generate"].inputs
    before = fingerprints(part, stages_of(part))
    classifier.write_text("other weights")
    after = fingerprints(part, stages_of(part))
    assert before["train"] == after["train"] and before["generate"] != after["generate"]
    prepared.write_text('{"changed": 1}\n')
    assert fingerprints(part, stages_of(part))["train"] != after["train"]


def test_the_curve_and_ablation_are_stages_whose_settings_rerun_only_themselves(tmp_path):
    full = "stages=[world, prepare, train, classifier, generate, evaluate, downstream, curve, ablate, report]"
    recipe = demo(tmp_path, full)
    assert [stage.name for stage in stages_of(recipe)][-4:] == ["downstream", "curve", "ablate", "report"]
    before = fingerprints(recipe, stages_of(recipe))
    ratios = fingerprints(demo(tmp_path, full, "downstream.curve.ratios=[0, 1]"), stages_of(recipe))
    assert [n for n in before if before[n] != ratios[n]] == ["curve", "report"]
    keep = fingerprints(demo(tmp_path, full, "downstream.ablate.keep=[1, 0]"), stages_of(recipe))
    assert [n for n in before if before[n] != keep[n]] == ["ablate", "report"]
    seeds = fingerprints(demo(tmp_path, full, "downstream.epochs=5"), stages_of(recipe))
    assert {"classifier", "downstream", "curve", "ablate"} <= {n for n in before if before[n] != seeds[n]}
    switched = fingerprints(demo(tmp_path, full, "downstream.curve.enabled=true"), stages_of(recipe))
    assert switched == before  # whether a recipe without stages runs it is no setting of its runs
    # a recipe that names no stages runs them when enabled
    plain = load_recipe(None, [f"workdir={tmp_path / 'p'}", "downstream.curve.enabled=true"])
    assert "curve" in [s.name for s in stages_of(plain)] and "ablate" not in [s.name for s in stages_of(plain)]


def test_a_stale_comparison_leaves_the_curve_and_ablation_files_alone(tmp_path):
    full = "stages=[world, prepare, train, classifier, generate, evaluate, downstream, curve, ablate, report]"
    recipe = demo(tmp_path, full)
    downstream = Path(recipe.downstream.output)
    for name in ("compare.json", "curve.json", "ablate.md", "mixed/seed-0/metrics.json", "curve/ratio-0/seed-0/metrics.json"):
        (downstream / name).parent.mkdir(parents=True, exist_ok=True)
        (downstream / name).write_text("x")
    stages = {stage.name: stage for stage in stages_of(recipe)}
    assert downstream / "compare.json" in stages["downstream"].folders and downstream / "mixed" in stages["downstream"].folders
    assert not {downstream / "curve.json", downstream / "curve", downstream / "ablate.md"} & set(stages["downstream"].folders)
    assert downstream / "curve" in stages["curve"].folders and downstream / "ablate.md" in stages["ablate"].folders
    without_classifier = demo(tmp_path, "stages=[world, prepare, train, downstream, curve]", "filter.checks=[resolution]",
                              "filter.options={}", "evaluate.metrics=[fd@inception]")
    folders = {stage.name: stage for stage in stages_of(without_classifier)}["downstream"].folders
    assert downstream not in folders and downstream / "compare.json" in folders and downstream / "curve.json" not in folders
