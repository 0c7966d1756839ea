"""Graphs for the ``dot`` task: the canonical DOT a target is written in, and the real DOT parser
(``pydot``, a maintained package built on ``pyparsing``) that scores what a model wrote.

A :class:`Graph` is a name, a set of node ids and a set of directed edges (with an optional edge
label, which the metrics ignore). :func:`to_dot` writes it canonically: every id quoted, the nodes
without edges declared first, then the edges, each sorted, so one set of facts always gives one
text.

:func:`parse_dot` reads an answer: the DOT inside a fenced block (```dot ... ```) or from the
first line that starts a graph, parsed in full by pydot's grammar (trailing text is an error, as
it is to Graphviz). Node ids are normalised (quotes removed, escapes undone, ports dropped) so a
quoted and an unquoted ``a`` are one node. ``node``/``edge``/``graph`` default-attribute
statements are not nodes; subgraphs count with their nodes and edges.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

MAX_ANSWER_CHARS = 20_000  # longer answers are not parsed (a runaway generation is not a graph)
_FENCE = re.compile(r"```[ \t]*(?:dot|graphviz|gv)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_START = re.compile(r"^[ \t]*(?:strict[ \t]+)?(?:di)?graph\b", re.MULTILINE | re.IGNORECASE)
_DEFAULT_STATEMENTS = {"node", "edge", "graph"}


@dataclass
class Graph:
    """A directed graph as sets: what a target is built from and what an answer is scored as."""

    name: str
    nodes: set[str] = field(default_factory=set)
    edges: set[tuple[str, str]] = field(default_factory=set)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    directed: bool = True

    def add_edge(self, src: str, dst: str, label: str | None = None) -> None:
        self.nodes.update((src, dst))
        self.edges.add((src, dst))
        if label:
            self.labels[(src, dst)] = label


def quote(text: str) -> str:
    """``text`` as a quoted DOT id."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph, name: str | None = None) -> str:
    """The canonical DOT text of ``graph`` (named ``name``, else its own name): every id quoted,
    one statement a line, the nodes without edges declared first (sorted), then the edges (sorted);
    a node on an edge is not declared again (DOT declares it with the edge)."""
    lines = [f"digraph {quote(graph.name if name is None else name)} {{"]
    linked = {n for edge in graph.edges for n in edge}
    lines += [f"  {quote(n)};" for n in sorted(graph.nodes - linked)]
    for src, dst in sorted(graph.edges):
        label = graph.labels.get((src, dst))
        attrs = f" [label={quote(label)}]" if label else ""
        lines.append(f"  {quote(src)} -> {quote(dst)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def extract_dot(text: str) -> str | None:
    """The DOT part of an answer: a fenced block's body, else the text from the first line that
    starts a graph (``digraph``, ``graph``, ``strict ...``); ``None`` if there is none."""
    m = _FENCE.search(text)
    if m and _START.search(m.group(1)):
        return m.group(1).strip()
    m = _START.search(text)
    return text[m.start() :].strip() if m else None


def norm_id(raw: str) -> str:
    """A node id as the metrics compare it: quotes and escapes removed, a ``:port`` dropped,
    whitespace collapsed."""
    raw = raw.strip()
    if raw.startswith('"'):
        end = 1
        out = []
        while end < len(raw) and raw[end] != '"':
            if raw[end] == "\\" and end + 1 < len(raw):
                end += 1
                if raw[end] not in '"\\':  # DOT keeps other escapes (\n, \l) as they are
                    out.append("\\")
            out.append(raw[end])
            end += 1
        return " ".join("".join(out).split())
    if raw.startswith("<") and raw.endswith(">"):
        return " ".join(raw[1:-1].split())
    return " ".join(raw.split(":", 1)[0].split())


def parse_dot(text: str) -> tuple[Graph | None, str | None]:
    """``(graph, None)`` if ``text`` holds exactly one DOT graph pydot parses in full, else
    ``(None, problem)`` with a one-line reason."""
    if len(text) > MAX_ANSWER_CHARS:
        return None, f"longer than {MAX_ANSWER_CHARS} characters"
    dot = extract_dot(text)
    if dot is None:
        return None, "no graph: nothing starts with digraph or graph"
    GraphParser, ParseBaseException = _parser()
    try:
        parsed = list(GraphParser.parser.parse_string(dot, parse_all=True))
    except ParseBaseException as e:
        return None, " ".join(str(e).split())
    except (RecursionError, MemoryError, ValueError, TypeError, AttributeError, KeyError) as e:
        return None, f"{type(e).__name__} while parsing"  # pydot's actions on odd input
    if len(parsed) != 1:
        return None, f"{len(parsed)} graphs (expected one)"
    dot_graph = parsed[0]
    graph = Graph(norm_id(dot_graph.get_name() or ""), directed=dot_graph.get_type() == "digraph")
    _collect(dot_graph, graph)
    return graph, None


def _parser():
    """pydot's grammar and pyparsing's error class, imported on first use (pydot builds its grammar
    with pyparsing names that newer pyparsing releases flag as deprecated: not ours to show)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydot.dot_parser import GraphParser
        from pyparsing import ParseBaseException
    return GraphParser, ParseBaseException


def _collect(dot_graph, graph: Graph) -> None:
    """Add the nodes and edges of a pydot graph or subgraph (recursively) to ``graph``."""
    for node in dot_graph.get_nodes():
        name = norm_id(node.get_name())
        if name and name not in _DEFAULT_STATEMENTS:
            graph.nodes.add(name)
    for edge in dot_graph.get_edges():
        sources = _endpoint_nodes(edge.get_source())
        targets = _endpoint_nodes(edge.get_destination())
        for s in sources:
            for t in targets:
                graph.add_edge(s, t)
    for sub in dot_graph.get_subgraphs():
        _collect(sub, graph)


def _endpoint_nodes(endpoint) -> list[str]:
    """The node ids of an edge end: an id, or an anonymous subgraph ``{a b}`` (pydot hands its
    fields over as a mapping)."""
    if isinstance(endpoint, str):
        return [norm_id(endpoint)]
    nodes = endpoint.get("nodes", {}) if hasattr(endpoint, "get") else {}
    return sorted(norm_id(n) for n in nodes if norm_id(n) not in _DEFAULT_STATEMENTS)


def f1(predicted: set, reference: set) -> float:
    """F1 of two sets; 1.0 when both are empty, 0.0 when only one is."""
    if not predicted and not reference:
        return 1.0
    hit = len(predicted & reference)
    if not hit:
        return 0.0
    precision, recall = hit / len(predicted), hit / len(reference)
    return 2 * precision * recall / (precision + recall)


def edge_set(graph: Graph, undirected: bool = False) -> set[tuple[str, str]]:
    """The edges of ``graph``; as sorted pairs when either side of a comparison is undirected."""
    if undirected:
        return {tuple(sorted(e)) for e in graph.edges}  # type: ignore[misc]
    return set(graph.edges)


def compare(predicted: Graph, reference: Graph) -> dict[str, float | bool]:
    """Node F1, edge F1 and whether both sets match exactly."""
    undirected = not (predicted.directed and reference.directed)
    p_edges, r_edges = edge_set(predicted, undirected), edge_set(reference, undirected)
    return {
        "node_f1": f1(predicted.nodes, reference.nodes),
        "edge_f1": f1(p_edges, r_edges),
        "exact": predicted.nodes == reference.nodes and p_edges == r_edges,
    }
