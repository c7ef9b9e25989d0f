"""The code keeps its layers: no import cycle, and no module imports from a layer above its own.

Every import counts, the ones inside functions too (a lazy import that closes a cycle is
still a cycle). Layers, lowest first, as docs/architecture.md draws them."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ["models"],
    ["pipeline.config", "pipeline.tables", "pipeline.ray_auth", "pipeline.audio", "pipeline.demo_corpus"],
    ["pipeline.services"],
    ["pipeline.tracking", "pipeline.weights", "pipeline.codec"],
    ["pipeline.cli"],
    ["pipeline.registry"],
    ["pipeline.data", "pipeline.separate"],
    ["pipeline.align"],
    ["pipeline.preprocess", "pipeline.train", "pipeline.sample"],
    ["pipeline.flow"],
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*ROOT.glob("models/**/*.py"), *ROOT.glob("pipeline/**/*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.split(".")[0] in ("models", "pipeline") else ""
                if found and found not in (name, "pipeline"):
                    graph[name].add(found)
    return graph


def component(module: str) -> str:
    parts = module.split(".")
    return "models" if parts[0] == "models" else ".".join(parts[:2])


def test_every_component_has_a_layer():
    assert {component(m) for m in modules()} - {"pipeline"} <= set(RANK)


def test_no_module_imports_from_a_higher_layer_or_a_sibling_component():
    wrong = sorted(f"{a} imports {b}" for a, bs in import_graph().items() for b in bs
                   if component(a) != component(b) and RANK[component(b)] >= RANK[component(a)])
    assert not wrong, wrong


def test_no_import_cycle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_a_layer_breach(monkeypatch):
    """Checked against a graph with both faults, so a checker that sees nothing cannot pass."""
    fake = {"pipeline.registry": {"pipeline.train.run"}, "pipeline.train.run": {"pipeline.registry"}}
    monkeypatch.setattr(__import__(__name__), "import_graph", lambda: fake)
    with pytest.raises(AssertionError, match="pipeline.registry"):
        test_no_import_cycle()
    with pytest.raises(AssertionError, match="pipeline.registry imports pipeline.train.run"):
        test_no_module_imports_from_a_higher_layer_or_a_sibling_component()


def test_no_module_in_models_or_pipeline_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
