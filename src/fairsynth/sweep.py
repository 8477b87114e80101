"""Sweeps: one recipe, a grid of settings, one table.

``fairsynth sweep recipe.yaml --grid method=lora,dora,loha,full --grid rank=1,4,16`` runs
every combination as its own study under ``<workdir>/sweep/<configuration>/`` and gathers
one row per configuration: trainable parameters, adapter size, training time, peak memory,
the evaluation's numbers (FD overall and per group, Vendi, memorisation rate, CLIP score where
measured), downstream accuracy and AUROC gap, and the forgetting check.

Design:

* **Shared, not repeated.** The data is prepared once (the parent study's ``prepare``), the
  real-data classifier that filters and evaluation read is trained once, and the real-only
  baseline of the downstream comparison is trained once (``sweep/baseline``). Each
  configuration trains, generates, evaluates and trains its augmented arms.
* **One process per configuration.** Each configuration is ``fairsynth run`` on its resolved
  recipe in a child process, so its peak memory is its own and a crash of one configuration
  does not take the others with it; like any run, a sweep run again skips what is finished. A second sweep with another grid
  in the same study adds its rows to the same table.
* **Grid names.** ``method``, ``rank``, ``alpha``, ``target`` (apply_to), ``steps``, ``lr``, or any
  dotted recipe setting. ``rank`` and ``alpha`` go to the method's own option (``rank`` for
  LoRA-family methods, ``lora_rank`` for pivotal); a setting the method does not have is
  ``n/a`` in its row, and configurations that then coincide run once. A configuration whose
  method differs from the recipe's starts from that method's default options.
* **Forgetting** (the SDXL garment study's check on general prompts). On the embedded base:
  prompts of the generic world it was pretrained on, drawn by the base and by each fine-tuned
  model, read back from pixels (background, colour, size all as asked); the drop from the base
  is what fine-tuning forgot. Other bases: not measured here (a file of general prompts
  and CLIP weights are the user's), and the table says so.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fairsynth.config import ConfigError, apply_overrides, dump_yaml, from_dict
from fairsynth.io import InvalidJSONError, atomic_write_text, read_optional_json

if TYPE_CHECKING:
    from fairsynth.recipe import Recipe

#: Short grid names -> candidate settings; the first the method's options have is used.
ALIASES: dict[str, tuple[str, ...]] = {
    "method": ("train.method",),
    "rank": ("train.options.rank", "train.options.lora_rank"),
    "alpha": ("train.options.alpha", "train.options.lora_alpha"),
    "target": ("train.options.apply_to",),
    "steps": ("train.steps",),
    "lr": ("train.learning_rate",),
}

#: The name of the real-only row of the table.
BASELINE = "real only (baseline)"

#: Prompts of the forgetting check on the embedded base.
FORGETTING_PROMPTS = 48


class SweepError(ValueError):
    """A sweep grid that cannot run (a clear, user-facing message)."""


@dataclass(frozen=True)
class Configuration:
    """One point of the grid: its name, what it set and the recipe overrides that set it."""

    name: str
    settings: dict[str, str]
    overrides: tuple[str, ...]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["method=lora,dora", "rank=1,4"]`` -> ``{"method": ["lora", "dora"], "rank": ["1", "4"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        options = [value.strip() for value in values.split(",") if value.strip()]
        if not sep or not name or not options:
            raise SweepError(f"--grid {item!r}: expected NAME=V1,V2,... e.g. rank=1,4,16")
        if name in grid:
            raise SweepError(f"--grid names {name!r} twice")
        if len(set(options)) != len(options):
            raise SweepError(f"--grid {item!r} repeats a value")
        grid[name] = options
    if not grid:
        raise SweepError("a sweep needs at least one --grid NAME=V1,V2,...")
    return grid


def _option_fields(method: str) -> set[str]:
    from fairsynth.methods import METHODS

    try:
        config = METHODS.get(method).Config
    except Exception as err:  # an unknown name: the registry's own message lists the known ones
        raise SweepError(str(err).strip("'\"")) from err
    return {f.name for f in dataclasses.fields(config)}


def configurations(grid: dict[str, list[str]], recipe: "Recipe") -> list[Configuration]:
    """Every combination of the grid, as recipe overrides, in grid order; coinciding ones once."""
    out: list[Configuration] = []
    seen: set[tuple] = set()
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values))
        method = combo.get("method", recipe.train.method)
        fields = _option_fields(method)
        overrides: list[str] = []
        if method != recipe.train.method:
            overrides += [f"train.method={method}", "train.options={}"]
        settings: dict[str, str] = {}
        for axis, value in combo.items():
            if axis == "method":
                settings[axis] = value
                continue
            candidates = ALIASES.get(axis, (axis,))
            target = next(
                (key for key in candidates if not key.startswith("train.options.") or key.split(".", 2)[2] in fields),
                None,
            )
            if target is None:
                settings[axis] = "n/a"
                continue
            overrides.append(f"{target}={value}")
            settings[axis] = value
        key = tuple(sorted(settings.items()))
        if key in seen:
            continue
        seen.add(key)
        name = ",".join(f"{axis}={value}" for axis, value in settings.items() if value != "n/a")
        out.append(Configuration(name or "default", settings, tuple(overrides)))
    return out


def folder_name(configuration: Configuration) -> str:
    """``method=lora,rank=4`` -> ``method-lora_rank-4`` (a safe folder name)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", configuration.name.replace("=", "-").replace(",", "_")).strip("-")


# --------------------------------------------------------------------------------------
# Recipes of the parts
# --------------------------------------------------------------------------------------


def shared_recipe(recipe: "Recipe") -> "Recipe":
    """The parent study's part every configuration shares: the data and the real-data classifier."""
    from fairsynth.study import needs_classifier

    shared = copy.deepcopy(recipe)
    stages = (["world"] if recipe.world is not None else []) + ["prepare"]
    if needs_classifier(recipe, ["generate", "evaluate"]):
        stages.append("classifier")
    shared.stages = stages
    return shared


def part_recipe(recipe: "Recipe", overrides: Sequence[str], folder: Path, stages: Sequence[str], arms: Sequence[str]) -> "Recipe":
    """A configuration's study: the parent's data and classifier, its own training onwards."""
    from fairsynth.recipe import Recipe

    base = dataclasses.asdict(recipe)
    base.update(workdir=str(folder), stages=list(stages), world=None)
    # Paths the parent resolved stay the parent's (data, prepared, classifier, caches);
    # those of the configuration's own stages are re-derived under its folder.
    base["train"].update(output="", cache_dir=recipe.train.cache_dir)
    base["generate"].update(output="", adapters=None)
    base["evaluate"].update(output="", synthetic="", cache_dir=recipe.evaluate.cache_dir)
    base["downstream"].update(output="", synthetic="", arms=list(arms))
    try:
        part = from_dict(Recipe, apply_overrides(base, list(overrides)))
    except ConfigError as err:
        raise SweepError(f"configuration {list(overrides)}: {err}") from err
    # the shared real-data classifier, not one per configuration
    confidence = part.filter.options.get("classifier_confidence")
    parent_confidence = recipe.filter.options.get("classifier_confidence")
    if confidence is not None and parent_confidence is not None:
        confidence["model"] = parent_confidence.get("model")
    if recipe.evaluate.weights.get("classifier"):
        part.evaluate.weights["classifier"] = recipe.evaluate.weights["classifier"]
    return part


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return read_optional_json(path)
    except InvalidJSONError as err:
        raise SweepError(str(err)) from err


def evaluation_columns(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """FD overall and per skin type, Vendi, memorisation rate and CLIP score from evaluation.json."""
    if not evaluation:
        return {}
    out: dict[str, Any] = {}
    for row in evaluation.get("results", []):
        metric, group_by, group = row.get("metric"), row.get("group_by"), row.get("group")
        extractor, value = row.get("extractor"), row.get("value")
        value_name = row.get("value_name") or metric
        if metric == "fd" and value_name in ("fd", None, metric):
            if group_by in (None, "overall", "all", ""):
                out[f"FD@{extractor}"] = value
            elif group_by in ("fst", "fst_group") and group != "(missing)":  # per skin type; classes stay in evaluation.json
                out[f"FD@{extractor} {group_by}={group}"] = value
        elif metric == "vendi" and group_by in (None, "overall", "all", "") and row.get("on") == "synthetic":
            out[f"Vendi@{extractor}"] = value
        elif metric == "memorisation" and group_by in (None, "overall", "all", "") and value_name in ("rate", "memorised_share", "share"):
            out[f"memorised@{extractor}"] = value
        elif metric == "clip_score" and group_by in (None, "overall", "all", ""):
            out["CLIP score"] = value
    return out


def downstream_columns(compare: dict[str, Any] | None, arm: str) -> dict[str, Any]:
    """Mean over seeds of accuracy, macro AUROC, AUROC V-VI and AUROC gap for one arm."""
    if not compare:
        return {}
    out = {}
    for key, label in (("accuracy", "accuracy"), ("macro_auroc", "macro AUROC"), ("auroc.V-VI", "AUROC V-VI"),
                       ("auroc_gap", "AUROC gap")):
        row = compare.get("table", {}).get(key)
        summary = (row or {}).get("arms", {}).get(arm)
        if summary is not None:
            out[f"{arm} {label}"] = summary.get("mean")
    return out


@dataclass
class Row:
    """One configuration's line of the table."""

    name: str
    settings: dict[str, str]
    status: str
    values: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        return {"configuration": self.name, **self.settings, "status": self.status, **self.values}


def gather(folder: Path, configuration: Configuration, status: str, arms: Sequence[str]) -> Row:
    info = _read_json(folder / "train" / "model" / "training_info.json") or {}
    values: dict[str, Any] = {}
    if info:
        values.update({
            "trainable parameters": info.get("trainable_parameters"),
            "adapter MB": round(info.get("adapter_bytes", 0) / 1e6, 3),
            "training s": info.get("training_seconds"),
            "peak memory MB": round(info["peak_memory_bytes"] / 1e6, 1) if info.get("peak_memory_bytes") else None,
            "peak memory kind": info.get("peak_memory_kind"),
            "final loss": info.get("final_loss"),
        })
    evaluation = _read_json(folder / "evaluation" / "evaluation.json")
    values.update(evaluation_columns(evaluation))
    compare = _read_json(folder / "downstream" / "compare.json")
    for arm in arms:
        values.update(downstream_columns(compare, arm))
    forgetting = _read_json(folder / "forgetting.json")
    if forgetting:
        values["generic prompts followed"] = forgetting.get("fine_tuned")
        values["generic prompts followed, base"] = forgetting.get("base")
    return Row(configuration.name, dict(configuration.settings), status, values)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns in first-seen order, configurations' rows first: the baseline row (downstream
    numbers only) must not push the settings behind its columns."""
    columns: list[str] = []
    for row in sorted(rows, key=lambda row: row.get("configuration") == BASELINE):
        columns += [key for key in row if key not in columns]
    return columns


def render_markdown(rows: list[dict[str, Any]]) -> str:
    columns = table_columns(rows)

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(sweep_dir: Path, rows: list[dict[str, Any]], notes: list[str]) -> dict[str, Path]:
    """``table.json`` (rows), ``table.csv`` and ``table.md`` under ``sweep_dir``, atomically."""
    import csv
    import io

    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "table.json", json.dumps(rows, indent=1, default=str) + "\n")
    columns = table_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "table.csv", buffer.getvalue())
    atomic_write_text(sweep_dir / "table.md", render_markdown(rows) + "".join(f"\n- {note}" for note in notes) + "\n")
    return {"json": sweep_dir / "table.json", "csv": sweep_dir / "table.csv", "md": sweep_dir / "table.md"}


# --------------------------------------------------------------------------------------
# Forgetting on the embedded base
# --------------------------------------------------------------------------------------


def generic_prompt_following(recipe: "Recipe", adapters: list, n: int = FORGETTING_PROMPTS, seed: int = 0) -> float:
    """Share of generic-world prompts drawn as asked (background, colour and size) by the base + ``adapters``."""
    import numpy as np

    from fairsynth.generation.pipeline import ImageRequest, load_sampler
    from fairsynth.world.generic import prompt_following, sample_attributes

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    asked = [sample_attributes(rng) for _ in range(n)]
    sampler = load_sampler(dataclasses.replace(recipe.generate, adapters=adapters))
    requests = [ImageRequest(prompt=a.caption, negative_prompt="", seed=seed + k, label=None, attributes={})
                for k, a in enumerate(asked)]
    size = max(recipe.generate.resolution or [64])
    images = []
    for start in range(0, n, 16):
        images += [np.asarray(image.convert("RGB")) for image in sampler(requests[start : start + 16], (size, size))]
    return prompt_following(images, asked)["all"]


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run_part(recipe_path: Path, log_path: Path) -> int:
    """``fairsynth run`` on a resolved recipe in a child process; its output goes to ``log_path``."""
    with log_path.open("a", encoding="utf-8") as log:
        return subprocess.call(
            [sys.executable, "-m", "fairsynth.cli", "run", str(recipe_path)], stdout=log, stderr=subprocess.STDOUT
        )


def run_sweep(
    recipe: "Recipe",
    grid: dict[str, list[str]],
    *,
    arms: Sequence[str] = ("mixed",),
    stages: Sequence[str] = ("train", "generate", "evaluate", "downstream"),
    forgetting: bool = True,
    run: Callable[[Path, Path], int] = run_part,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every configuration (the parent's shared stages must have run); returns rows and notes."""
    from fairsynth.study import STAGES

    stages = [name for name in stages if name in STAGES]
    if "evaluate" in stages and not recipe.evaluate.metrics:
        stages.remove("evaluate")
    sweep_dir = Path(recipe.workdir) / "sweep"
    configs = configurations(grid, recipe)
    log(f"{len(configs)} configurations: {'; '.join(c.name for c in configs)}")
    notes = [f"the real-only baseline is sweep/baseline; every configuration's arms: {', '.join(arms)}"]

    baseline = part_recipe(recipe, [], sweep_dir / "baseline", ["downstream"], ["real"])
    rows: list[dict[str, Any]] = []
    jobs = [("baseline", baseline, None)]
    for config in configs:
        jobs.append((config.name, part_recipe(recipe, config.overrides, sweep_dir / folder_name(config), stages, arms), config))
    embedded = recipe.train.base.source in ("embedded", "embedded-sdxl")  # both learned the generic world
    base_following = None
    if forgetting and embedded:
        base_following = generic_prompt_following(recipe, [], seed=recipe.seed)
        notes.append(
            f"forgetting: {FORGETTING_PROMPTS} prompts of the generic world the embedded base was pretrained on; "
            f"share drawn with background, colour and size as asked (read from pixels); base {base_following:.2f}"
        )
    elif forgetting:
        notes.append("forgetting: not measured (needs a file of general prompts and CLIP weights for this base)")
    failed = []
    for index, (name, part, config) in enumerate(jobs, 1):
        folder = Path(part.workdir)
        folder.mkdir(parents=True, exist_ok=True)
        recipe_path = folder / "recipe.yaml"
        atomic_write_text(recipe_path, dump_yaml(part))
        log(f"[{index}/{len(jobs)}] {name}: fairsynth run {recipe_path}")
        code = run(recipe_path, folder / "run.log")
        status = "ok" if code == 0 else f"failed (exit {code}, see {folder / 'run.log'})"
        if code != 0:
            failed.append(name)
            log(f"  {status}")
        if config is None:
            compare = _read_json(folder / "downstream" / "compare.json")
            rows.append({"configuration": BASELINE, "status": status, **downstream_columns(compare, "real")})
            continue
        if code == 0 and forgetting and embedded and not (folder / "forgetting.json").is_file():
            from fairsynth.generation.config import AdapterSpec

            value = generic_prompt_following(part, [AdapterSpec(path=str(Path(part.train.output) / "model"))], seed=recipe.seed)
            atomic_write_text(folder / "forgetting.json", json.dumps({"base": base_following, "fine_tuned": value}) + "\n")
        rows.append(gather(folder, config, status, arms).flat())
    # rows of configurations an earlier sweep ran here (another grid) stay in the table
    earlier = _read_json(sweep_dir / "table.json") or []
    names = {row.get("configuration") for row in rows}
    rows = rows[:1] + [row for row in earlier if row.get("configuration") not in names] + rows[1:]
    paths = write_table(sweep_dir, rows, notes)
    log(f"table: {paths['md']}")
    if failed:
        raise SweepError(f"{len(failed)} configuration(s) failed: {', '.join(failed)}; the table lists the rest")
    return rows, notes
