"""Every registered method keeps the contract of fairsynth.methods.base on the tiny SD pipeline.

Parametrised over ``METHODS.names()``, so a new method is covered the moment it registers.
Each method runs with its default options, except that a method with its own phase schedule
(options named ``*_steps``, e.g. pivotal's ti_steps / lora_steps) gets one step per phase.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fairsynth.data.records import Record
from fairsynth.methods import METHODS
from fairsynth.methods.base import MethodError
from tests.methods.export_checks import one_thread  # noqa: F401  (fixture)
from tests.methods.training_steps import derm_records, tiny, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_METHODS = METHODS.names()


def contract_records() -> list[Record]:
    """Two labelled records with skin types; captions name an instance token (DreamBooth's default)."""
    records = derm_records(2)
    for record in records:
        record.caption = f"a photo of sks {record.label}"
    return records
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def test_registry_holds_the_adapter_methods() -> None:
    assert {"lora", "dora", "loha", "lokr", "oft", "bitfit", "difffit", "full"} <= set(ALL_METHODS)


def quick_config(method_class: type) -> object:
    """Default options with every phase length (``*_steps`` > 1) cut to 1."""
    config = method_class.Config()
    shorter = {
        f.name: 1 for f in dataclasses.fields(config)
        if f.name.endswith("_steps") and isinstance(getattr(config, f.name), int) and getattr(config, f.name) > 1
    }
    return dataclasses.replace(config, **shorter) if shorter else config


def run_steps(config: object) -> int:
    """The run's length: the sum of the method's own phase lengths, else 2."""
    own = [getattr(config, f.name) for f in dataclasses.fields(config) if f.name.endswith("_steps")]
    own = [n for n in own if isinstance(n, int)]
    return sum(own) if own else 2


@pytest.mark.parametrize("name", ALL_METHODS)
def test_config_fields_have_help(name: str) -> None:
    config_class = METHODS.get(name).Config
    missing = [f.name for f in dataclasses.fields(config_class) if not f.metadata.get("help")]
    assert not missing, f"{name}: fields without help: {missing}"


@pytest.mark.parametrize("name", ALL_METHODS)
def test_method_trains_round_trips_and_exports(name: str, tmp_path: Path) -> None:
    method_class = METHODS.get(name)
    config = quick_config(method_class)
    method = method_class(config)
    components, _ = tiny("sd")
    records = contract_records()
    method.check(components, records)
    records = records + method.extra_records(components, records, tmp_path / "work")
    method.prepare(components)
    before = method.trainable_state(components)
    assert before, f"{name} trains nothing"

    run = train_steps(method, components, records, steps=run_steps(config), prepared=True)

    # parameter groups hold exactly what the state holds, and only those require grad
    grouped = {id(p) for groups in run.groups for g in groups for p in g["params"]}
    trainable = {id(p) for m in components.modules().values() for p in m.parameters() if p.requires_grad}
    assert trainable <= grouped
    after = method.trainable_state(components)
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{name}: no trained tensor changed"
    assert all(torch.isfinite(t).all() for t in after.values())

    # checkpoint round trip into fresh components
    other = method_class(config)
    fresh, _ = tiny("sd")
    other.check(fresh, records)
    other.prepare(fresh)
    other.load_trainable_state(fresh, after)
    again = other.trainable_state(fresh)
    assert set(again) == set(after)
    assert all(torch.equal(again[k], after[k]) for k in after)

    files = method.export(components, tmp_path / "export")
    assert files
    for path in files.values():
        assert Path(path).exists()
    written = [p for p in (tmp_path / "export").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in written)
    assert not [p for p in written if p.suffix in PICKLE_SUFFIXES]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_unknown_base_kind_is_refused_before_training(name: str) -> None:
    method_class = METHODS.get(name)
    components, _ = tiny("sd")
    components.kind = "sd3"  # type: ignore[assignment]  # a base family no method supports yet
    with pytest.raises(MethodError):
        method_class(method_class.Config()).check(components, contract_records())


@pytest.mark.parametrize("name", ALL_METHODS)
def test_load_trainable_state_refuses_a_foreign_state(name: str) -> None:
    method_class = METHODS.get(name)
    method = method_class(method_class.Config())
    components, _ = tiny("sd")
    method.check(components, contract_records())
    method.prepare(components)
    with pytest.raises((MethodError, KeyError, ValueError)):
        method.load_trainable_state(components, {"unet.not_a_parameter": torch.zeros(1)})
