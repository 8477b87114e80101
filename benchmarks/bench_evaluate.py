"""Benchmark of `fairsynth evaluate`: caching, scaling, and overhead against torchmetrics' FID.

    python benchmarks/bench_evaluate.py                                   # ~8 minutes on 2 cores
    python benchmarks/bench_evaluate.py --small 200 --large 2000 --repeats 1   # a quick look

Everything runs offline on the `random` extractor (a tiny seeded network, 32 px, 64-d: test
only), so that the numbers measure fairsynth's machinery — reading manifests, hashing, the
feature cache, grouping, metrics, bootstrap — and not a big network. With Inception on a CPU
the extraction dominates and every ratio below moves towards 1 (caching: towards 0).

Ratios, each measured in this one run:

1. caching: a second evaluation of the same images with another metric, over the first
   (target <= 0.10);
2. scaling: --large images over --small images, same metric and groups (target <= 11x for 10x);
3. overhead: `evaluate` (FID only, no groups, no bootstrap, cold cache) over a plain loop feeding
   torchmetrics' FrechetInceptionDistance the same images through the same extractor, decoded and
   resized the same way with the same threads (target <= 1.1x).

Each timing is the fastest of ``--repeats`` runs (the least noisy estimate on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_images(root: Path, n: int, size: int, seed: int, brightness: int) -> Path:
    """``n`` noisy PNGs with classes and skin types, and their metadata.jsonl."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        fst, label = i % 6 + 1, ["melanoma", "nevus"][i % 2]
        base = rng.normal(100 + brightness + 10 * fst, 30, (size // 8, size // 8, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)
        name = f"images/{i:05d}.png"
        image.save(root / name, compress_level=1)
        lines.append(json.dumps({"file_name": name, "id": str(i), "label": label, "fst": fst,
                                 "caption": f"a dermoscopic image of {label}"}))
    manifest = root / "metadata.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_evaluate(real: Path, synthetic: Path, out: Path, cache: Path, **overrides) -> float:
    from fairsynth.metrics.config import EvaluateConfig
    from fairsynth.metrics.evaluate import evaluate

    cfg = EvaluateConfig(real=str(real), synthetic=str(synthetic), output=str(out), cache_dir=str(cache),
                         extractor="random", **overrides)
    start = time.perf_counter()
    evaluate(cfg)
    return time.perf_counter() - start


def run_torchmetrics(real: Path, synthetic: Path, batch_size: int) -> tuple[float, float]:
    """Plain torchmetrics FID over the same images, decoded and resized as fairsynth does."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from fairsynth.data.preprocess import load_rgb
    from fairsynth.metrics.extractors import create_extractor, prepare_image

    start = time.perf_counter()
    network = create_extractor("random")
    fid = FrechetInceptionDistance(feature=network.load())

    def load(path: Path) -> np.ndarray:
        return prepare_image(load_rgb(path), network.input_size)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for manifest, is_real in ((real, True), (synthetic, False)):
            paths = [manifest.parent / json.loads(line)["file_name"] for line in manifest.read_text().splitlines()]
            for i in range(0, len(paths), batch_size):
                arrays = list(pool.map(load, paths[i : i + batch_size]))
                fid.update(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), real=is_real)
    value = float(fid.compute())
    return time.perf_counter() - start, value


def best(repeats: int, measure) -> float:
    """The fastest of ``repeats`` timings: on a shared machine the minimum is the least noisy."""
    return min(measure(i) for i in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="images in the small run (half real, half synthetic)")
    parser.add_argument("--large", type=int, default=10000, help="images in the large run")
    parser.add_argument("--overhead-images", type=int, default=2000, help="images in the comparison with torchmetrics")
    parser.add_argument("--size", type=int, default=256, help="side of the generated PNGs in pixels (SD outputs are 512-1024)")
    parser.add_argument("--repeats", type=int, default=3, help="each timing is the fastest of this many runs (cold caches each time)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the image sets (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    print(f"# bench_evaluate: extractor `random` (tiny seeded CNN, TEST ONLY), {args.size}px PNGs, torch threads "
          f"{args.threads}, cpu count {os.cpu_count()}, fastest of {args.repeats} runs per timing, workdir {workdir}")

    start = time.perf_counter()
    sets = {}
    for n in sorted({args.small, args.large, args.overhead_images}):
        sets[n] = (
            write_images(workdir / f"real_{n}", n // 2, args.size, seed=0, brightness=0),
            write_images(workdir / f"synthetic_{n}", n - n // 2, args.size, seed=1, brightness=20),
        )
    print(f"built image sets in {time.perf_counter() - start:.1f}s")
    runs = iter(range(10**6))

    def cold(n: int, **overrides) -> float:
        """One evaluation of the n-image sets with a cache nobody has used."""
        k = next(runs)
        return run_evaluate(*sets[n], workdir / f"out_{k}", workdir / f"cache_{k}", **overrides)

    # 1. caching: the same cache for both runs of a pair, a new cache for every pair
    def pair(_: int) -> tuple[float, float]:
        k = next(runs)
        real, synthetic = sets[args.small]
        cache = workdir / f"cache_pair_{k}"
        first = run_evaluate(real, synthetic, workdir / f"out_{k}a", cache, metrics=["fd"], by=["fst", "class"], bootstrap=0)
        second = run_evaluate(real, synthetic, workdir / f"out_{k}b", cache, metrics=["kid"], by=["fst", "class"], bootstrap=0)
        return first, second

    pairs = [pair(i) for i in range(args.repeats)]
    first, second = min(p[0] for p in pairs), min(p[1] for p in pairs)
    print(f"1. caching   first (fd, cold cache) {first:7.2f}s   second (kid, same images, cached) {second:7.2f}s   "
          f"ratio {second / first:.3f}  (target <= 0.10; {args.small} images, by fst and class, no bootstrap)")

    # 2. scaling
    grouped = dict(metrics=["fd"], by=["fst", "class"], bootstrap=100)
    times = {n: best(args.repeats, lambda _, n=n: cold(n, **grouped)) for n in (args.small, args.large)}
    ratio = times[args.large] / times[args.small]
    print(f"2. scaling   {args.small} images {times[args.small]:7.2f}s   {args.large} images {times[args.large]:7.2f}s   "
          f"ratio {ratio:.2f}x for {args.large / args.small:.0f}x images  (target <= {1.1 * args.large / args.small:.0f}x; "
          f"fd by fst and class with 100 bootstrap resamples, cold caches)")

    # 3. overhead against torchmetrics, runs alternating
    n = args.overhead_images
    theirs, ours, values = [], [], {}
    for _ in range(args.repeats):
        elapsed, values["torchmetrics"] = run_torchmetrics(*sets[n], batch_size=32)
        theirs.append(elapsed)
        k = next(runs)
        ours.append(run_evaluate(*sets[n], workdir / f"out_{k}", workdir / f"cache_{k}", metrics=["fd"], by=[], bootstrap=0))
        report = json.loads((workdir / f"out_{k}" / "evaluation.json").read_text())
        values["fairsynth"] = next(r["value"] for r in report["results"] if r["metric"] == "fd")
    print(f"3. overhead  torchmetrics FID loop {min(theirs):7.2f}s   fairsynth evaluate (fd, cold cache) {min(ours):7.2f}s   "
          f"ratio {min(ours) / min(theirs):.2f}x  (target <= 1.1x; {n} images; FID {values['fairsynth']:.6g} vs "
          f"torchmetrics {values['torchmetrics']:.6g})")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
