"""`fairsynth sweep`: the grid, each configuration's recipe, and the table gathered from their outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairsynth.recipe import DEMO_RECIPE, load_recipe
from fairsynth.sweep import SweepError, configurations, folder_name, parse_grid, part_recipe, run_sweep


def demo(tmp_path: Path, *overrides: str):
    return load_recipe(DEMO_RECIPE, [f"workdir={tmp_path / 'study'}", *overrides])


def test_grid_parsing_and_its_errors():
    assert parse_grid(["method=lora,dora", "rank=1, 4"]) == {"method": ["lora", "dora"], "rank": ["1", "4"]}
    for bad, message in ((["rank"], "NAME=V1"), (["rank=1", "rank=2"], "twice"), (["rank=1,1"], "repeats"), ([], "at least one")):
        with pytest.raises(SweepError, match=message):
            parse_grid(bad)


def test_configurations_map_names_to_each_methods_own_options_and_run_coinciding_ones_once(tmp_path):
    recipe = demo(tmp_path)  # method: pivotal
    grid = parse_grid(["method=lora,full,pivotal", "rank=1,4", "target=unet,both"])
    configs = configurations(grid, recipe)
    names = [c.name for c in configs]
    # full fine-tuning has no rank: its two rank values coincide and run once per target
    assert names == [
        "method=lora,rank=1,target=unet", "method=lora,rank=1,target=both", "method=lora,rank=4,target=unet",
        "method=lora,rank=4,target=both", "method=full,target=unet", "method=full,target=both",
        "method=pivotal,rank=1,target=unet", "method=pivotal,rank=1,target=both", "method=pivotal,rank=4,target=unet",
        "method=pivotal,rank=4,target=both",
    ]
    lora = configs[0]
    assert lora.overrides == ("train.method=lora", "train.options={}", "train.options.rank=1", "train.options.apply_to=unet")
    assert configs[4].settings == {"method": "full", "rank": "n/a", "target": "unet"}
    # the recipe's own method keeps its options; its rank is pivotal's lora_rank
    assert configs[6].overrides == ("train.options.lora_rank=1", "train.options.apply_to=unet")
    assert folder_name(lora) == "method-lora_rank-1_target-unet"
    with pytest.raises(SweepError, match="lroa"):
        configurations(parse_grid(["method=lroa"]), recipe)


def test_a_configurations_recipe_shares_the_data_and_classifier_and_owns_the_rest(tmp_path):
    recipe = demo(tmp_path)
    config = configurations(parse_grid(["method=lora", "rank=2"]), recipe)[0]
    part = part_recipe(recipe, config.overrides, tmp_path / "study" / "sweep" / "x", ["train", "generate"], ["mixed"])
    assert part.world is None and part.stages == ["train", "generate"]
    assert part.train.method == "lora" and part.train.options["rank"] == 2
    assert part.train.data == recipe.train.data  # the parent's prepared data
    assert part.train.output == str(tmp_path / "study" / "sweep" / "x" / "train")
    assert part.generate.adapters[0].path == str(tmp_path / "study" / "sweep" / "x" / "train" / "model")
    assert part.filter.options["classifier_confidence"]["model"] == recipe.filter.options["classifier_confidence"]["model"]
    assert part.evaluate.weights["classifier"] == recipe.evaluate.weights["classifier"]
    assert part.downstream.arms == ["mixed"] and part.downstream.real == recipe.downstream.real
    # what the configuration generates is what it evaluates and trains on
    assert part.evaluate.synthetic == part.downstream.synthetic == str(tmp_path / "study" / "sweep" / "x" / "generated" / "metadata.jsonl")
    assert part.evaluate.real == recipe.evaluate.real
    bad = configurations(parse_grid(["train.steps=many"]), recipe)[0]
    with pytest.raises(SweepError, match="train.steps"):
        part_recipe(recipe, bad.overrides, tmp_path / "y", ["train"], ["mixed"])


def test_the_table_gathers_each_configurations_outputs_and_names_failures(tmp_path):
    recipe = demo(tmp_path)
    ran = []

    def fake_run(recipe_path: Path, log_path: Path) -> int:
        folder = recipe_path.parent
        ran.append(folder.name)
        part = load_recipe(recipe_path)
        if folder.name == "method-lora_rank-4":
            return 1
        arm = part.downstream.arms[0]
        table = {"accuracy": {"arms": {arm: {"mean": 0.5 if arm == "real" else 0.6}}},
                 "auroc_gap": {"arms": {arm: {"mean": 0.1}}}}
        (folder / "downstream").mkdir(parents=True)
        (folder / "downstream" / "compare.json").write_text(json.dumps({"table": table}))
        if arm != "real":
            (folder / "train" / "model").mkdir(parents=True)
            info = {"trainable_parameters": 1000 * int(part.train.options["rank"]), "adapter_bytes": 2_000_000,
                    "training_seconds": 3.5, "peak_memory_bytes": 5e8, "peak_memory_kind": "process peak RSS"}
            (folder / "train" / "model" / "training_info.json").write_text(json.dumps(info))
            (folder / "evaluation").mkdir()
            results = [{"metric": "fd", "group_by": "overall", "group": "all", "extractor": "classifier", "value": 12.5},
                       {"metric": "fd", "group_by": "fst", "group": "VI", "extractor": "classifier", "value": 20.0}]
            (folder / "evaluation" / "evaluation.json").write_text(json.dumps({"results": results}))
        return 0

    with pytest.raises(SweepError, match="1 configuration.*method=lora,rank=4"):
        run_sweep(recipe, parse_grid(["method=lora", "rank=1,4"]), run=fake_run, forgetting=False, log=lambda m: None)
    assert ran == ["baseline", "method-lora_rank-1", "method-lora_rank-4"]
    rows = json.loads((tmp_path / "study" / "sweep" / "table.json").read_text())
    assert rows[0] == {"configuration": "real only (baseline)", "status": "ok", "real accuracy": 0.5, "real AUROC gap": 0.1}
    one = rows[1]
    assert one["configuration"] == "method=lora,rank=1" and one["status"] == "ok"
    assert one["trainable parameters"] == 1000 and one["adapter MB"] == 2.0 and one["peak memory MB"] == 500.0
    assert one["FD@classifier"] == 12.5 and one["FD@classifier fst=VI"] == 20.0 and one["mixed accuracy"] == 0.6
    assert rows[2]["status"].startswith("failed (exit 1")
    markdown = (tmp_path / "study" / "sweep" / "table.md").read_text()
    assert "| method=lora,rank=1 |" in markdown and "real-only baseline" in markdown


def test_a_second_grid_adds_its_rows_to_the_same_table(tmp_path):
    recipe = demo(tmp_path)

    def fake_run(recipe_path: Path, log_path: Path) -> int:
        return 0

    run_sweep(recipe, parse_grid(["rank=1,2"]), run=fake_run, forgetting=False, log=lambda m: None)
    rows, _ = run_sweep(recipe, parse_grid(["target=unet", "rank=2"]), run=fake_run, forgetting=False, log=lambda m: None)
    table = json.loads((tmp_path / "study" / "sweep" / "table.json").read_text())
    assert [row["configuration"] for row in table] == ["real only (baseline)", "rank=1", "rank=2", "target=unet,rank=2"]
    assert table == rows


def test_a_sweep_runs_each_configuration_as_its_own_study_on_a_tiny_base(tmp_path, tiny_base, monkeypatch):
    from typer.testing import CliRunner

    from fairsynth.cli import app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each configuration is a child process
    tiny = [
        f"workdir={tmp_path / 'study'}", "world.n=96", "world.size=64", "prepare.resolution=[32]",
        f"train.base.source={tiny_base}", "train.steps=2", "train.batch_size=4",
        "generate.plan.total=12", "generate.plan.max_attempts=1.5", "generate.steps=2", "generate.batch_size=12",
        "downstream.epochs=1", "downstream.seeds=[0]", "downstream.bootstrap_resamples=10", "downstream.image_size=32",
        "filter.checks=[resolution]", "filter.options={}",
    ]
    result = CliRunner().invoke(app, [
        "sweep", str(DEMO_RECIPE), *tiny, "--grid", "method=lora", "--grid", "rank=1,2", "--stages", "train,generate,downstream",
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "study" / "sweep" / "table.json").read_text())
    assert [row["configuration"] for row in rows] == ["real only (baseline)", "method=lora,rank=1", "method=lora,rank=2"]
    one, two = rows[1], rows[2]
    assert one["status"] == "ok" and two["status"] == "ok"
    assert two["trainable parameters"] == 2 * one["trainable parameters"]  # LoRA parameters grow with the rank
    assert one["peak memory kind"] == "process peak RSS" and one["peak memory MB"] > 0
    assert "real accuracy" in rows[0] and "mixed accuracy" in one
    assert "forgetting: not measured" in result.output
    for folder in ("method-lora_rank-1", "method-lora_rank-2"):
        state = json.loads((tmp_path / "study" / "sweep" / folder / "run-state.json").read_text())
        assert set(state) == {"train", "generate", "downstream"} and all("finished" in v for v in state.values())
