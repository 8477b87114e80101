"""The import graph of src/fairsynth: no circle, and every import runs down the layers.

What counts as an import: every ``import`` and ``from ... import`` statement anywhere in a
module — at module level, inside functions and methods (a lazy import is still a dependency,
only a later one), and under ``if TYPE_CHECKING:`` (an annotation is still a dependency) —
resolved to the innermost module of the package it names: ``from fairsynth.filters import
FILTERS`` is an import of ``fairsynth.filters`` (its ``__init__``), ``from fairsynth.cli import
train`` one of ``fairsynth.cli.train``, ``import fairsynth.metrics.extractors`` one of that
package. Two things are not counted: the parent packages Python runs before a submodule (else
every package whose ``__init__`` imports a submodule would be a circle), and the modules a
registry imports by name when it discovers its members (``Registry.discover``): members
register themselves into a registry declared below them, the way plugins do.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers of fairsynth, bottom first. A module may import modules of its own unit and of
#: any unit in a lower layer; units side by side in one layer do not import each other. A unit
#: is a module or a package with everything under it (``fairsynth`` alone is the package's
#: ``__init__``). The order is the one the code has; docs/architecture.md draws it.
LAYERS: list[tuple[str, ...]] = [
    # the version, atomic writes and hashing, the registry mechanism, the study lock (one writer per study)
    ("fairsynth", "fairsynth.io", "fairsynth.registry", "fairsynth.lock"),
    # typed configs from YAML + dotted overrides; the data and prepare sections; the readers registry
    ("fairsynth.config",),
    # records and manifests, the bounded image opener, readers, validation, preprocessing, ITA, splits, sampling, prepare
    ("fairsynth.data",),
    # loading a base (hub id, folder, single file, embedded); measuring images; the classifier study
    ("fairsynth.models", "fairsynth.metrics", "fairsynth.downstream"),
    # fine-tuning methods on a loaded base
    ("fairsynth.methods",),
    # the training loop; quality checks (which read metrics' extractors and downstream's classifier)
    ("fairsynth.training", "fairsynth.filters"),
    # plan, sampler, writer; the generate stage, which runs the filters; the hybrid arm's generator
    ("fairsynth.generation",),
    # the procedural world: data, its judge, truth, oracle, and the conditioning proof drawn with a sampler
    ("fairsynth.world",),
    # a whole study in one file: every stage's section
    ("fairsynth.recipe",),
    # which stages run and when: fingerprints, run state
    ("fairsynth.study",),
    # what reads a study's outputs (report, expert review) and the grid of studies (sweep)
    ("fairsynth.report", "fairsynth.review", "fairsynth.sweep"),
    # the command line
    ("fairsynth.cli",),
]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{"fairsynth.data.prepare": path, "fairsynth.data": path/__init__.py, ...}`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _innermost(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """``{importer: {imported: first line}}`` between the modules of ``package`` (see the module docstring)."""
    modules = module_files(root, package)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the importing module's package, up level - 1
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # `from pkg import sub` imports the submodule when there is one, else pkg itself
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                           for alias in node.names]
            for target in targets:
                found = _innermost(target, modules) if target.split(".")[0] == package else None
                if found and found != name:
                    graph[name].setdefault(found, node.lineno)
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_of(module: str, layers: list[tuple[str, ...]]) -> tuple[str, int] | None:
    """The unit holding ``module`` (the longest that names it or a package above it) and its layer."""
    best = None
    for level, units in enumerate(layers):
        for unit in units:
            root_only = "." not in unit  # the top package's unit is its __init__ alone
            if module == unit or (not root_only and module.startswith(unit + ".")):
                if best is None or len(unit) > len(best[0]):
                    best = (unit, level)
    return best


def layer_violations(graph: dict[str, dict[str, int]], layers: list[tuple[str, ...]], files: dict[str, Path]) -> list[str]:
    """Every import that does not run down the layers, and every module in no layer."""
    problems = []
    for module in sorted(graph):
        if unit_of(module, layers) is None:
            problems.append(f"{module} is in no layer of LAYERS: place its package there")
    for importer in sorted(graph):
        mine = unit_of(importer, layers)
        for imported, line in sorted(graph[importer].items()):
            theirs = unit_of(imported, layers)
            if mine is None or theirs is None or mine[0] == theirs[0] or theirs[1] < mine[1]:
                continue
            where = f"{files[importer].relative_to(SRC.parent) if files[importer].is_relative_to(SRC.parent) else files[importer]}:{line}"
            how = "beside it in the same layer" if theirs[1] == mine[1] else "in a higher layer"
            problems.append(f"{where}: {importer} ({mine[0]}) imports {imported} ({theirs[0]}, {how})")
    return problems


@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC, "fairsynth")


def test_the_graph_sees_every_kind_of_import(graph):
    """The parser finds what the rules rely on, so an empty or partial graph cannot pass."""
    assert len(graph) > 150
    assert "fairsynth.training.loop" in graph["fairsynth.cli.train"]  # inside a function
    assert "fairsynth.filters.context" in graph["fairsynth.filters.base"]  # under `if TYPE_CHECKING:`
    assert "fairsynth.config" in graph["fairsynth.data.readers"]  # at module level
    assert "fairsynth.cli.train" in graph["fairsynth.cli"]  # `from package import submodule`
    assert "fairsynth.registry" in graph["fairsynth.filters"]


def test_no_import_circle(graph):
    found = circles(graph)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b}:{graph[a][b]}" for a in c for b in graph[a] if b in c)
              for c in found]
    assert not found, "import circles:\n" + "\n".join(detail)


def test_imports_run_down_the_layers(graph):
    problems = layer_violations(graph, LAYERS, module_files(SRC, "fairsynth"))
    assert not problems, "\n".join(problems)


def test_every_unit_of_the_layers_exists():
    files = module_files(SRC, "fairsynth")
    missing = [unit for units in LAYERS for unit in units if unit not in files]
    assert not missing, f"LAYERS names units that are not modules or packages: {missing}"


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The rules on a small package built here: a lazy circle, a TYPE_CHECKING import upward, a stray module."""
    pkg = tmp_path / "toy"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from toy.low.a import thing\n")
    (pkg / "low" / "a.py").write_text("def thing():\n    from toy.low import b\n    return b\n")
    (pkg / "low" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import a\nif TYPE_CHECKING:\n    from toy.high import Top\n"
    )
    (pkg / "high.py").write_text("class Top: ...\n")
    (pkg / "stray.py").write_text("import toy.low.a\n")
    graph = import_graph(tmp_path, "toy")
    assert graph["toy.low.a"] == {"toy.low.b": 2} and graph["toy.low.b"] == {"toy.low.a": 2, "toy.high": 4}
    assert circles(graph) == [["toy.low.a", "toy.low.b"]]
    problems = layer_violations(graph, [("toy", "toy.low"), ("toy.high",)], module_files(tmp_path, "toy"))
    assert any("toy.low.b (toy.low) imports toy.high (toy.high, in a higher layer)" in p for p in problems), problems
    assert any(p.startswith("toy.stray is in no layer") for p in problems), problems
    assert len(problems) == 2, problems


def test_the_documented_layers_are_these():
    """docs/architecture.md draws LAYERS as a table, top layer first; it says what this test holds."""
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", text.split("## Layers", 1)[1].split("\n## ", 1)[0], flags=re.MULTILINE)
    documented = {}
    for number, cell in rows:
        units = [f"fairsynth.{name}" for name in re.findall(r"`([a-z_]+)`", cell) if name != "__init__"]
        documented[int(number)] = tuple(sorted(units + (["fairsynth"] if "__init__" in cell else [])))
    assert documented == {k + 1: tuple(sorted(units)) for k, units in enumerate(LAYERS)}
