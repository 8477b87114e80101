#!/usr/bin/env python
"""Train a shipped world judge again from its recorded config and write it beside the package.

    python scripts/build_judge.py --skin-type-effect 1.0            # about 12 minutes on one CPU core
    python scripts/build_judge.py --skin-type-effect 1.0 --second   # the second judge (another architecture)

The judge of each world look is listed in ``fairsynth.world.judge.SHIPPED_JUDGE_CONFIGS`` (the
second judge in ``SECOND_JUDGE_CONFIGS``); the
weights (safetensors) and the training report (held-out accuracy per class x skin-type cell)
are written atomically to ``src/fairsynth/assets/judge/``. The plain world's judge is also
stage 0 of ``scripts/build_embedded_base.py``.
"""

from __future__ import annotations

import argparse
import json

import torch

from fairsynth.io import atomic_write_text
from fairsynth.world.judge import (
    SECOND_JUDGE_CONFIGS,
    SECOND_JUDGES,
    SHIPPED_JUDGE_CONFIGS,
    SHIPPED_JUDGES,
    save_judge,
    train_judge,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skin-type-effect", type=float, required=True, choices=sorted(SHIPPED_JUDGE_CONFIGS))
    parser.add_argument("--second", action="store_true", help="build the second judge of that look")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the shipped judges: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs, paths = (SECOND_JUDGE_CONFIGS, SECOND_JUDGES) if args.second else (SHIPPED_JUDGE_CONFIGS, SHIPPED_JUDGES)
    if args.skin_type_effect not in configs:
        parser.error(f"no {'second ' if args.second else ''}judge is configured for skin_type_effect {args.skin_type_effect}")
    judge, report = train_judge(configs[args.skin_type_effect])
    path = paths[args.skin_type_effect]
    save_judge(judge, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    cells = report["held_out_accuracy_by_cell"]
    worst = min(cells, key=cells.get)
    print(f"{path}: held-out accuracy {report['held_out_accuracy']:.4f}, lowest cell {worst} {cells[worst]:.3f}")


if __name__ == "__main__":
    main()
