"""Splitting a plan across processes: ``accelerate launch --num_processes K fairsynth ...``.

The candidates still to generate are cut into batches in plan order (cell by cell, index by
index), and batch ``b`` goes to process ``b mod K``. Every image is therefore made in the same
batch, from the same seed, whatever K is: the union of K processes' images equals a
single-process run image for image. Process 0 alone judges, selects and writes manifests; the
others only write images and their own journal. All processes must see the same output folder
(one machine, or a shared filesystem across nodes).

Several machines: ``accelerate launch --num_machines M --machine_rank R --main_process_ip HOST
--num_processes K ... -m fairsynth.cli generate --config recipe.yaml`` on each, with
``generate.output`` on a filesystem all of them mount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def batches(items: Sequence[T], batch_size: int) -> list[list[T]]:
    """``items`` cut into consecutive batches of ``batch_size`` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def my_batches(all_batches: list[list[T]], rank: int, world: int) -> list[list[T]]:
    """The batches process ``rank`` of ``world`` generates: every ``world``-th, starting at ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"process {rank} is outside 0..{world - 1}")
    return all_batches[rank::world]


@dataclass
class Workers:
    """This process's place among the processes of a run (one when not launched by accelerate)."""

    rank: int = 0
    world: int = 1
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """Process 0's ``value`` on every process."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]


def current_workers() -> Workers:
    """The process group ``accelerate launch`` set up (on CPU-only machines a gloo group)."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Workers()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Workers(state.process_index, state.num_processes, state)
