"""The ``dot`` task: generate a Graphviz DOT graph from code or from a description of it.

The task's contract (see ``mlx_tune/tasks/__init__.py``): :data:`NAME`, :data:`SUMMARY`,
:func:`score`, :func:`baselines` and :func:`build_demo_data`.

Metrics, each with a 95% interval (:mod:`mlx_tune.eval.intervals`):

- ``parse``: pass@1 parse rate, the share of answers that hold exactly one graph the real DOT
  parser (``pydot``) reads in full (:func:`mlx_tune.tasks.dot_graph.parse_dot`); Wilson interval;
- ``node_f1`` / ``edge_f1``: F1 of the answer's node and edge sets against the reference graph
  (ids normalised; an answer that does not parse scores 0); bootstrap interval of the mean;
- ``exact``: the share of answers whose node and edge sets equal the reference's; Wilson;
- ``memorised``: the share of answers identical (whitespace aside) to a training target, when
  the training records are given (``score(..., train=records)``; otherwise ``None``); Wilson.
  ``counts.reference_in_train`` says how many references are training targets themselves (a
  right answer to those reads as memorised too).

Per-query rows and subsets by direction (``code``/``description``), origin and kind come with them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from mlx_tune import UserError, records
from mlx_tune.eval.intervals import mean_interval, wilson
from mlx_tune.tasks import dot_data
from mlx_tune.tasks.dot_extract import module_name
from mlx_tune.tasks.dot_graph import Graph, compare, extract_dot, parse_dot, to_dot

NAME = "dot"
SUMMARY = "Graphviz DOT graphs (class, import and call graphs, state machines) from code or a description"
METRICS = ("parse", "node_f1", "edge_f1", "exact", "memorised")
SUBSET_FIELDS = ("direction", "origin", "kind")
EMPTY_GRAPH = "digraph G {}\n"
DIRECTIONS = ("code", "description")
# The benchmark table and chart (mlx_tune.tasks.columns): "metric/direction" figures come from the
# direction subsets, so code -> DOT and description -> DOT are reported apart.
COLUMNS = (
    ("parse", "parse"),
    ("node F1", "node_f1"),
    ("edge F1", "edge_f1"),
    ("exact", "exact"),
    ("memorised", "memorised"),
    *(
        (f"{label} {d[:5]}", f"{key}/{d}")
        for d in DIRECTIONS
        for label, key in (("parse", "parse"), ("edge F1", "edge_f1"))
    ),
)
CHART_KEYS = ("parse", "node_f1", "edge_f1", "exact", "edge_f1/code", "edge_f1/description")
# Tokens to generate per answer: enough for the largest targets (12 nodes, 16 edges; ~250 tokens).
MAX_TOKENS = 320


def reference(query: dict, index: int = 0) -> Graph:
    """The graph of a query's reference answer (its last message); a query whose reference does
    not parse is a ``UserError`` naming it."""
    text = records.answer_of(query).get("content") or ""
    graph, problem = parse_dot(text)
    if graph is None:
        raise UserError(f"query {index}: the reference answer is not a DOT graph ({problem})")
    return graph


def normal_text(text: str) -> str:
    """An answer as the memorisation check compares it: its DOT part, whitespace collapsed."""
    return " ".join((extract_dot(text) or text).split())


def targets(train: list[dict] | list[str]) -> list[str]:
    """The answer texts of training records (strings are taken as they are)."""
    return [t if isinstance(t, str) else records.answer_of(t).get("content") or "" for t in train]


def score(queries: list[dict], texts: list[str], *, train: list[dict] | list[str] | None = None) -> dict:
    """Score one answer text per query (see the module doc). ``train``: the training records
    (or their target texts) for the memorisation share."""
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries but {len(texts)} outputs")
    seen = {normal_text(t) for t in targets(train)} if train is not None else None
    rows = []
    for i, (query, text) in enumerate(zip(queries, texts, strict=True)):
        ref = reference(query, i)
        graph, problem = parse_dot(text)
        meta = query.get("meta") or {}
        row: dict = {field: meta.get(field) for field in SUBSET_FIELDS}
        row["parsed"] = graph is not None
        row.update(compare(graph, ref) if graph else {"node_f1": 0.0, "edge_f1": 0.0, "exact": False})
        row["memorised"] = None if seen is None else normal_text(text) in seen
        if seen is not None:  # a right answer that is also a training target reads as memorised
            row["reference_in_train"] = normal_text(records.answer_of(query).get("content") or "") in seen
        if problem:
            row["problem"] = problem
        rows.append(row)
    out = aggregate(rows)
    out["rows"] = out["per_query"] = rows
    subsets = {}
    for field in SUBSET_FIELDS:
        for value in sorted({r[field] for r in rows if r[field] is not None}):
            part = [r for r in rows if r[field] == value]
            sub = aggregate(part)
            subsets[f"{field}:{value}"] = {"n": len(part), "accuracy": sub["accuracy"], "ci": sub["ci"]}
    out["subsets"] = subsets
    for d in DIRECTIONS:
        for key in METRICS:
            if f"direction:{d}" in subsets and key != "memorised":
                out["accuracy"][f"{key}/{d}"] = subsets[f"direction:{d}"]["accuracy"][key]
                out["ci"][f"{key}/{d}"] = subsets[f"direction:{d}"]["ci"][key]
    return out


def aggregate(rows: list[dict]) -> dict:
    """``accuracy``, ``ci`` and ``counts`` of per-query rows."""
    accuracy: dict = {}
    ci: dict = {}
    for key in ("parse", "exact"):
        flags = [bool(r["parsed" if key == "parse" else key]) for r in rows]
        accuracy[key] = sum(flags) / len(flags) if flags else None
        ci[key] = wilson(sum(flags), len(flags))
    for key in ("node_f1", "edge_f1"):
        values = [float(r[key]) for r in rows]
        accuracy[key] = sum(values) / len(values) if values else None
        ci[key] = mean_interval(values)
    memo = [bool(r["memorised"]) for r in rows if r["memorised"] is not None]
    accuracy["memorised"] = sum(memo) / len(memo) if memo else None
    ci["memorised"] = wilson(sum(memo), len(memo))
    counts = {"queries": len(rows), "parsed": sum(r["parsed"] for r in rows), "memorised": sum(memo)}
    counts["reference_in_train"] = sum(bool(r.get("reference_in_train")) for r in rows)
    return {
        "accuracy": {k: accuracy[k] for k in METRICS},
        "ci": {k: ci[k] for k in METRICS},
        "counts": counts,
    }


# ---------------------------------------------------------------- baselines

_BACKTICKED = re.compile(r"`([^`\n]+)`")
_DEFINED = re.compile(r"^\s*(?:class|def|async\s+def)\s+([A-Za-z_]\w*)", re.MULTILINE)
_PATH = re.compile(r"^# (\S+\.py)$", re.MULTILINE)


def question(query: dict) -> str:
    return next(
        (m.get("content") or "" for m in records.prompt_messages(query) if m.get("role") == "user"), ""
    )


def echo_names(query: dict) -> str:
    """The names the question mentions (backticked names, defined classes and functions, module
    paths) as isolated nodes."""
    text = question(query)
    graph = Graph(dot_data.GRAPH_NAME)
    graph.nodes.update(_BACKTICKED.findall(text))
    graph.nodes.update(_DEFINED.findall(text))
    graph.nodes.update(module_name(p) for p in _PATH.findall(text))
    return to_dot(graph)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w+", text.lower()))


def nearest(queries: list[dict], train: list[dict]) -> list[str]:
    """For each query, the target of the training question sharing the most words (Jaccard)."""
    if not train:
        return [EMPTY_GRAPH] * len(queries)
    pool = [(_words(question(t)), records.answer_of(t).get("content") or "") for t in train]
    out = []
    for q in queries:
        words = _words(question(q))
        best = max(
            range(len(pool)), key=lambda i: (len(words & pool[i][0]) / max(1, len(words | pool[i][0])), -i)
        )
        out.append(pool[best][1])
    return out


def baselines(queries: list[dict], train: list[dict]) -> dict[str, list[str]]:
    """Trivial answers to score beside a model: an empty graph, the most frequent training target,
    the question's names as isolated nodes, and the target of the nearest training question."""
    counts = Counter(targets(train))
    frequent = min(counts, key=lambda t: (-counts[t], t)) if counts else EMPTY_GRAPH
    return {
        "empty": [EMPTY_GRAPH] * len(queries),
        "most_frequent": [frequent] * len(queries),
        "echo_names": [echo_names(q) for q in queries],
        "nearest": nearest(queries, train),
    }


def build_demo_data(out_dir: Path, seed: int = 0) -> dict:
    """The offline demo set from installed packages and synthetic programs (:mod:`dot_data`)."""
    return dot_data.build_demo_data(out_dir, seed)
