"""The package layout shows the pipeline, and the imports keep to it.

Every module of ``mlx_tune`` is parsed with ``ast`` (nothing is imported) and placed in a layer:

    0 bottom    mlx_tune/*.py: records, fileio, layout, phases, tools, docstrings, rendering; and the
                task registry (mlx_tune/tasks/__init__.py: names to module paths, imported lazily)
    1 models    mlx_tune/models/: the model loader, the BLAS decision, the tiny model
    2 stages    mlx_tune/data/, mlx_tune/training/, mlx_tune/eval/ (side by side)
    3 tasks     mlx_tune/tasks/*.py: each task's generators, metrics, baselines and demo, built on
                the stages (evaluation reaches a task's metrics through the registry, never by import)
    4 entries   mlx_tune/cli/, mlx_tune/demo.py, mlx_tune/bench.py, mlx_tune/__main__.py

An import points down (to a lower layer) or stays inside its own package; the three stages do not
import each other (``ALLOWED_ACROSS`` is where a real exception would be named, with its reason).
Imports inside ``if TYPE_CHECKING:`` are not run and do not count. Function-level imports do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mlx_tune"
MAX_LINES = 450
BOTTOM = {"mlx_tune", "records", "fileio", "layout", "phases", "tools", "docstrings", "rendering", "tasks"}
ENTRIES = {"demo", "demo_stages", "bench", "__main__"}
STAGES = ("data", "training", "eval")
ALLOWED_ACROSS: set[tuple[str, str]] = set()  # (importer, imported) across stages; none today
# Where the OpenBLAS decision is made: once, at each command-line entry, before any work.
BLAS_ENTRIES = {"mlx_tune.cli", "mlx_tune.bench"}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, package: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from mlx_tune.x import y`` counts ``mlx_tune.x.y``
    when that is a module, else ``mlx_tune.x``)."""
    name = module_name(path, package)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in modules else base)
    root = package.name
    return {m for m in found if (m == root or m.startswith(root + ".")) and m != name}


def import_graph(package: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """``{module: modules it imports}`` and ``{module: lines}`` for every module under ``package``."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in paths}
    graph = {module_name(p, package): imports_of(p, package, modules) for p in paths}
    lines = {module_name(p, package): len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    return graph, lines


def layer_of(module: str) -> tuple[int, str] | None:
    """``(rank, group)``: where ``module`` sits; ``None`` for a module no layer names."""
    parts = module.split(".")[1:]
    if not parts:
        return 0, "bottom"
    if len(parts) == 1 and parts[0] in BOTTOM:
        return 0, "bottom"
    if len(parts) == 1 and parts[0] in ENTRIES or parts[0] == "cli":
        return 4, "entries"
    if parts[0] == "tasks":
        return 3, "tasks"
    if parts[0] == "models":
        return 1, "models"
    if parts[0] in STAGES:
        return 2, parts[0]
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up, or across stages without being allowed."""
    out = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            la, lb = layer_of(a), layer_of(b)
            if la is None or lb is None:
                continue  # reported by test_every_module_has_a_layer
            if lb[0] > la[0]:
                out.append(f"{a} -> {b}: points up ({la[1]} imports {lb[1]})")
            elif lb[0] == la[0] == 2 and la[1] != lb[1] and (a, b) not in ALLOWED_ACROSS:
                out.append(f"{a} -> {b}: across stages ({la[1]} imports {lb[1]})")
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[m1, m2, ..., m1]``, or ``None``."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph_and_lines():
    return import_graph(PACKAGE)


def test_every_module_has_a_layer(graph_and_lines):
    graph, _ = graph_and_lines
    assert len(graph) > 40 and "mlx_tune.rendering" in graph and "mlx_tune.eval.bench" in graph
    assert [m for m in graph if layer_of(m) is None] == []


def test_imports_point_down_the_pipeline(graph_and_lines):
    graph, _ = graph_and_lines
    assert violations(graph) == []
    # The point of the bottom rendering module: evaluation needs nothing of training.
    eval_imports = set().union(*(t for m, t in graph.items() if m.startswith("mlx_tune.eval.")))
    assert "mlx_tune.rendering" in eval_imports
    assert not any(m.startswith("mlx_tune.training") for m in eval_imports)


def test_no_import_cycle(graph_and_lines):
    graph, _ = graph_and_lines
    assert find_cycle(graph) is None


def test_no_module_over_the_line_limit(graph_and_lines):
    _, lines = graph_and_lines
    assert {m: n for m, n in lines.items() if n > MAX_LINES} == {}


def test_openblas_decision_only_at_the_entries():
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and "reexec_with_openblas" in ast.unparse(node.func):
                callers.add(module_name(path, PACKAGE))
    assert callers == BLAS_ENTRIES


def test_the_checks_catch_what_they_forbid(tmp_path):
    """On a made-up package: an upward import, an import across stages, a cycle (inside a stage,
    through a relative import) and a TYPE_CHECKING import that does not count."""
    pkg = tmp_path / "mlx_tune"
    files = {
        "__init__.py": "",
        "records.py": "from mlx_tune.data import merge\n",
        "data/__init__.py": "",
        "data/merge.py": "from mlx_tune.training import loop\nfrom . import repos\n",
        "data/repos.py": "def f():\n    from mlx_tune.data import merge\n",
        "training/__init__.py": "",
        "training/loop.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mlx_tune.cli import main\n"
        ),
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph, lines = import_graph(pkg)
    assert graph["mlx_tune.data.merge"] == {"mlx_tune.training.loop", "mlx_tune.data.repos"}
    assert graph["mlx_tune.training.loop"] == set()
    assert violations(graph) == [
        "mlx_tune.data.merge -> mlx_tune.training.loop: across stages (data imports training)",
        "mlx_tune.records -> mlx_tune.data.merge: points up (bottom imports data)",
    ]
    assert find_cycle(graph) == ["mlx_tune.data.merge", "mlx_tune.data.repos", "mlx_tune.data.merge"]
    assert lines["mlx_tune.data.repos"] == 2
