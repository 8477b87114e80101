"""Checkpoint folders: exact round trips of optimiser, scheduler and RNG state, no pickle."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from diffusers.optimization import get_scheduler

from fairsynth.training.checkpoint import (
    CheckpointError,
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_readable,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)


def _optimizer_and_scheduler():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 1e-3, "name": "a"}, {"params": params[1:], "lr": 2e-3}])
    scheduler = get_scheduler("cosine_with_restarts", optimizer, num_warmup_steps=2, num_training_steps=10, num_cycles=2)
    for _ in range(3):
        sum((p**2).sum() for p in params).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return params, optimizer, scheduler


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_flatten_round_trips_optimizer_and_scheduler_state():
    _, optimizer, scheduler = _optimizer_and_scheduler()
    for state in (optimizer.state_dict(), scheduler.state_dict()):
        structure, tensors = flatten_state(state)
        assert _equal(unflatten_state(structure, tensors), state)


def test_checkpoint_folder_restores_training_exactly(tmp_path):
    params, optimizer, scheduler = _optimizer_and_scheduler()
    path = save_checkpoint(
        tmp_path, 3, phase=0, state={"loss": 0.5}, trainable={"w": params[0].detach()},
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
    )
    assert {p.suffix for p in path.iterdir()} <= {".json", ".safetensors"}  # never pickle
    loaded = load_checkpoint(path)
    assert loaded.step == 3 and loaded.state["loss"] == 0.5

    # continue the original and a restored copy one more step: identical
    def one_more(ps, opt, sch):
        sum((p**2).sum() for p in ps).backward()
        opt.step()
        sch.step()
        return [p.detach().clone() for p in ps], sch.get_last_lr()

    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    optimizer2 = torch.optim.AdamW([{"params": copies[:1], "lr": 1e-3, "name": "a"}, {"params": copies[1:], "lr": 2e-3}])
    scheduler2 = get_scheduler("cosine_with_restarts", optimizer2, num_warmup_steps=2, num_training_steps=10, num_cycles=2)
    optimizer2.load_state_dict(loaded.optimizer)
    scheduler2.load_state_dict(loaded.scheduler)
    expected, lr = one_more(params, optimizer, scheduler)
    got, lr2 = one_more(copies, optimizer2, scheduler2)
    assert lr == lr2
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_rng_states_round_trip(tmp_path):
    state = rng_state()
    structure, tensors = flatten_state(state)
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(unflatten_state(structure, tensors))
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_keep_the_newest_and_find_the_latest(tmp_path):
    params, optimizer, scheduler = _optimizer_and_scheduler()
    for step in (2, 4, 6):
        save_checkpoint(
            tmp_path, step, phase=0, state={}, trainable={"w": params[0].detach()},
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), keep=2,
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000006"]
    assert latest_checkpoint(tmp_path).name == "step-000006"
    assert resolve_resume("latest", tmp_path) == tmp_path / "step-000006"
    assert resolve_resume("latest", tmp_path / "nothing-here") is None
    # a folder left half-written by a kill is never taken for a checkpoint
    (tmp_path / ".step-000008.partial").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-000006"


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "optimizer.safetensors", "rng.json", "state.json"])
def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_it_resumed(tmp_path, damaged):
    params, optimizer, scheduler = _optimizer_and_scheduler()
    for step in (2, 4):
        save_checkpoint(
            tmp_path, step, phase=0, state={}, trainable={"w": params[0].detach() + step},
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        )
    broken = tmp_path / "step-000004" / damaged
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # cut short, as by a disk error
    with pytest.raises(CheckpointError, match=str(broken)):
        load_checkpoint(tmp_path / "step-000004")
    warnings = []
    checkpoint = load_latest_readable(tmp_path, warn=warnings.append)
    assert checkpoint.step == 2 and torch.equal(checkpoint.trainable["w"], params[0].detach() + 2)
    assert len(warnings) == 1 and str(broken) in warnings[0] and str(tmp_path / "step-000002") in warnings[0]
    # every checkpoint damaged: one error naming each, never a silent fresh start
    first = tmp_path / "step-000002" / damaged
    first.write_bytes(first.read_bytes()[:3])
    with pytest.raises(CheckpointError, match="no checkpoint .* can be read") as caught:
        load_latest_readable(tmp_path)
    assert str(broken) in str(caught.value) and str(first) in str(caught.value)
    assert load_latest_readable(tmp_path / "nothing-here") is None
