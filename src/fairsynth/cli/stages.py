"""What each stage of `fairsynth run` does: :data:`STAGE_RUNNERS` (see fairsynth.study for when one runs).

Each runner reuses the stage command's own steps (``_run_prepare``, ``_run_train``, ...), so a stage
prints and fails the way its command does.
"""

from __future__ import annotations

from pathlib import Path

from fairsynth.cli.common import _fail, console, errors, print_problems
from fairsynth.cli.downstream import _run_ablate, _run_curve, _run_downstream
from fairsynth.cli.evaluate import _run_evaluate
from fairsynth.cli.generate import _guarded, _print_delivery
from fairsynth.cli.prepare import _run_prepare
from fairsynth.cli.train import _run_train


def _stage_world(recipe, action) -> None:
    from fairsynth.data.validation import validate as run_validation
    from fairsynth.world.derm import generate_world

    world = generate_world(recipe.world_dir, recipe.world)
    console.print(f"{world.n} images and a Fitzpatrick17k-format CSV in {world.root}")
    report = run_validation(recipe.data, min_size=min(recipe.prepare.size))
    if not report.ok:
        print_problems(report.problems, limit=50)
        _fail("the generated world does not validate", code=1)
    console.print(f"valid: {len(report.records)} rows ({report.source})")
    if recipe.world.test_per_type > 0:
        from fairsynth.world.derm import balanced_test_world

        test_world = balanced_test_world(recipe.world)
        tested = generate_world(recipe.world_test_dir, test_world)
        console.print(
            f"external test world: {tested.n} images, {recipe.world.test_per_type} per skin type I-VI "
            f"(seed {test_world.seed}), in {tested.root}", markup=False,
        )


def _test_world_recipe(recipe):
    """The recipe that prepares the external test world exactly like the world itself."""
    import copy

    tested = copy.deepcopy(recipe)
    tested.data.path = str(recipe.world_test_dir / "fitzpatrick17k.csv")
    tested.prepare.output = str(recipe.prepared_test_dir)
    return tested


def _stage_prepare(recipe, action) -> None:
    _run_prepare(recipe)
    if recipe.world is not None and recipe.world.test_per_type > 0:
        console.print("the external test world:", markup=False)
        _run_prepare(_test_world_recipe(recipe))


def _stage_train(recipe, action) -> None:
    _run_train(recipe, resume="latest")  # a stale run was moved aside: "latest" then starts fresh
    if recipe.world is not None:
        # the procedural world's hidden truth makes the before/after grid measurable
        _demo_conditioning(recipe)


def _stage_classifier(recipe, action) -> None:
    _run_downstream(recipe, "real", str(recipe.downstream.seeds[0]), table=False)


def _stage_generate(recipe, action) -> None:
    from fairsynth.generation.run import generate as run_generate

    result = _guarded(lambda: run_generate(recipe, log=lambda m: console.print(m, markup=False)))
    _print_delivery(result, "generated", fail_on_shortfall=False)
    if recipe.world is not None:
        _read_truth(recipe)


def _read_truth(recipe) -> None:
    """The world's judges read every generated image; the reading joins generated/report.json."""
    import json

    from fairsynth.io import atomic_write_text
    from fairsynth.world.truth import read_truth, summary_line

    folder = Path(recipe.generate.output)
    truth = read_truth(folder, recipe.world.skin_type_effect)
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["truth"] = truth
    atomic_write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")

    console.print(f"truth: {summary_line(truth)}", markup=False)


def _stage_downstream(recipe, action) -> None:
    from fairsynth.downstream.compare import render_table

    delivered = Path(recipe.downstream.synthetic)
    lines = delivered.read_text().splitlines() if delivered.is_file() else []
    arms = None
    if not any(line.strip() for line in lines) and recipe.downstream.arms != ["real"]:
        errors.print(f"warning: no synthetic image passed the filters ({delivered}): comparing the real arm only",
                     markup=False)
        arms = "real"
    compared = _run_downstream(recipe, arms, None)
    console.print(render_table(compared["table"], compared["arms"], compared["seeds"], compared.get("test_sets"),
                               compared.get("oracle_share"), (compared.get("tests") or {}).get("description")), markup=False)


def _stage_report(recipe, action) -> None:
    from fairsynth.report import ReportError, build_report

    try:
        page = build_report(Path(recipe.workdir))
    except ReportError as err:
        _fail(str(err))
    console.print(f"report: {page}", markup=False)


#: What each stage of `fairsynth run` does (see fairsynth.study for when it runs).
STAGE_RUNNERS = {
    "world": _stage_world,
    "prepare": _stage_prepare,
    "train": _stage_train,
    "classifier": _stage_classifier,
    "generate": _stage_generate,
    "evaluate": lambda recipe, action: _run_evaluate(recipe.evaluate),
    "downstream": _stage_downstream,
    "curve": lambda recipe, action: _run_curve(recipe),
    "ablate": lambda recipe, action: _run_ablate(recipe),
    "report": _stage_report,
}


def _demo_conditioning(recipe) -> None:
    """Draw the class x skin-type grid before and after fine-tuning and score it from pixels."""
    import dataclasses
    import json

    from fairsynth.generation.config import AdapterSpec
    from fairsynth.generation.pipeline import load_sampler
    from fairsynth.io import atomic_write_text
    from fairsynth.world.judge import JUDGE_CLASSES, shipped_judge
    from fairsynth.world.proof import measure_conditioning, save_grid, token_prompt

    judge, judge_report = shipped_judge(recipe.world.skin_type_effect)
    out = Path(recipe.train.output)
    token_per = recipe.train.options.get("token_per", "class_and_fst")
    tokens = recipe.train.method in ("pivotal", "textual_inversion")
    scores = {}
    for name, adapters in (("base", []), ("fine-tuned", [AdapterSpec(path=str(out / "model"))])):
        cfg = dataclasses.replace(recipe.generate, adapters=adapters)
        sampler = load_sampler(cfg)
        prompt_for = (lambda cell: token_prompt(cell, token_per)) if tokens and adapters else None
        score, images, _ = measure_conditioning(
            sampler, judge, per_cell=2, seed=1000, prompt_for=prompt_for, size=max(recipe.train.resolution)
        )
        grid = save_grid(images, len(JUDGE_CLASSES), 6, out / f"grid-{name}.png", per_cell=2)
        scores[name] = score.to_dict()
        console.print(f"{name}: {score.line()}; grid {grid}", markup=False)
    scores["judge"] = {
        "skin_type_effect": recipe.world.skin_type_effect, "held_out_accuracy": judge_report.get("held_out_accuracy"),
        "held_out_accuracy_by_cell": judge_report.get("held_out_accuracy_by_cell"),
    }
    atomic_write_text(out / "conditioning.json", json.dumps(scores, indent=1) + "\n")
