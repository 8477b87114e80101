"""`fairsynth generate` and `fairsynth filter`, top to bottom.

:func:`generate` does:

1. the plan: cells and targets from the recipe and the real data (``--dry-run`` stops here);
2. the process group (``accelerate launch``) and the output folder: foreign files, or images
   made with other settings, are errors before any model loads;
3. the model: base, trained outputs (base hash checked), scheduler, IP-Adapter, refiner;
4. per cell: its prompt, its img2img source / IP-Adapter reference images, and a warning for
   a cell the trained output never saw;
5. the checks: references and extractors loaded once (missing weights fail now);
6. rounds: the candidates each cell still needs, cut into batches shared across processes;
   each batch is sampled, saved (atomic PNG), measured and journalled; then process 0 judges
   every candidate and plans the next round, until every cell meets its target or its cap;
7. the outputs: images moved where their verdicts say, ``metadata.jsonl`` (exactly the
   targets, or fewer with the shortfall reported), ``candidates.jsonl``, ``report.json``.

Rerunning the same command continues an interrupted run: finished images are kept, the rest
is generated, and the result is what an uninterrupted run delivers.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from fairsynth.config import save_resolved, to_dict
from fairsynth.data.captions import render_caption
from fairsynth.data.fst import group_of
from fairsynth.data.records import Record, read_manifest
from fairsynth.filters.apply import judge, measure_images, measure_missing, select
from fairsynth.filters.config import FilterConfig
from fairsynth.generation.config import GenerateConfig
from fairsynth.generation.plan import (
    CellPlan,
    Plan,
    PlanError,
    build_plan,
    derived_seed,
    image_seed,
    plan_rows,
    unet_evaluations_per_image,
    validate_cells,
)
from fairsynth.generation.shard import Workers, batches, current_workers, my_batches
from fairsynth.generation.writer import GenerationError, OutputFolder
from fairsynth.io import atomic_write_text, sha256_bytes


class GenerateJob(Protocol):
    """What generation reads of a study: its ``seed``, ``generate`` and ``filter`` sections (a
    :class:`fairsynth.recipe.Recipe` is one; a stage does not import the recipe that composes every
    stage). The whole job is saved beside the generated set as ``config.yaml``."""

    seed: int
    generate: GenerateConfig
    filter: FilterConfig


Log = Callable[[str], None]


@dataclass
class CellResult:
    """What one cell delivered."""

    cell: str
    target: int
    generated: int
    accepted: int
    selected: int
    rejected_by: dict[str, int] = field(default_factory=dict)

    @property
    def shortfall(self) -> int:
        return self.target - self.selected


@dataclass
class GenerateResult:
    output: Path
    plan: Plan
    cells: list[CellResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    generated_now: int = 0

    @property
    def shortfall(self) -> dict[str, int]:
        return {c.cell: c.shortfall for c in self.cells if c.shortfall > 0}


# --------------------------------------------------------------------------------------
# 1. The plan
# --------------------------------------------------------------------------------------


def real_records(path: str) -> list[Record]:
    """The real manifest's records, or none when it does not exist."""
    if not path or not Path(path).is_file():
        return []
    return read_manifest(path)


def make_plan(recipe: "GenerateJob") -> tuple[Plan, list[Record]]:
    """The plan of ``recipe.generate`` and the real records it was made from: those of
    ``plan.real_split`` (the training split) where the manifest has splits. img2img sources
    and IP-Adapter references are drawn from the same records, so no validation or test image
    ever shapes a synthetic one."""
    cfg = recipe.generate
    real = real_records(cfg.real)
    if cfg.plan.real_split is not None and any(r.split == cfg.plan.real_split for r in real):
        real = [r for r in real if r.split == cfg.plan.real_split]
    plan = build_plan(cfg.plan, real, seed=cfg.seed if cfg.seed is not None else recipe.seed)
    validate_cells(plan)
    if plan.total == 0:
        raise PlanError("the plan asks for no image at all (every cell's target is 0)")
    return plan, real


def evaluations_per_image(recipe: "GenerateJob") -> int:
    cfg = recipe.generate
    return unet_evaluations_per_image(cfg.steps, cfg.guidance_scale, cfg.img2img.strength if cfg.img2img.enabled else None)


def measured_seconds_per_evaluation(recipe: "GenerateJob") -> float | None:
    """Seconds per UNet evaluation measured by an earlier run into the same folder, else the recipe's guess."""
    report = Path(recipe.generate.output) / "report.json"
    if report.is_file():
        try:
            value = json.loads(report.read_text(encoding="utf-8")).get("seconds_per_unet_evaluation")
            if value:
                return float(value)
        except (ValueError, OSError):
            pass
    return recipe.generate.seconds_per_unet_eval


def dry_run(recipe: "GenerateJob") -> tuple[Plan, list[dict[str, Any]]]:
    """The plan table: cells, targets, candidates, UNet evaluations and (when known) time."""
    plan, _ = make_plan(recipe)
    return plan, plan_rows(plan, evaluations_per_image(recipe), measured_seconds_per_evaluation(recipe))


# --------------------------------------------------------------------------------------
# 2-4. Settings, cells and warnings
# --------------------------------------------------------------------------------------


def fingerprint(recipe: "GenerateJob", sampler: Any) -> dict[str, Any]:
    """Every setting an image depends on; a folder keeps images of one fingerprint only."""
    cfg = recipe.generate
    return {
        "seed": cfg.seed if cfg.seed is not None else recipe.seed,
        "base_sha256": sampler.base_sha256,
        "adapters": [f"{o.method}:{o.sha256}@{o.spec.scale}" for o in sampler.outputs],
        "prompt": cfg.prompt,
        "negative_prompt": cfg.negative_prompt,
        "scheduler": cfg.scheduler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "size": list(cfg.size),
        "dtype": str(sampler.dtype).removeprefix("torch."),
        "img2img": to_dict(cfg.img2img) if cfg.img2img.enabled else None,
        "ip_adapter": to_dict(cfg.ip_adapter) if cfg.ip_adapter.enabled else None,
        "refiner": to_dict(cfg.refiner) if cfg.refiner.source else None,
    }


def _matches(record: Record, cell: CellPlan, fields: list[str]) -> bool:
    for name in fields:
        wanted = cell.cell.value(name)
        have = record.label if name in ("label", "class") else record.attributes.get(name)
        if wanted is not None and str(have) != str(wanted):
            return False
    return True


def _source_pool(recipe: "GenerateJob", real: list[Record], plan: Plan, spec: dict[str, list[Any]], same: list[str], what: str) -> dict[str, list[Record]]:
    """Real records per cell sharing ``same`` with it and (``spec``) having one of the listed values."""
    pools: dict[str, list[Record]] = {}
    split = f" (split {recipe.generate.plan.real_split})" if recipe.generate.plan.real_split else ""
    for cell in plan.cells:
        if cell.target == 0:
            continue
        found = [
            r for r in real
            if _matches(r, cell, same)
            and all(str(r.label if f in ("label", "class") else r.attributes.get(f)) in {str(v) for v in values} for f, values in spec.items())
        ]
        if not found:
            raise GenerationError(
                f"cell {cell.cell.id}: no real image in {recipe.generate.real}{split} to use as {what} "
                f"(sharing {', '.join(same) or 'nothing'} with the cell{', with ' + str(spec) if spec else ''})"
            )
        pools[cell.cell.id] = sorted(found, key=lambda r: r.id)
    return pools


def trained_counts(sampler: Any, plan: Plan) -> tuple[dict[str, int] | None, str]:
    """Training images of each cell, from the trained output's training manifest (or its marginals)."""
    from fairsynth.generation.plan import real_counts

    for output in sampler.outputs:
        train = output.train or {}
        manifest = train.get("data")
        if manifest and Path(manifest).is_file():
            records = read_manifest(manifest)
            split = train.get("split", "train")
            if any(r.split == split for r in records):
                records = [r for r in records if r.split == split]
            counts = real_counts([c.cell for c in plan.cells], records)
            return {c.cell.id: n for c, n in zip(plan.cells, counts)}, f"{manifest} (split {split})"
        dataset = (output.info or {}).get("dataset") or {}
        if dataset.get("images_by_class") is not None:
            by_class, by_fst = dataset.get("images_by_class", {}), dataset.get("images_by_fst", {})
            out = {}
            for c in plan.cells:
                n = by_class.get(str(c.cell.label), 0)
                fst = c.cell.value("fst")
                if fst is not None:
                    n = min(n, by_fst.get(str(fst), 0))
                out[c.cell.id] = n
            return out, f"{output.folder / 'training_info.json'} (class and skin-type totals)"
    return None, ""


def cell_warnings(sampler: Any, plan: Plan) -> list[str]:
    """A warning per cell with a target that the trained output never saw; an error for a cell a
    class embedding cannot condition on."""
    vocabulary = sampler.vocabulary
    if vocabulary:
        for c in plan.cells:
            if c.target == 0:
                continue
            for factor, values in vocabulary.items():
                value = c.cell.label if factor == "class" else c.cell.value(factor)
                if value is not None and str(value) not in values:
                    raise GenerationError(
                        f"cell {c.cell.id}: the class embedding knows no {factor} {value!r} (it knows {', '.join(values)}); "
                        "it cannot condition on a value it was not trained with: drop the cell from the plan"
                    )
    counts, source = trained_counts(sampler, plan)
    if counts is None:
        return []
    return [
        f"cell {c.cell.id}: the trained output saw no training image of it (per {source}); its {c.target} images "
        "rely on what the base model and the prompt know"
        for c in plan.cells if c.target > 0 and counts.get(c.cell.id, 0) == 0
    ]


def token_warnings(sampler: Any, prompts: dict[str, str], template: str) -> list[str]:
    """A warning when trained placeholder tokens are loaded but no cell's prompt names one:
    the images would come from the base's words alone, not from what the tokens learned."""
    tokens = sampler.tokens
    if not tokens or any(token in prompt for prompt in prompts.values() for token in tokens):
        return []
    return [
        f"generate.prompt {template!r} names none of the {len(tokens)} trained token(s) ({', '.join(tokens[:3])}"
        f"{', ...' if len(tokens) > 3 else ''}); put {{token}} (one per class x skin type) or {{class_token}} in it, "
        "as the training captions had them"
    ]


def cell_prompts(recipe: "GenerateJob", plan: Plan) -> dict[str, str]:
    prompts = {}
    for c in plan.cells:
        try:
            prompts[c.cell.id] = render_caption(recipe.generate.prompt, c.cell.record())
        except (KeyError, ValueError, IndexError) as err:
            raise GenerationError(f"generate.prompt {recipe.generate.prompt!r}: {str(err).strip(chr(39))}") from None
    return prompts


# --------------------------------------------------------------------------------------
# 6. Rounds
# --------------------------------------------------------------------------------------


def next_attempts(target: int, attempted: int, accepted: int, cap: int, oversample: float) -> int:
    """Candidates a cell should have after a round that ended with ``accepted`` of ``attempted``:
    enough more, at the round's acceptance rate, to make up the shortfall (never above ``cap``)."""
    if accepted >= target or attempted >= cap:
        return attempted
    rate = accepted / attempted if attempted else 0.0
    extra = math.ceil((target - accepted) / rate * oversample) if rate > 0 else max(attempted, 1)
    return min(cap, attempted + max(extra, 1))


def planned_attempts(plan: Plan, judged: list[dict[str, Any]]) -> dict[str, int]:
    """How many candidates each cell should have now, replayed from its first round so that an
    interrupted run plans exactly what an uninterrupted one does."""
    by_cell: dict[str, dict[int, bool]] = defaultdict(dict)
    for row in judged:
        by_cell[row["cell"]][row["index"]] = bool(row["accepted"])
    wants = {}
    for c in plan.cells:
        done = by_cell.get(c.cell.id, {})
        want, cap = plan.first_round(c), plan.attempt_cap(c)
        while all(i in done for i in range(want)):
            accepted = sum(done[i] for i in range(want))
            more = next_attempts(c.target, want, accepted, cap, plan.oversample)
            if more == want:
                break
            want = more
        wants[c.cell.id] = want
    return wants


def current_round(plan: Plan, judged: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Every candidate ``(cell, index)`` of the round a run is at, done or not, in the order an
    uninterrupted run draws them; empty when every round is done.

    Rounds are replayed from the first for all cells at once, as an uninterrupted run makes
    them: round ``r`` holds, for each cell, the candidates its round ``r - 1`` verdicts added.
    Batches are cut from this list, so a resumed run draws every image in the same batch as a
    run never killed (a batch's images differ in their last bits with its members).
    """
    by_cell: dict[str, dict[int, bool]] = defaultdict(dict)
    for row in judged:
        by_cell[row["cell"]][row["index"]] = bool(row["accepted"])
    starts = {c.cell.id: 0 for c in plan.cells}
    wants = {c.cell.id: plan.first_round(c) for c in plan.cells}
    while True:
        items = [(c.cell.id, i) for c in plan.cells for i in range(starts[c.cell.id], wants[c.cell.id])]
        if any(index not in by_cell[cell] for cell, index in items):
            return items
        more = {}
        for c in plan.cells:
            done, want = by_cell[c.cell.id], wants[c.cell.id]
            more[c.cell.id] = next_attempts(c.target, want, sum(done[i] for i in range(want)), plan.attempt_cap(c), plan.oversample)
        if more == wants:
            return []
        starts, wants = wants, more


def _rows_with_paths(folder: OutputFolder, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows.values():
        path = folder.locate(row["name"])
        if path is not None:
            row["_path"] = str(path)
            out.append(row)
    return out


def _judge(folder: OutputFolder, checks: list[Any], context: Any, log: Log) -> list[dict[str, Any]]:
    """Process 0: read every journal, measure what is missing, judge every candidate."""
    from fairsynth.filters.apply import load_row_image

    rows = _rows_with_paths(folder, folder.reconcile(folder.read_journal()))
    updates = measure_missing(checks, rows, context, load_row_image)
    if updates:
        log(f"measured {len(updates)} earlier images for checks they lacked")
        folder.append("main", [{"kind": "values", "id": key, "values": values} for key, values in updates])
    context.flush()
    return judge(checks, rows, context)


def generate(recipe: "GenerateJob", *, progress: bool = True, log: Log = print) -> GenerateResult:
    """Generate, filter and deliver ``recipe.generate.plan``; see the module docstring for the steps.

    Raises:
        PlanError, GenerationError (DiskFullError), FilterError, ConfigError: bad input, before
            anything is generated (a full disk: whenever it happens, with nothing lost).
    """
    from fairsynth.filters.context import FilterContext
    from fairsynth.generation.pipeline import load_sampler, resolve_device

    cfg, fcfg = recipe.generate, recipe.filter
    # 1. The plan (pure; bad targets fail here).
    plan, real = make_plan(recipe)
    checks = fcfg.build()

    # 2. Processes and the output folder: foreign files fail before the model loads.
    workers = current_workers()
    folder = OutputFolder(cfg.output)
    if workers.is_main and folder.root.is_dir():
        folder.check_foreign()
    device, dtype = resolve_device(cfg, workers.rank)

    # 3. The model.
    sampler = load_sampler(cfg, device, dtype)

    # 4. Cells: prompts, sources, references, warnings.
    prompts = cell_prompts(recipe, plan)
    sources = _source_pool(recipe, real, plan, cfg.img2img.source, cfg.img2img.same, "img2img source") if cfg.img2img.enabled else {}
    references = _source_pool(recipe, real, plan, {}, cfg.ip_adapter.same, "IP-Adapter reference") if cfg.ip_adapter.enabled else {}
    warnings = cell_warnings(sampler, plan) + token_warnings(sampler, prompts, cfg.prompt) + list(plan.notes)
    resumed = False
    if workers.is_main:
        resumed = folder.open(fingerprint(recipe, sampler))
        for warning in warnings:
            log(f"warning: {warning}")
    workers.barrier()

    try:
        # 5. The checks: process 0 fills the feature cache, then the others read it.
        context = FilterContext(fcfg, progress=log if workers.is_main else None)
        for turn in (True, False):
            if workers.is_main == turn:
                for check in checks:
                    check.setup(context)
            workers.barrier()
        return _rounds(recipe, plan, checks, workers, folder, sampler, context, prompts, sources, references,
                       warnings, resumed, progress, log)
    finally:
        folder.close_journal()
        if workers.is_main:
            folder.release()


def _rounds(recipe: "GenerateJob", plan: Plan, checks: list[Any], workers: Workers, folder: OutputFolder,
            sampler: Any, context: Any, prompts: dict[str, str], sources: dict[str, list[Record]],
            references: dict[str, list[Record]], warnings: list[str], resumed: bool, progress: bool, log: Log) -> GenerateResult:
    """Steps 6 and 7 of :func:`generate`."""
    cfg = recipe.generate
    # 6. Rounds until every cell is met or capped.
    started, generated_now, unet_rows, unet_seconds = time.monotonic(), 0, 0, 0.0
    cell_of = {c.cell.id: c for c in plan.cells}
    real_root = Path(cfg.real).parent
    size = cfg.size
    judged: list[dict[str, Any]] = []
    while True:
        todo: list[list[tuple[str, int, bool]]] | None = None
        if workers.is_main:
            judged = _judge(folder, checks, context, log)
            done = {(r["cell"], r["index"]) for r in judged}
            # Whole batches of the round, those with an image still to make: a batch is drawn
            # whole, its finished images are not written again.
            todo = [
                [(cell_id, index, (cell_id, index) in done) for cell_id, index in batch]
                for batch in batches(current_round(plan, judged), cfg.batch_size)
                if any((cell_id, index) not in done for cell_id, index in batch)
            ]
        todo = workers.broadcast(todo)
        if not todo:
            break
        mine = my_batches(todo, workers.rank, workers.world)
        count = sum(not finished for b in mine for _, _, finished in b)
        remaining = Counter(cell_id for b in mine for cell_id, _, finished in b if not finished)
        if workers.is_main:
            share = f"; {count} in {len(mine)} batches on this process of {workers.world}" if workers.world > 1 else ""
            missing = sum(not finished for b in todo for _, _, finished in b)
            log(f"{'continuing: ' if resumed else ''}{missing} images to generate{share}")
        bar = _progress_bar(count, enabled=progress and workers.is_main)
        for drawn in mine:
            batch = [(cell_id, index) for cell_id, index, finished in drawn if not finished]
            requests, rows = [], []
            for cell_id, index, _ in drawn:
                cell = cell_of[cell_id]
                requests.append(_request(recipe, sampler, cell, index, prompts, sources, references, real_root, size))
                rows.append(_row(recipe, sampler, cell, index, prompts[cell_id], requests[-1], size))
            tick = time.monotonic()
            images = sampler(requests, size)
            seconds = time.monotonic() - tick
            unet_seconds += seconds
            unet_rows += len(drawn) * evaluations_per_image(recipe)
            kept = [k for k, (_, _, finished) in enumerate(drawn) if not finished]
            requests, rows, images = [requests[k] for k in kept], [rows[k] for k in kept], [images[k] for k in kept]
            encoded = [folder.encode(image) for image in images]
            for row, data in zip(rows, encoded):
                row["seconds"] = round(seconds / len(drawn), 4)
                row["sha256"], row["bytes"] = sha256_bytes(data), len(data)
            for row, values in zip(rows, measure_images(checks, images, rows, context)):
                row.update(values)
            for row, data in zip(rows, encoded):  # each image, then its row: a kill loses at most one image
                folder.write_image(data, row["name"])
                folder.append(str(workers.rank), [{"kind": "image", "row": row}])
            generated_now += len(batch)
            for cell_id, _ in batch:
                remaining[cell_id] -= 1
            if bar is not None:
                bar.update(len(batch))
                current = batch[-1][0]
                rate = bar.format_dict.get("rate") or 0.0  # images per second
                left = f", ~{remaining[current] / rate:.0f}s left" if rate and remaining[current] else ""
                bar.set_postfix_str(f"{current}: {remaining[current]} to go{left}")
        if bar is not None:
            bar.close()
        context.flush()
        folder.close_journal()
        workers.barrier()

    # 7. Outputs (process 0).
    result = GenerateResult(Path(cfg.output), plan, warnings=warnings + context.warnings, generated_now=generated_now)
    if workers.is_main:
        wants = planned_attempts(plan, judged)
        select(judged, {c.cell.id: c.target for c in plan.cells}, wants)
        folder.materialise(judged)
        result.cells = summarise(plan, judged)
        result.report = _report(recipe, sampler, plan, judged, result, checks, context, unet_rows, unet_seconds, started, workers)
        save_resolved(recipe, folder.root)
        atomic_write_text(folder.root / "plan.json", json.dumps(plan_rows(plan, evaluations_per_image(recipe), None), indent=1) + "\n")
        atomic_write_text(folder.root / "report.json", json.dumps(result.report, indent=2, default=str) + "\n")
    workers.barrier()
    return result


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="generate", dynamic_ncols=True)


def _request(recipe: "GenerateJob", sampler: Any, cell: CellPlan, index: int, prompts: dict[str, str],
             sources: dict[str, list[Record]], references: dict[str, list[Record]], real_root: Path,
             size: tuple[int, int]) -> Any:
    from fairsynth.data.preprocess import load_rgb, resize_crop
    from fairsynth.generation.pipeline import ImageRequest
    from fairsynth.io import resolve_inside

    cfg = recipe.generate
    seed = plan_seed(recipe)
    request = ImageRequest(
        prompts[cell.cell.id], cfg.negative_prompt, image_seed(seed, cell.cell.id, index),
        cell.cell.label, dict(cell.cell.attributes),
    )
    if cfg.img2img.enabled:
        pool = sources[cell.cell.id]
        record = pool[derived_seed(seed, cell.cell.id, index, "source") % len(pool)]
        request.source = resize_crop(load_rgb(resolve_inside(real_root, record.image)), size)
        request.attributes["_source"] = record.image
    if cfg.ip_adapter.enabled:
        pool = references[cell.cell.id]
        record = pool[derived_seed(seed, cell.cell.id, index, "reference") % len(pool)]
        request.reference = load_rgb(resolve_inside(real_root, record.image))
        request.reference_key = record.image
    return request


def plan_seed(recipe: "GenerateJob") -> int:
    return recipe.generate.seed if recipe.generate.seed is not None else recipe.seed


def _row(recipe: "GenerateJob", sampler: Any, cell: CellPlan, index: int, prompt: str, request: Any, size: tuple[int, int]) -> dict[str, Any]:
    """The manifest row of one candidate (check values, verdicts and selection are added later)."""
    from fairsynth import __version__

    cfg = recipe.generate
    attributes = dict(cell.cell.attributes)
    source = request.attributes.pop("_source", None)
    row: dict[str, Any] = {
        "id": f"{cell.cell.slug}-{index:06d}",
        "name": OutputFolder.name_of(cell.cell.slug, index),
        "label": cell.cell.label,
        "caption": prompt,
        **attributes,
    }
    if attributes.get("fst") is not None:
        row["fst_group"] = group_of(attributes["fst"])
    conditioned = sampler.conditioning is not None
    row.update({
        "cell": cell.cell.id,
        "index": index,
        "prompt": "" if conditioned else sampler.rewrite(prompt),
        "conditioning": "class_embedding" if conditioned else "text",
        "negative_prompt": cfg.negative_prompt,
        "seed": request.seed,
        "mode": "img2img" if cfg.img2img.enabled else "txt2img",
        "strength": cfg.img2img.strength if cfg.img2img.enabled else None,
        "source_image": source,
        "ip_adapter_reference": request.reference_key,
        "scheduler": cfg.scheduler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "width": size[0],
        "height": size[1],
        "refiner": cfg.refiner.source or None,
        "refiner_fraction": cfg.refiner.fraction if cfg.refiner.source else None,
        "base_model": cfg.base.source if cfg.base else None,
        "base_model_sha256": sampler.base_sha256,
        "adapters": [str(o.folder) for o in sampler.outputs],
        "adapter_methods": [o.method for o in sampler.outputs],
        "adapter_scales": [o.spec.scale for o in sampler.outputs],
        "adapter_sha256": [o.sha256 for o in sampler.outputs],
        "dtype": str(sampler.dtype).removeprefix("torch."),
        "unet_evaluations": evaluations_per_image(recipe),
        "synthetic": True,
        "generator": f"fairsynth {__version__}",
    })
    return row


def summarise(plan: Plan, judged: list[dict[str, Any]]) -> list[CellResult]:
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in judged:
        by_cell[row["cell"]].append(row)
    out = []
    for c in plan.cells:
        rows = by_cell.get(c.cell.id, [])
        rejected = Counter(name for r in rows for name in (r.get("rejected_by") or "").split(",") if name)
        out.append(CellResult(
            c.cell.id, c.target, len(rows), sum(bool(r["accepted"]) for r in rows),
            sum(bool(r["selected"]) for r in rows), dict(rejected),
        ))
    return out


def _report(recipe: "GenerateJob", sampler: Any, plan: Plan, judged: list[dict[str, Any]], result: GenerateResult,
            checks: list[Any], context: Any, unet_rows: int, unet_seconds: float, started: float, workers: Workers) -> dict[str, Any]:
    memorised = [
        {"image": r["file_name"], "copies": r.get("memorisation_nearest"), "distance": r.get("memorisation_distance"),
         "lpips": r.get("memorisation_lpips")}
        for r in judged if r.get("memorisation_ok") is False
    ]
    extractors = context.provenance()
    return {
        "output": str(result.output),
        "delivered": sum(c.selected for c in result.cells),
        "target": plan.total,
        "shortfall": result.shortfall,
        "cells": [dict(vars(c), shortfall=c.shortfall) for c in result.cells],
        "warnings": result.warnings,
        "memorised": memorised,
        "checks": {c.name: to_dict(c.config) for c in checks},
        "extractors": extractors,
        "generated_this_run": result.generated_now,
        "processes": workers.world,
        "wall_seconds": round(time.monotonic() - started, 3),
        "sampling_seconds": round(unet_seconds, 3),
        # Measured on process 0 (pipeline calls: UNet, VAE, text encoder); --dry-run's estimate uses it.
        "seconds_per_unet_evaluation": (unet_seconds / unet_rows) if unet_rows else measured_seconds_per_evaluation(recipe),
        "device": str(sampler.device),
        "dtype": str(sampler.dtype).removeprefix("torch."),
        "attention": sampler.attention,
        "base_model": {"source": recipe.generate.base.source if recipe.generate.base else None, "sha256": sampler.base_sha256},
        "adapters": [{"path": str(o.folder), "method": o.method, "scale": o.spec.scale, "sha256": o.sha256} for o in sampler.outputs],
        "vae": sampler.vae_source or "the base's",
    }


# --------------------------------------------------------------------------------------
# `fairsynth filter`
# --------------------------------------------------------------------------------------


def refilter(recipe: "GenerateJob", *, log: Log = print) -> GenerateResult:
    """Re-apply the recipe's checks and thresholds to a generated set, without generating.

    Values a candidate already has are reused; checks it lacks (or measured with another
    extractor) are measured from its file. Selection is the first ``target`` accepted images
    of each cell; a cell short of its target is reported (``fairsynth generate`` with the same
    recipe generates more).
    """
    cfg = recipe.generate
    folder = OutputFolder(cfg.output)
    if not (folder.state / "run.json").is_file():
        raise GenerationError(f"{folder.root} holds no generated set (no .fairsynth/run.json); run `fairsynth generate` first")
    folder.check_foreign()
    plan, _ = make_plan(recipe)
    checks = recipe.filter.build()
    folder.lock()  # rewrites the manifests: no generation may be writing the folder meanwhile
    try:
        return _refilter(recipe, folder, plan, checks, log)
    finally:
        folder.release()


def _refilter(recipe: "GenerateJob", folder: OutputFolder, plan: Plan, checks: list[Any], log: Log) -> GenerateResult:
    """:func:`refilter` under the output folder's lock."""
    from fairsynth.filters.context import FilterContext

    context = FilterContext(recipe.filter, progress=log)
    for check in checks:
        check.setup(context)
    started = time.monotonic()
    judged = _judge(folder, checks, context, log)
    folder.close_journal()
    select(judged, {c.cell.id: c.target for c in plan.cells})
    folder.materialise(judged)
    result = GenerateResult(folder.root, plan, warnings=context.warnings)
    result.cells = summarise(plan, judged)
    report_path = folder.root / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    report.update({
        "delivered": sum(c.selected for c in result.cells), "target": plan.total, "shortfall": result.shortfall,
        "cells": [dict(vars(c), shortfall=c.shortfall) for c in result.cells],
        "checks": {c.name: to_dict(c.config) for c in checks},
        "memorised": [
            {"image": r["file_name"], "copies": r.get("memorisation_nearest"), "distance": r.get("memorisation_distance"),
             "lpips": r.get("memorisation_lpips")}
            for r in judged if r.get("memorisation_ok") is False
        ],
        "refiltered_seconds": round(time.monotonic() - started, 3),
    })
    result.report = report
    atomic_write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")
    return result
