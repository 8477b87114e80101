"""The plan is pure: targets, rounding, named distributions, seeds, sharding and round planning."""

from __future__ import annotations

import pytest

from fairsynth.config import ConfigError
from fairsynth.data.records import Record
from fairsynth.generation.config import PlanConfig
from fairsynth.generation.plan import (
    PlanError,
    allocate,
    build_plan,
    image_seed,
    plan_rows,
    unet_evaluations_per_image,
)
from fairsynth.generation.run import current_round, next_attempts, planned_attempts
from fairsynth.generation.shard import batches, my_batches


def real(n_per_cell: dict[tuple[str, int], int]) -> list[Record]:
    out = []
    for (label, fst), n in n_per_cell.items():
        out += [Record(f"{label}{fst}-{i}", "", label, None, {"fst": fst}) for i in range(n)]
    return out


SKEWED = real({("melanoma", 1): 30, ("melanoma", 2): 10, ("nevus", 1): 50, ("nevus", 3): 10})


def targets(plan) -> dict[str, int]:
    return {c.cell.id: c.target for c in plan.cells}


def test_allocate_adds_up_exactly_and_breaks_ties_by_order() -> None:
    assert allocate([1, 1, 1], 10) == [4, 3, 3]
    assert allocate([0.5, 0.25, 0.25], 7) == [3, 2, 2]  # 3.5, 1.75, 1.75: the larger remainders win
    assert sum(allocate([0.1, 0.2, 0.7, 1e-3], 9999)) == 9999
    with pytest.raises(PlanError, match="weight 0"):
        allocate([0, 0], 5)


def test_fairskin_shares_split_across_diagnoses() -> None:
    plan = build_plan(PlanConfig(total=60000, distribution="fairskin"), SKEWED, seed=0)
    got = targets(plan)
    # every skin type is planned, though the real data has only I-III
    assert {c.cell.value("fst") for c in plan.cells} == {1, 2, 3, 4, 5, 6}
    by_fst = {f: got[f"melanoma/fst={f}"] + got[f"nevus/fst={f}"] for f in range(1, 7)}
    assert by_fst == {1: 6000, 2: 6000, 3: 9000, 4: 9000, 5: 15000, 6: 15000}
    assert got["melanoma/fst=6"] == got["nevus/fst=6"] == 7500
    assert plan.total == 60000


def test_uniform_match_real_inverse_frequency_and_counts() -> None:
    uniform = targets(build_plan(PlanConfig(total=6, distribution="uniform"), SKEWED, 0))
    assert list(uniform.values()) == [1] * 6  # 2 classes x fst 1-3
    match = targets(build_plan(PlanConfig(total=100, distribution="match_real"), SKEWED, 0))
    assert match == {"melanoma/fst=1": 30, "melanoma/fst=2": 10, "melanoma/fst=3": 0,
                     "nevus/fst=1": 50, "nevus/fst=2": 0, "nevus/fst=3": 10}
    inverse = targets(build_plan(PlanConfig(total=100, distribution="inverse_frequency"), SKEWED, 0))
    assert inverse["melanoma/fst=3"] > inverse["melanoma/fst=2"] > inverse["melanoma/fst=1"] > inverse["nevus/fst=1"]
    counts = build_plan(PlanConfig(total=0, distribution="counts", counts={"nevus/fst=3": 7, "melanoma/fst=1": 2}), SKEWED, 0)
    assert targets(counts)["nevus/fst=3"] == 7 and counts.total == 9


def test_uniform_rounding_uses_the_whole_total() -> None:
    plan = build_plan(PlanConfig(total=8, distribution="uniform"), SKEWED, 0)
    assert plan.total == 8 and sorted(targets(plan).values()) == [1, 1, 1, 1, 2, 2]


def test_shares_with_roman_ranges_and_explicit_values() -> None:
    cfg = PlanConfig(total=100, distribution="shares", shares={"I-III": 0.5, "V-VI": 0.5}, values={"fst": [1, 2, 3, 4, 5, 6]})
    got = targets(build_plan(cfg, SKEWED, 0))
    assert sum(v for k, v in got.items() if k.endswith(("=4",))) == 0
    assert sum(v for k, v in got.items() if k.endswith(("=5", "=6"))) == 50


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (PlanConfig(total=10, distribution="counts", counts={"melanoma/fst=9": 3}), "do not exist"),
        (PlanConfig(total=10, distribution="counts", counts={"melanoma/fst=1": 3}), "add up to 3"),
        (PlanConfig(total=10, distribution="fairskin", by=[]), "not a cell axis"),
        (PlanConfig(total=10, distribution="shares", shares_by="pose", shares={"front": 1.0}), "not a cell axis"),
        (PlanConfig(total=0), "nothing to generate"),
        (PlanConfig(total=10, by=["pose"]), "no value of it"),
    ],
)
def test_impossible_targets_are_clear_errors(cfg: PlanConfig, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan(cfg, SKEWED, 0)


def test_match_real_without_real_images_and_config_errors() -> None:
    with pytest.raises(PlanError, match="no image of any cell"):
        build_plan(PlanConfig(total=10, distribution="match_real", classes=["a"], values={"fst": [1]}), [], 0)
    with pytest.raises(ConfigError, match="unknown"):
        PlanConfig(distribution="balanced")
    with pytest.raises(ConfigError, match="oversample"):
        PlanConfig(oversample=2.0, max_attempts=1.5)
    with pytest.raises(ConfigError, match="counts is empty"):
        PlanConfig(distribution="counts")


def test_seeds_depend_on_run_seed_cell_and_index_only() -> None:
    assert image_seed(0, "melanoma/fst=6", 3) == image_seed(0, "melanoma/fst=6", 3)
    seeds = {image_seed(s, c, i) for s in (0, 1) for c in ("a/fst=1", "a/fst=2") for i in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_sharding_splits_batches_without_changing_any_batch(world: int) -> None:
    todo = [(cell, i) for cell in ("a", "b", "c") for i in range(7)]
    reference = batches(todo, 4)
    shards = [my_batches(reference, rank, world) for rank in range(world)]
    union = sorted((tuple(b) for shard in shards for b in shard))
    assert union == sorted(tuple(b) for b in reference)  # same batches, each exactly once
    assert sorted(x for shard in shards for b in shard for x in b) == sorted(todo)


def test_first_round_cap_and_evaluation_estimates() -> None:
    plan = build_plan(PlanConfig(total=10, distribution="uniform", by=[], oversample=1.5, max_attempts=3.0, classes=["a", "b"]), [], 0)
    cell = plan.cells[0]
    assert (cell.target, plan.first_round(cell), plan.attempt_cap(cell)) == (5, 8, 15)
    assert unet_evaluations_per_image(20, 7.5) == 40 and unet_evaluations_per_image(50, 1.0) == 50
    assert unet_evaluations_per_image(30, 3.0, strength=0.5) == 30
    rows = plan_rows(plan, 40, 0.01)
    assert rows[-1]["cell"] == "total" and rows[-1]["unet_evaluations"] == 16 * 40 and rows[-1]["seconds"] == pytest.approx(6.4)


def test_next_round_makes_up_the_shortfall_at_the_observed_rate() -> None:
    assert next_attempts(10, 10, 10, 30, 1.0) == 10  # met
    assert next_attempts(10, 10, 5, 30, 1.0) == 20  # half accepted: 5 missing -> 10 more
    assert next_attempts(10, 10, 0, 30, 1.0) == 20  # none accepted: double
    assert next_attempts(10, 25, 5, 30, 1.0) == 30  # capped


def test_planned_attempts_replay_is_the_same_after_an_interruption() -> None:
    plan = build_plan(PlanConfig(total=4, distribution="uniform", by=[], classes=["a"], max_attempts=4.0), [], 0)

    def rows(n: int) -> list[dict]:  # every other candidate accepted
        return [{"cell": "a", "index": i, "accepted": i % 2 == 0} for i in range(n)]

    assert planned_attempts(plan, []) == {"a": 4}
    assert planned_attempts(plan, rows(4)) == {"a": 8}  # 2 of 4 accepted: 4 more
    assert planned_attempts(plan, rows(6)) == {"a": 8}  # interrupted mid-round: the same plan
    assert planned_attempts(plan, rows(8)) == {"a": 8}  # 4 accepted: done


def test_the_current_round_is_the_one_an_uninterrupted_run_is_at_whatever_was_finished() -> None:
    """Batches are cut from the whole round (finished candidates included), so a resumed run
    draws each image in the batch a run never killed drew it in; a cell that finished its part
    of a round waits for the others before it gets more."""
    plan = build_plan(PlanConfig(total=8, distribution="uniform", by=[], classes=["a", "b"], max_attempts=8.0), [], 0)
    verdicts = {"a": lambda i: i % 2 == 0, "b": lambda i: i < 2}  # a: every other one accepted; b: its first two

    def rows(a: int, b: int, skip: tuple = ()) -> list[dict]:
        return [{"cell": c, "index": i, "accepted": verdicts[c](i)} for c, n in (("a", a), ("b", b))
                for i in range(n) if (c, i) not in skip]

    first = [("a", i) for i in range(4)] + [("b", i) for i in range(4)]
    assert current_round(plan, []) == first
    assert current_round(plan, rows(4, 2)) == first  # a finished round 1, b did not: still round 1, a included
    assert planned_attempts(plan, rows(4, 2))["a"] == 8  # (a's own replay would already ask for round 2)
    assert current_round(plan, rows(4, 4, skip=(("a", 1),))) == first  # a hole in round 1
    second = [("a", i) for i in range(4, 8)] + [("b", i) for i in range(4, 8)]
    assert current_round(plan, rows(4, 4)) == second  # 2 of 4 accepted in each: 4 more each
    assert current_round(plan, rows(8, 5)) == second
    assert current_round(plan, rows(8, 8)) == [("b", i) for i in range(8, 16)]  # a met its target; b: 2 of 8
    assert current_round(plan, rows(8, 16)) == [("b", i) for i in range(16, 32)]  # 2 of 16: up to its cap
    assert current_round(plan, rows(8, 32)) == []  # b at its cap (8 x its target), a met: every round done
