"""Graph facts from Python source with ``ast`` only (repository code is never imported or run).

Four kinds, each a :class:`Fact` (a graph, the files it came from and the trimmed code that
shows it):

- ``classes``: the class hierarchy of a module, an edge from each class to each base it names
  (classes in source order, a few at a time so a graph stays small);
- ``imports``: the import graph of a package, an edge from a module to each module of the same
  source tree it imports (relative imports resolved), or one module's imports when the
  package is too big for one graph;
- ``calls``: the call graph of a function, an edge from a function to each function or method of
  the same module it calls (``f()``, ``self.m()``, ``cls.m()``, ``C.m()``, ``C().m()``), followed transitively
  when the result stays small, else the function and its direct callees;
- ``states``: a state machine written as a transition table, a dict from a state to its next
  state(s) (``{State.IDLE: [State.RUNNING], ...}``, or ``{(state, event): next}`` for labelled
  edges); the members of an ``Enum`` the table uses are states too, reachable or not.

The snippet a code -> DOT question shows holds exactly the lines the graph comes from (class
headers, import statements, ``def`` lines and the lines that call, a transition table), so the
answer is grounded in what the question shows. Facts whose snippet or graph is too big are left
out (``MAX_NODES``, ``MAX_EDGES``, ``MAX_CODE_CHARS``).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from mlx_tune.tasks.dot_graph import Graph

KINDS = ("classes", "imports", "calls", "states")
MAX_NODES = 12
MAX_EDGES = 16
MAX_CODE_CHARS = 1400
CLASSES_PER_GRAPH = 6


@dataclass
class Fact:
    """One graph and where it comes from: ``files`` (relative paths, the first is the main one),
    ``lines`` (first and last line used in the main file) and ``snippet`` (the code shown)."""

    kind: str
    graph: Graph
    subject: str
    files: list[str]
    lines: list[int]
    snippet: str
    extra: dict = field(default_factory=dict)


def module_name(path: str) -> str:
    """``click/types.py`` -> ``click.types``; ``pkg/__init__.py`` -> ``pkg`` (a leading ``src/``
    is dropped)."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[0] == "src" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def parse(source: str) -> ast.Module | None:
    """The module's tree, or ``None`` for text that is not Python ``ast`` can read."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def extract_all(files: dict[str, str], max_nodes: int = MAX_NODES, max_edges: int = MAX_EDGES) -> list[Fact]:
    """Every fact of every kind from ``files`` (relative path -> source) whose graph has at most
    ``max_nodes`` nodes and ``max_edges`` edges, in a stable order."""
    trees = {p: t for p, s in sorted(files.items()) if p.endswith(".py") and (t := parse(s)) is not None}
    facts: list[Fact] = []
    for path, tree in trees.items():
        lines = files[path].splitlines()
        facts += class_facts(path, tree, lines, max_nodes)
        facts += call_facts(path, tree, lines, max_nodes)
        facts += state_facts(path, tree, files[path])
    facts += import_facts(trees, files, max_nodes)
    return [f for f in facts if _small(f, max_nodes, max_edges)]


def _small(fact: Fact, max_nodes: int, max_edges: int) -> bool:
    """A graph worth a question: two edges at least, and small enough to write out."""
    g = fact.graph
    return len(g.edges) >= 2 and len(g.nodes) <= max_nodes and len(g.edges) <= max_edges


def _clip(text: str) -> str:
    """The snippet, or ``""`` when it is too long to show (the fact then has no code question)."""
    text = text.strip("\n") + "\n"
    return text if len(text) <= MAX_CODE_CHARS else ""


def _show(lines: list[str], numbers: list[int]) -> str:
    """The given 1-based lines in order, with ``...`` where lines are left out, dedented."""
    out: list[str] = []
    last = None
    for n in sorted(set(numbers)):
        if last is not None and n > last + 1:
            indent = len(lines[n - 1]) - len(lines[n - 1].lstrip())
            out.append(" " * indent + "...")
        out.append(lines[n - 1].rstrip())
        last = n
    return textwrap.dedent("\n".join(out))


def _header_lines(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> list[int]:
    """The line numbers of a ``class``/``def`` statement's header: up to the line that ends with
    its colon (comments at the top of the body are not part of it)."""
    last = max(node.lineno, node.body[0].lineno - 1)
    for n in range(node.lineno, last + 1):
        if lines[n - 1].split("#", 1)[0].rstrip().endswith(":"):
            return list(range(node.lineno, n + 1))
    return list(range(node.lineno, last + 1))


def dotted(node: ast.AST) -> str | None:
    """``a.b.C`` for a name or attribute chain (``Generic[T]`` -> ``Generic``), else ``None``."""
    if isinstance(node, ast.Subscript):
        return dotted(node.value)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


# ---------------------------------------------------------------- classes


def class_facts(path: str, tree: ast.Module, lines: list[str], max_nodes: int = MAX_NODES) -> list[Fact]:
    """The hierarchy of a module's top-level classes, a few classes per graph."""
    module = module_name(path)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    chunks: list[list[ast.ClassDef]] = []
    for cls in classes:
        if (
            chunks
            and len(chunks[-1]) < CLASSES_PER_GRAPH
            and len(_class_graph(chunks[-1] + [cls]).nodes) <= max_nodes
        ):
            chunks[-1].append(cls)
        else:
            chunks.append([cls])
    facts = []
    for i, chunk in enumerate(chunks):
        graph = _class_graph(chunk)
        graph.name = module if len(chunks) == 1 else f"{module} ({i + 1})"
        numbers = [n for cls in chunk for n in _header_lines(cls, lines)]
        body = "\n".join(_show(lines, _header_lines(cls, lines)) + "\n    ..." for cls in chunk)
        names = ", ".join(c.name for c in chunk)
        subject = f"module {module}" if len(chunks) == 1 else f"classes {names} of module {module}"
        span = [min(numbers), max(numbers)]
        facts.append(Fact("classes", graph, subject, [path], span, _clip(f"# {path}\n{body}")))
    return facts


def _class_graph(classes: list[ast.ClassDef]) -> Graph:
    graph = Graph("")
    for cls in classes:
        graph.nodes.add(cls.name)
        for base in cls.bases:
            name = dotted(base)
            if name and name != "object":
                graph.add_edge(cls.name, name)
    return graph


# ---------------------------------------------------------------- calls


def call_facts(path: str, tree: ast.Module, lines: list[str], max_nodes: int = MAX_NODES) -> list[Fact]:
    """The call graph of each function no other function of the module calls (a root)."""
    module = module_name(path)
    funcs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    owner: dict[str, ast.ClassDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    funcs[f"{node.name}.{item.name}"] = item
                    owner[f"{node.name}.{item.name}"] = node
    calls: dict[str, dict[str, list[int]]] = {}
    for name, fn in funcs.items():
        cls = owner.get(name)
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                target = _callee(node.func, cls.name if cls else None, funcs)
                if target and target != name:
                    calls.setdefault(name, {}).setdefault(target, []).append(node.lineno)
    called = {t for targets in calls.values() for t in targets}
    facts = []
    for root in sorted(calls, key=lambda n: funcs[n].lineno):
        if root in called:
            continue
        reach = _reachable(root, calls)
        shown = [n for n in reach if n in calls] if len(reach) <= max_nodes else [root]
        graph = Graph(f"{module}.{root}")
        graph.nodes.add(root)
        numbers: list[int] = []
        for caller in shown:
            for callee, at in calls[caller].items():
                graph.add_edge(caller, callee)
                numbers += at
            numbers += _header_lines(funcs[caller], lines)
            if caller in owner:
                numbers += _header_lines(owner[caller], lines)
        span = [min(numbers), max(numbers)]
        snippet = _clip(f"# {path}\n{_show(lines, numbers)}")
        facts.append(Fact("calls", graph, f"function {root} in module {module}", [path], span, snippet))
    return facts


def _callee(func: ast.AST, cls: str | None, funcs: dict) -> str | None:
    if isinstance(func, ast.Name):
        return func.id if func.id in funcs else None
    if not isinstance(func, ast.Attribute):
        return None
    holder = func.value
    if isinstance(holder, ast.Call):  # C(...).m(): a method of a fresh instance of C
        holder = holder.func
    if not isinstance(holder, ast.Name):
        return None
    owner = cls if holder.id in ("self", "cls") and cls else holder.id
    name = f"{owner}.{func.attr}"
    return name if name in funcs else None


def _reachable(root: str, calls: dict[str, dict[str, list[int]]]) -> list[str]:
    seen, todo = [root], [root]
    while todo:
        for callee in sorted(calls.get(todo.pop(0), {})):
            if callee not in seen:
                seen.append(callee)
                todo.append(callee)
    return seen


# ---------------------------------------------------------------- states


def state_facts(path: str, tree: ast.Module, source: str) -> list[Fact]:
    """Transition tables at module or class level (see the module doc)."""
    module = module_name(path)
    enums = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and any((dotted(b) or "").endswith(("Enum", "Flag")) for b in n.bases)
    }
    holders = [tree] + [n for n in tree.body if isinstance(n, ast.ClassDef)]
    facts = []
    for holder in holders:
        for stmt in holder.body:
            target, value = _assignment(stmt)
            if target is None or not isinstance(value, ast.Dict):
                continue
            table = _transitions(value)
            if table is None:
                continue
            graph = Graph(f"{module}.{target}")
            first = value.keys[0].elts[0] if isinstance(value.keys[0], ast.Tuple) else value.keys[0]
            prefix = dotted(first.value) or "" if isinstance(first, ast.Attribute) else ""
            cut = len(prefix) + 1 if prefix else 0  # State.IDLE -> IDLE when all share State
            for src, dst, label in table:
                graph.add_edge(src[cut:], dst[cut:], label)
            if not _linked(table):
                continue
            shown = [ast.get_source_segment(source, stmt) or ""]
            if prefix in enums:
                enum = enums[prefix]
                graph.nodes.update(_members(enum))
                shown.insert(0, ast.get_source_segment(source, enum) or "")
            stmt_lines = [stmt.lineno, stmt.end_lineno or stmt.lineno]
            snippet = _clip(f"# {path}\n" + "\n\n".join(textwrap.dedent(s) for s in shown))
            facts.append(
                Fact("states", graph, f"table {target} in module {module}", [path], stmt_lines, snippet)
            )
    return facts


def _assignment(stmt: ast.stmt) -> tuple[str | None, ast.AST | None]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id, stmt.value
    return None, None


def _ref(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
        return node.value
    return dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None


def _transitions(table: ast.Dict) -> list[tuple[str, str, str | None]] | None:
    """``(state, next, label)`` triples if every entry of ``table`` reads as a transition: states
    all of one sort (string constants, bare names, or attributes of one holder such as an Enum)."""
    if len(table.keys) < 2:
        return None
    entries: dict[tuple, list] = {}  # a repeated key keeps its last value, as Python's dict does
    sorts = set()
    for key, value in zip(table.keys, table.values, strict=True):
        label = None
        if isinstance(key, ast.Tuple) and len(key.elts) == 2:
            key, label = key.elts[0], _ref(key.elts[1])
            if label is None:
                return None
        items = value.elts if isinstance(value, (ast.List, ast.Tuple, ast.Set)) else [value]
        for node in [key, *items]:
            sorts.add(_sort(node))
        src, targets = _ref(key), [_ref(v) for v in items]
        if src is None or any(t is None for t in targets):
            return None
        entries[(src, label)] = [(src, t, label) for t in targets if t is not None]
    out = [edge for edges in entries.values() for edge in edges]
    return out if len(sorts) == 1 and None not in sorts else None


def _sort(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return "str"
    if isinstance(node, ast.Name):
        return "name"
    if isinstance(node, ast.Attribute):
        return f"attr:{dotted(node.value)}"
    return None


def _linked(table: list[tuple[str, str, str | None]]) -> bool:
    """A transition table, not any mapping of names: some next state is itself a state with
    transitions."""
    sources = {src for src, _, _ in table}
    return any(dst in sources and dst != src for src, dst, _ in table)


def _members(enum: ast.ClassDef) -> list[str]:
    return [
        t.id
        for stmt in enum.body
        if isinstance(stmt, ast.Assign)
        for t in stmt.targets
        if isinstance(t, ast.Name) and not t.id.startswith("_")
    ]


# ---------------------------------------------------------------- imports


def import_facts(
    trees: dict[str, ast.Module], files: dict[str, str], max_nodes: int = MAX_NODES
) -> list[Fact]:
    """The import graph of each package (a folder with ``__init__.py``) over the source tree's
    own modules; per module when a package is too big for one graph."""
    modules = {module_name(p): p for p in trees}
    imports: dict[str, dict[str, list[ast.stmt]]] = {}
    for name, path in modules.items():
        for stmt in ast.walk(trees[path]):
            for target in _import_targets(stmt, name, path.endswith("__init__.py"), modules):
                if target != name:
                    imports.setdefault(name, {}).setdefault(target, []).append(stmt)
    packages = sorted({m for m, p in modules.items() if p.endswith("__init__.py")})
    facts = []
    for package in packages:
        members = [m for m in modules if m == package or m.rpartition(".")[0] == package]
        graph = Graph(package)
        graph.nodes.update(members)
        for m in members:
            for target in imports.get(m, {}):
                graph.add_edge(m, target)
        if len(graph.nodes) <= max_nodes:
            facts.append(_import_fact(graph, sorted(members), imports, modules, files, f"package {package}"))
            continue
        for m in sorted(members):
            if len(imports.get(m, {})) >= 2:
                star = Graph(f"{m} imports")
                for target in imports[m]:
                    star.add_edge(m, target)
                facts.append(_import_fact(star, [m], imports, modules, files, f"module {m}"))
    return facts


def _import_fact(graph, shown, imports, modules, files, subject) -> Fact:
    parts = []
    for m in shown:
        stmts = sorted(
            {id(s): s for ss in imports.get(m, {}).values() for s in ss}.values(), key=lambda s: s.lineno
        )
        segments = [textwrap.dedent(ast.get_source_segment(files[modules[m]], s) or "") for s in stmts]
        parts.append("\n".join([f"# {modules[m]}", *segments]))
    main = imports.get(shown[0], {})
    numbers = [s.lineno for ss in main.values() for s in ss] or [1]
    paths = [modules[m] for m in shown]
    return Fact("imports", graph, subject, paths, [min(numbers), max(numbers)], _clip("\n".join(parts)))


def _import_targets(stmt: ast.AST, module: str, is_package: bool, modules: dict) -> list[str]:
    """The modules of the source tree an ``import`` statement names (the longest known prefix)."""
    if isinstance(stmt, ast.Import):
        return [t for a in stmt.names if (t := _known_prefix(a.name, modules))]
    if not isinstance(stmt, ast.ImportFrom):
        return []
    base = stmt.module or ""
    if stmt.level:
        package = module if is_package else module.rpartition(".")[0]
        parts = package.split(".") if package else []
        if stmt.level - 1 > len(parts):
            return []
        parts = parts[: len(parts) - (stmt.level - 1)]
        base = ".".join(parts + ([stmt.module] if stmt.module else []))
    out = []
    for alias in stmt.names:
        full = f"{base}.{alias.name}" if base else alias.name
        target = full if full in modules else _known_prefix(base, modules)
        if target and target not in out:
            out.append(target)
    return out


def _known_prefix(name: str, modules: dict) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None
