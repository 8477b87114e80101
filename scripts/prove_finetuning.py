#!/usr/bin/env python
"""Measure whether fine-tuning the embedded base learns the requested lesion class and skin type.

    python scripts/prove_finetuning.py --out runs/proof --methods pivotal,lora,class_embedding,textual_inversion
    python scripts/prove_finetuning.py --out runs/proof --methods lora --steps 600 --per-cell 2   # quicker

What it does, with the project's own commands' code paths:

1. the demo recipe's procedural dermatology world, validated and prepared (64 px, hair removed);
2. the lesion judge (:mod:`fairsynth.world.judge`) and its accuracy on held-out world images;
3. the **base before fine-tuning**, sampled on every class × skin-type cell with the data's
   caption template ("A dermoscopic image of melanoma on Fitzpatrick skin type VI"), scored by
   :func:`fairsynth.world.proof.measure_conditioning` — the floor; and the base asked in its
   own words (the demo's start phrases, "a medium mottled dark brown irregular blob on a dark
   brown background") — what the tokens start from;
4. for each method: ``fairsynth train`` with the demo recipe's settings and the method's own
   options below (skin-type-balanced batches), then the same sampling and scoring.

Writes ``<out>/proof.json`` (every score, settings, times) and ``<out>/<method>/grid.png``
(rows: classes; columns: skin types I-VI). Outside CI: each method trains for minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

from fairsynth.data.fst import parse_fst
from fairsynth.generation.config import AdapterSpec, GenerateConfig
from fairsynth.generation.pipeline import load_sampler
from fairsynth.io import atomic_write_text
from fairsynth.recipe import DEMO_RECIPE, load_recipe
from fairsynth.world.judge import JUDGE_CLASSES, derm_images, judge_accuracy, shipped_judge
from fairsynth.world.proof import DERM_TEMPLATE, measure_conditioning, save_grid, token_prompt

#: Per-method overrides on top of the demo recipe's train section.
METHOD_OVERRIDES: dict[str, list[str]] = {
    "pivotal": [],  # the demo recipe's own method
    "lora": ["train.method=lora", "train.options={rank: 8, alpha: 8, apply_to: both}"],
    # the demo's tokens and start phrases, without the LoRA
    "textual_inversion": [
        "train.method=textual_inversion",
        "train.options=" + json.dumps({
            key: value for key, value in load_recipe(DEMO_RECIPE).train.options.items()
            if key in ("token_per", "num_vectors", "initializers", "fst_initializers", "initializer_token")
        }),
        "train.learning_rate=5.0e-3",
    ],
    "class_embedding": ["train.method=class_embedding", "train.options={}"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/proof"))
    parser.add_argument("--methods", default="pivotal,lora,class_embedding,textual_inversion")
    parser.add_argument("--steps", type=int, default=None, help="Training steps (default: the demo recipe's).")
    parser.add_argument("--per-cell", type=int, default=4, help="Images per class x skin-type cell.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Dotted overrides of the demo recipe, for every method.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = [f"workdir={out / 'study'}", *args.overrides]
    if args.steps:
        common.append(f"train.steps={args.steps}")

    from fairsynth.data.prepare import prepare
    from fairsynth.training.loop import train
    from fairsynth.world.derm import generate_world

    recipe = load_recipe(DEMO_RECIPE, common)
    generate_world(recipe.world_dir, recipe.world)
    if not (Path(recipe.prepare.output) / "metadata.jsonl").exists():
        prepare(recipe)

    started = time.perf_counter()
    judge, judge_report = shipped_judge()
    images, labels, _ = derm_images(400, seed=99)
    result: dict = {
        "judge": {**judge_report, "held_out_world_accuracy": judge_accuracy(judge, images, labels),
                  "seconds": round(time.perf_counter() - started, 1)},
        "template": DERM_TEMPLATE, "per_cell": args.per_cell, "overrides": common, "methods": {},
    }
    print(f"judge: {result['judge']['held_out_world_accuracy']:.1%} on 400 held-out world images", flush=True)

    def measure(generate: GenerateConfig, name: str, token_per: str | None = None, prompt_for=None) -> dict:
        sampler = load_sampler(generate)
        t0 = time.perf_counter()
        if token_per is not None:
            prompt_for = partial(token_prompt, per_fst=token_per == "class_and_fst")
        score, drawn, _ = measure_conditioning(sampler, judge, per_cell=args.per_cell, seed=1000, prompt_for=prompt_for)
        (out / name).mkdir(parents=True, exist_ok=True)
        save_grid(drawn, len(JUDGE_CLASSES), 6, out / name / "grid.png", per_cell=args.per_cell)
        print(f"{name}: {score.line()}", flush=True)
        return {**score.to_dict(), "sampling_seconds": round(time.perf_counter() - t0, 1)}

    base_generate = GenerateConfig(base=recipe.train.base, adapters=[], steps=25, guidance_scale=4.0, scheduler="ddim")
    result["base"] = measure(base_generate, "base")
    # The ceiling of the start phrases: the base asked in its own words (the demo's phrases,
    # e.g. "a medium mottled dark brown irregular blob on a dark brown background").
    options = recipe.train.options
    fst_words = {parse_fst(key): phrase for key, phrase in options.get("fst_initializers", {}).items()}
    if options.get("initializers"):
        own_words = lambda cell: f"{options['initializers'][cell.label]} {fst_words.get(cell.fst, '')}".strip()  # noqa: E731
        result["base_own_words"] = measure(base_generate, "base-own-words", prompt_for=own_words)
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        run = load_recipe(DEMO_RECIPE, [*common, *METHOD_OVERRIDES[method], f"train.output={out / method / 'train'}"])
        t0 = time.perf_counter()
        trained = train(run, progress=False)
        seconds = time.perf_counter() - t0
        generate = GenerateConfig(
            base=run.train.base, adapters=[AdapterSpec(path=str(trained.model_dir))], steps=25, guidance_scale=4.0,
            scheduler="ddim",
        )
        result["methods"][method] = {
            **measure(generate, method, run.train.options.get("token_per")), "train_seconds": round(seconds, 1), "steps": trained.steps,
            "final_loss": trained.final_loss,
        }
        atomic_write_text(out / "proof.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "proof.json", json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
