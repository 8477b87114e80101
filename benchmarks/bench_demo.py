#!/usr/bin/env python
"""Time `fairsynth demo` stage by stage on this machine, against the 10-minute target.

    python benchmarks/bench_demo.py                      # the shipped demo, fresh work folder
    python benchmarks/bench_demo.py --threads 2 --keep runs/bench-demo -- train.steps=600
    python benchmarks/bench_demo.py --threads 2 --full   # `fairsynth demo --full`: also the curve and the ablation

Runs the real command in a subprocess on a fresh ``--workdir`` (so nothing is reused),
reads the per-stage seconds the demo prints last, and prints them with the total and its
ratio to the target. Needs the shipped embedded base (scripts/build_embedded_base.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 600.0
STAGES = {"world": "procedural world, validated", "prepare": "prepare (64 px, hair removal)",
          "train": "fine-tune + class x skin-type grid", "classifier": "real-data classifier",
          "generate": "generate + filter", "evaluate": "evaluate (classifier features)",
          "downstream": "downstream comparison", "curve": "ratio curve (--full)", "ablate": "V-VI ablation (--full)",
          "report": "HTML report"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/OpenMP threads of the demo.")
    parser.add_argument("--keep", type=Path, default=None, help="Run in this folder and keep the outputs (default: a temporary one).")
    parser.add_argument("--full", action="store_true", help="Time `fairsynth demo --full` (no 10-minute target: it is longer).")
    parser.add_argument("overrides", nargs="*", help="Dotted overrides passed to the demo.")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as temporary:
        work = str(args.keep) if args.keep else temporary
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "fairsynth.cli", "demo", "--workdir", f"{work}/demo", *(["--full"] if args.full else []),
             *args.overrides],
            env=env, capture_output=True, text=True,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        print(f"demo failed with exit code {done.returncode}")
        return done.returncode
    line = [l for l in done.stdout.splitlines() if "total" in l and "s;" in l][-1]
    stages = dict(re.findall(r"(\w+): (\d+) s", line))  # "world: 3 s; prepare: 5 s; ...; total 598 s"
    print(f"fairsynth demo{' --full' if args.full else ''} on {os.cpu_count()} CPU cores, {args.threads} threads, "
          f"overrides {args.overrides or 'none'}")
    for key, name in STAGES.items():
        if key in stages:
            print(f"  {key:<10s} {name:38s} {float(stages[key]):7.0f} s")
    if args.full:
        print(f"  total (wall, process start to exit)         {wall:7.0f} s  (--full: the 10-minute target is the plain demo's)")
    else:
        print(f"  total (wall, process start to exit)         {wall:7.0f} s  = {wall / TARGET_SECONDS:.2f} x the 10-minute target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
