"""The layout rules of docs/architecture.md, checked on the source (issue 13).

Walks the AST of every module under ``python/keytech`` (nothing is imported) and checks:

* no import circle between modules. Both module-level and function-level (lazy) imports are
  edges. ``from keytech.a import b`` is an edge to ``keytech.a.b`` when that is a module, else to
  ``keytech.a``. Not counted: the implicit initialisation of parent packages (importing
  ``keytech.a.b`` runs ``keytech/a/__init__.py`` first; package ``__init__`` files only re-export)
  and imports by string (``importlib.import_module`` in ``keytech.estimation.dispatch``, which is
  how the estimator registry reaches the families without importing them);
* no module imports a leading-underscore name from another module (``from m import _x``) or
  reads one off an imported module (``m._x``);
* ``keytech.estimation`` imports nothing from ``keytech.tables`` or ``keytech.report``, and
  ``keytech.tables`` nothing from ``keytech.report`` (presentation sits above estimation);
* run orchestration (``keytech.estimation.orchestration``: registry, gate, runner, store) sits above
  the estimators: the core, the families, ``did/``, ``inference/`` and ``dispatch`` import only its
  ``registry`` (the spec model), and ``registry`` imports nothing from ``keytech.estimation``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "python"
PKG = ROOT / "keytech"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}

def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "keytech"]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(name, node)
            if mod.split(".")[0] == "keytech":
                out += [(mod, a.name, node.lineno) for a in node.names]
    return out


def _edges(name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for mod, attr, line in _imports(name):
        target = f"{mod}.{attr}" if attr and f"{mod}.{attr}" in MODULES else mod
        if target in MODULES and target != name:
            out.setdefault(target, line)
    return out


GRAPH = {name: _edges(name) for name in MODULES}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_the_package():
    assert {"keytech.estimation.orchestration.runner", "keytech.estimation.core.fitting", "keytech.tables.publish",
            "keytech.report.page"} <= set(MODULES)
    # a function-level import is an edge: runner imports tqdm lazily but the registry at module level,
    # count imports linear at module level, cs_dr imports core.panel inside its estimator
    assert "keytech.estimation.orchestration.registry" in GRAPH["keytech.estimation.orchestration.runner"]
    assert "keytech.estimation.core.panel" in GRAPH["keytech.estimation.did.cs_dr"]


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_circle_in_keytech():
    cycles = list(_cycles(GRAPH))
    detail = [" -> ".join(c) + "  (" + "; ".join(f"{a} imports {b} at line {GRAPH[a][b]}" for a in c for b in c
                                                  if b in GRAPH[a]) + ")" for c in cycles]
    assert not cycles, "import circles:\n" + "\n".join(detail)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_cross_module_import_of_a_private_name():
    bad = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = _resolve(name, node)
                if mod.split(".")[0] != "keytech":
                    continue
                for a in node.names:
                    if f"{mod}.{a.name}" in MODULES:
                        module_aliases.add(a.asname or a.name)
                    elif _private(a.name) and mod != name:
                        bad.append(f"{name}:{node.lineno} imports {a.name} from {mod}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "keytech":
                        if _private(a.name.rsplit(".", 1)[-1]):
                            bad.append(f"{name}:{node.lineno} imports module {a.name}")
                        if a.asname:
                            module_aliases.add(a.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and _private(node.attr)):
                bad.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer, forbidden", [
    ("keytech.estimation", ("keytech.tables", "keytech.report")),
    ("keytech.tables", ("keytech.report",)),
])
def test_lower_layer_imports_nothing_from_presentation(layer, forbidden):
    bad = []
    for name in MODULES:
        if name != layer and not name.startswith(layer + "."):
            continue
        for mod, attr, line in _imports(name):
            full = f"{mod}.{attr}" if attr else mod
            if any(full == f or full.startswith(f + ".") for f in forbidden):
                bad.append(f"{name}:{line} imports {full}")
    assert not bad, "\n".join(bad)


ORCH = "keytech.estimation.orchestration"


def test_estimators_import_only_the_spec_model_from_orchestration():
    bad = []
    for name in MODULES:
        if not name.startswith("keytech.estimation.") or name == ORCH or name.startswith(ORCH + "."):
            continue  # (the package keytech.estimation itself re-exports the runner's entry points)
        for mod, attr, line in _imports(name):
            full = f"{mod}.{attr}" if attr and f"{mod}.{attr}" in MODULES else mod
            if (full == ORCH or full.startswith(ORCH + ".")) and full != f"{ORCH}.registry":
                bad.append(f"{name}:{line} imports {full}")
    assert not bad, "estimators may import only the registry from orchestration:\n" + "\n".join(bad)
    # the rule sees what it guards: families do import the registry, and the scheduler the dispatcher
    assert f"{ORCH}.registry" in GRAPH["keytech.estimation.linear"]
    assert "keytech.estimation.dispatch" in GRAPH[f"{ORCH}.schedule"]


def test_the_spec_model_imports_nothing_from_estimation():
    assert MODULES[f"{ORCH}.registry"].exists()
    bad = [f"line {line}: {mod}" for mod, _, line in _imports(f"{ORCH}.registry") if mod.startswith("keytech.estimation")]
    assert not bad, bad
    assert _imports(ORCH) == []  # the package's __init__ loads nothing: importing the registry does not load the runner
