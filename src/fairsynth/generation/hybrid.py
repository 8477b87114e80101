"""The hybrid arm's generator: new images of chosen cells from the study's trained model.

FairSkin's plan, hybrid strategy: while the classifier trains, generate more of the class ×
skin-type cells where its validation loss is highest, with the trained adapter, a budget per
round, cached. Each round is an ordinary ``fairsynth generate`` run — same prompt, sampler,
filters and crash safety — on a ``counts`` plan over the chosen cells, written to
``<downstream.output>/hybrid/seed-<k>/round-<r>``; a rerun finds it complete and reuses it.

It lives with generation, not downstream: the classifier study only calls the
:data:`~fairsynth.downstream.train.CellGenerator` it is given, so downstream stays below
the generation (whose classifier-confidence filter reads downstream's trained classifier).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

from fairsynth.data.fst import parse_fst
from fairsynth.data.records import read_manifest
from fairsynth.downstream.data import Sample, group_value
from fairsynth.downstream.train import CellGenerator
from fairsynth.generation.config import PlanConfig
from fairsynth.io import resolve_inside

def cell_id(label: str, group: str, group_by: str) -> str:
    """The generation plan's id of a (class, group) cell: ``melanoma/fst=6``."""
    value = parse_fst(group) if group_by == "fst" else group
    return f"{label}/{group_by}={value}"


def recipe_generator(recipe, seed: int, log: Callable[[str], None] = print) -> CellGenerator:
    """A :data:`~fairsynth.downstream.train.CellGenerator` that runs the recipe's generation."""
    from fairsynth.generation.run import generate

    group_by = recipe.downstream.group_by

    def generate_cells(cells: list[tuple[str, str]], per_cell: int, round_index: int) -> list[Sample]:
        study = copy.deepcopy(recipe)
        out = Path(recipe.downstream.output) / "hybrid" / f"seed-{seed}" / f"round-{round_index}"
        counts = {cell_id(label, group, group_by): per_cell for label, group in cells}
        study.generate.output = str(out)
        study.generate.seed = (recipe.generate.seed or 0) + 1000 * (seed + 1) + round_index
        study.generate.plan = PlanConfig(
            total=sum(counts.values()), distribution="counts", counts=counts, by=[group_by],
            classes=sorted({label for label, _ in cells}), oversample=recipe.generate.plan.oversample,
            max_attempts=recipe.generate.plan.max_attempts,
        )
        log(f"hybrid seed {seed}, round {round_index}: {per_cell} images for each of {', '.join(counts)}")
        generate(study, progress=False, log=log)
        manifest = out / "metadata.jsonl"
        return [
            Sample(resolve_inside(out, r.image), str(r.label), group_value(r, group_by), True, f"hybrid-{seed}-{round_index}-{r.id}")
            for r in read_manifest(manifest)
        ]

    return generate_cells
