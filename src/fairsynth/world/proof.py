"""Does a fine-tuned model draw the class and skin type it is asked for? Measured from pixels.

For every cell of a class × Fitzpatrick-type grid the model draws ``per_cell`` images from the
prompt the data was captioned with ("A dermoscopic image of melanoma on Fitzpatrick skin type
VI"); the lesion judge (:mod:`fairsynth.world.judge`) reads the class and ITA on the skin
region reads the skin type (:func:`fairsynth.world.judge.read_skin_type`). Reported:

- ``class_accuracy``: share of images the judge reads as the requested class (chance: 1 / classes);
- ``fst_within_one``: share whose ITA skin type is within one type of the requested one
  (chance depends on the base's colours; a model that ignores skin type and draws one mid tone
  scores about 0.5 on a uniform grid);
- per class and per skin type, so a failure on the rare types V-VI shows.

The judge's own accuracy on real world images and on the base VAE's reconstructions of them
(the build script's ``vae_ceiling``) bound what any fine-tune can reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from fairsynth.data.fst import to_roman
from fairsynth.world.judge import JUDGE_CLASSES, LesionJudge, judge_classes, read_skin_type

#: Caption template of the derm world's prepared data (the demo recipe's data.caption_template).
DERM_TEMPLATE = "A dermoscopic image of {diagnosis} on Fitzpatrick skin type {fst_roman}"


@dataclass
class ConditioningScore:
    """How often the drawn image shows the requested class and skin type."""

    n: int
    class_accuracy: float
    fst_within_one: float
    fst_exact: float
    per_class: dict[str, float] = field(default_factory=dict)
    per_fst: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        fst = ", ".join(f"{k} {v:.0%}" for k, v in self.per_fst.items())
        return (
            f"class read as requested {self.class_accuracy:.0%} (chance {1 / max(1, len(self.per_class)):.0%}); "
            f"skin type within one {self.fst_within_one:.0%} ({fst})"
        )


@dataclass(frozen=True)
class GridCell:
    """One requested (class, skin type) and its prompt."""

    label: str
    fst: int
    prompt: str


def grid_cells(classes: Sequence[str], fsts: Sequence[int], template: str = DERM_TEMPLATE) -> list[GridCell]:
    """Row-major cells: every class (rows) at every skin type (columns)."""
    return [
        GridCell(label, fst, template.format(diagnosis=label, label=label, fst=fst, fst_roman=to_roman(fst)))
        for label in classes for fst in fsts
    ]


def token_prompt(cell: GridCell, token_per: str = "class_and_fst") -> str:
    """The prompt a textual-inversion / pivotal model was trained with: its tokens prepended
    (``token_per`` as the method's option: ``class_and_fst``, ``class`` or ``class_plus_fst``)."""
    from fairsynth.data.captions import concept_tokens

    return f"{' '.join(concept_tokens(cell.label, cell.fst, token_per))}, {cell.prompt}"


def score_images(
    images: np.ndarray, labels: Sequence[str], fsts: Sequence[int], judge: LesionJudge,
) -> ConditioningScore:
    """Score ``images`` ``(N, S, S, 3)`` uint8 against their requested labels and skin types."""
    read = judge_classes(judge, images)
    types = [read_skin_type(image) for image in images]
    correct = np.array([r == l for r, l in zip(read, labels)])
    within = np.array([abs(t - f) <= 1 for t, f in zip(types, fsts)])
    exact = np.array([t == f for t, f in zip(types, fsts)])
    classes = list(dict.fromkeys(labels))
    confusion = {c: {r: int(sum(1 for x, y in zip(labels, read) if x == c and y == r)) for r in JUDGE_CLASSES} for c in classes}
    per_class = {c: float(correct[[l == c for l in labels]].mean()) for c in classes}
    per_fst = {to_roman(f): float(within[[x == f for x in fsts]].mean()) for f in sorted(set(fsts))}
    return ConditioningScore(
        len(labels), float(correct.mean()), float(within.mean()), float(exact.mean()), per_class, per_fst, confusion
    )


def measure_conditioning(
    sampler: Any,
    judge: LesionJudge,
    classes: Sequence[str] = JUDGE_CLASSES,
    fsts: Sequence[int] = (1, 2, 3, 4, 5, 6),
    per_cell: int = 4,
    template: str = DERM_TEMPLATE,
    seed: int = 0,
    batch_size: int = 24,
    size: int = 64,
    prompt_for: Callable[[GridCell], str] | None = None,
) -> tuple[ConditioningScore, np.ndarray, list[GridCell]]:
    """Draw ``per_cell`` images of every cell with ``sampler`` and score them.

    ``sampler`` is a :class:`fairsynth.generation.pipeline.Sampler` (base + trained outputs; a
    class-embedding model takes the cell's label and fst instead of the prompt). Image ``k``
    uses seed ``seed + k``. ``prompt_for`` rewrites a cell's prompt the way its method trained
    (textual inversion: the cell's placeholder token in front, :func:`token_prompt`). Returns the score, the images ``(N, S, S, 3)`` in cell order (each
    cell's ``per_cell`` images together) and the cells.
    """
    from fairsynth.generation.pipeline import ImageRequest

    cells = grid_cells(classes, fsts, template)
    requests = [
        ImageRequest(prompt=prompt_for(cell) if prompt_for else cell.prompt, negative_prompt="", seed=seed + k, label=cell.label, attributes={"fst": cell.fst})
        for k, cell in enumerate(c for c in cells for _ in range(per_cell))
    ]
    drawn: list[np.ndarray] = []
    for start in range(0, len(requests), batch_size):
        batch = requests[start : start + batch_size]
        drawn += [np.asarray(image.convert("RGB")) for image in sampler(batch, (size, size))]
    images = np.stack(drawn)  # (N, S, S, 3)
    labels = [r.label for r in requests]
    fsts_requested = [r.attributes["fst"] for r in requests]
    return score_images(images, labels, fsts_requested, judge), images, cells


def grid_image(images: np.ndarray, rows: int, columns: int, per_cell: int = 1) -> Image.Image:
    """The first image of each cell on a rows × columns sheet (cells in row-major order)."""
    side = images.shape[1]
    sheet = Image.new("RGB", (columns * side, rows * side), "white")
    for index in range(rows * columns):
        sheet.paste(Image.fromarray(images[index * per_cell]), ((index % columns) * side, (index // columns) * side))
    return sheet


def save_grid(images: np.ndarray, rows: int, columns: int, path: str | Path, per_cell: int = 1) -> Path:
    """Write :func:`grid_image` as a PNG, atomically."""
    import io

    from fairsynth.io import atomic_write_bytes

    buffer = io.BytesIO()
    grid_image(images, rows, columns, per_cell).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
