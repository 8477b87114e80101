"""The fault campaign (benchmarks/faults.py) as a test: every stage killed at seeded random
moments and inside its writes, resumed, and equal to a run never killed; truncated files and a
full disk. Slow (real command-line processes, each starting torch): CI runs it with -m slow."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Kills per stage here: enough to pass every crash point kind a few times within CI's time
#: (`python benchmarks/faults.py` runs 20 per stage by default, `--points N` more).
POINTS = 5


def _campaign_module():
    spec = importlib.util.spec_from_file_location("fairsynth_faults", REPO / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_stage_survives_kills_truncated_files_and_a_full_disk(tmp_path):
    faults = _campaign_module()
    rows = faults.campaign(tmp_path, points=POINTS, chain=5, seed=0, log=print)
    table = faults.render(rows)
    print(table)
    assert not [row for row in rows if row.differed], table
    killed = {row.stage: row for row in rows if row.stage in faults.STAGES}
    assert set(killed) == set(faults.STAGES)
    assert all(row.tried >= POINTS and row.survived == row.tried for row in killed.values()), table
    inside_writes = sum((row.at_points for row in killed.values()), start=Counter())
    assert sum(inside_writes.values()) >= POINTS, table  # about half the kills land inside writes (a coin per kill)
    assert all(row.survived == row.tried > 0 for row in rows if row.stage not in faults.STAGES), table
