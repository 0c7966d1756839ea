"""Scoring model answers against held-out records: parse, check the call, aggregate with intervals.

Pure Python with no mlx import. Nothing a model writes is imported or executed: tool calls are
parsed (JSON or ``ast``) and run by :mod:`mlx_tune.tools` (plain ``re`` over the repository's
files, paths confined to the repository, each call in a worker process with a time limit). The
repository a query's calls run in is the benchmark's choice, never the data's: ``meta.repo`` is
looked up by plain name inside the configured repos folder (:func:`repo_root`).

A query *needs a tool* when its reference's first assistant turn is a call. Metrics (fractions;
``None`` where no query qualifies), each with a 95% interval in ``ci`` (:mod:`mlx_tune.eval.intervals`):

- ``balanced_discrimination``: mean of ``tool_recall`` (of the queries that need a tool, the share
  whose answer attempts a call) and ``direct_recall`` (of the direct queries, the share answered
  without one). A constant answer, always or never calling, scores exactly 0.5.
- ``macro_f1``: F1 of the two classes tool / direct, averaged.
- ``call_match``: of the queries that need a tool (repository on disk), the share whose answer is a
  valid call of the reference's tool, with the tool's required arguments and no others, that is
  as good as the reference call (:mod:`mlx_tune.eval.call_check`).
- ``executable``: the same queries; the answer's call, whichever tool, run in the sandbox, finds
  what the query is after without being over-broad (:mod:`mlx_tune.eval.call_check`).
- ``call_validity``: of the queries that need a tool, the share answered with a call that parses
  and fits the tool's schema.
- ``trajectory_success``: the agent loop's final answers (when the benchmark ran one), else None.
- ``rouge_l``: mean ROUGE-L F1 against the reference over direct queries; an answer that attempts
  a call scores 0 (it is not a direct answer).
- ``discrimination``: plain accuracy of call-or-not (dominated by the majority class);
  ``category``: the predicted category (grep / read / direct / ``invalid``) equals the reference's.

An answer whose call does not parse counts as a tool attempt for the decision metrics and fails
every call metric. Queries with ``meta.unseen_template`` true are also scored apart, under
``subsets.unseen_template``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlx_tune import layout, records
from mlx_tune.eval import call_check
from mlx_tune.eval.intervals import bootstrap, mean_interval, wilson
from mlx_tune.tools import CALL_TIMEOUT_S, Sandbox

PREDICTED_CATEGORIES = ("grep", "read", "direct", "invalid")
DEFAULT_REPOS_DIR = layout.REPOS_DIR
DEFAULT_HTML_DIR = layout.HTML_DIR
ACCURACY_KEYS = (
    "balanced_discrimination",
    "macro_f1",
    "tool_recall",
    "direct_recall",
    "call_match",
    "executable",
    "call_validity",
    "trajectory_success",
    "rouge_l",
    "discrimination",
    "category",
)
# Figures that are shares of queries get Wilson intervals; the rest a seeded bootstrap.
BOOTSTRAPPED = ("balanced_discrimination", "macro_f1", "rouge_l")
PROPORTIONS = tuple(k for k in ACCURACY_KEYS if k not in BOOTSTRAPPED)
_REPO_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass
class Prediction:
    """What one model answer amounts to."""

    category: str  # grep | read | direct | invalid
    attempted_call: bool
    valid: bool = False  # parses, and the arguments fit the tool's schema
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def record_format(record: dict) -> str:
    """``tools`` when the record carries tool schemas, else ``code`` (code mode)."""
    return "tools" if record.get("tools") else "code"


def expected_category(record: dict) -> str:
    meta = record.get("meta") or {}
    category = meta.get("category")
    return category if category in records.CATEGORIES else records.record_category(record)


def finish_text(text: str) -> str:
    """Cut an answer where it is complete: after the first ``</tool_call>``, before an end marker."""
    for marker in ("<|im_end|>", "<|endoftext|>"):
        if marker in text:
            text = text[: text.index(marker)]
    if "</tool_call>" in text:
        text = text[: text.index("</tool_call>") + len("</tool_call>")]
    return text


def parse_prediction(text: str, fmt: str = "tools") -> Prediction:
    """Parse a model answer in ``fmt`` (``tools``: Qwen2.5 ``<tool_call>`` JSON; ``code``: a Python
    block calling ``grep``/``read``). Never raises: a malformed call is ``invalid``."""
    text = finish_text(text or "")
    if fmt == "code":
        stripped = text.strip()
        attempted = "```" in text or bool(re.match(r"(grep|read)\s*\(", stripped))
        if not attempted:
            return Prediction("direct", False)
        try:
            parsed = records.parse_code_call(text)
        except (RecursionError, MemoryError, ValueError):
            parsed = None
        if parsed is None:
            return Prediction("invalid", True, problems=["not one grep/read call with literal arguments"])
        tool, arguments = parsed
    else:
        m = TOOL_CALL_RE.search(text)
        if m is None:
            return Prediction("direct", False)
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError as e:
            return Prediction("invalid", True, problems=[f"tool call is not valid JSON ({e.msg})"])
        except RecursionError:
            return Prediction("invalid", True, problems=["tool call is nested too deeply"])
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return Prediction("invalid", True, problems=["tool call has no string 'name'"])
        tool, arguments = obj["name"], obj.get("arguments", {})
        if isinstance(arguments, str):  # arguments rendered as a JSON string (mlx-lm's record format)
            try:
                arguments = json.loads(arguments)
            except (json.JSONDecodeError, RecursionError):
                arguments = None
        if not isinstance(arguments, dict):
            return Prediction("invalid", True, tool=tool, problems=["arguments is not a JSON object"])
    if tool not in records.TOOL_CATEGORIES:
        return Prediction(
            "invalid", True, tool=tool, arguments=arguments, problems=[f"unknown tool {tool!r}"]
        )
    try:
        problems = records.validate_call_arguments(tool, arguments)
    except (RecursionError, MemoryError, OverflowError):  # re.compile of a pathologically nested pattern
        problems = ["arguments: pattern nested too deeply to compile"]
    return Prediction(tool, True, valid=not problems, tool=tool, arguments=arguments, problems=problems)


# ---------------------------------------------------------------- where a query's calls run


def repo_root(
    record: dict,
    repos_dir: str | os.PathLike = DEFAULT_REPOS_DIR,
    html_dir: str | os.PathLike = DEFAULT_HTML_DIR,
    named_roots: Mapping[str, str | os.PathLike] | None = None,
) -> Path | None:
    """The folder a record's calls run in: ``html_dir`` for HTML records (``meta.source`` or
    ``meta.repo`` ``html``), else ``named_roots[meta.repo]`` when the benchmark names a folder
    for it (e.g. the domain set's repository), else ``repos_dir/<meta.repo>``; ``None`` if that
    is not a folder or ``meta.repo`` is not a plain name (a path separator or ``..`` is refused).
    ``meta.root`` is never used: a query file must not choose what the sandbox may read."""
    meta = record.get("meta") or {}
    name = meta.get("repo")
    if meta.get("source") == "html" or name == "html":
        folder = Path(html_dir)
    elif isinstance(name, str) and _REPO_NAME.fullmatch(name) and ".." not in name:
        folder = Path((named_roots or {}).get(name) or Path(repos_dir) / name)
    else:
        return None
    return folder if folder.is_dir() else None


def missing_repositories(
    queries: Sequence[dict],
    repos_dir: str | os.PathLike = DEFAULT_REPOS_DIR,
    html_dir: str | os.PathLike = DEFAULT_HTML_DIR,
    named_roots: Mapping[str, str | os.PathLike] | None = None,
) -> list[str]:
    """Names (``meta.repo``) that tool queries need but :func:`repo_root` does not find: their
    call metrics are not checked (``None``)."""
    missing = {
        str((q.get("meta") or {}).get("repo"))
        for q in queries
        if expected_category(q) != "direct" and repo_root(q, repos_dir, html_dir, named_roots) is None
    }
    return sorted(missing)


# ---------------------------------------------------------------- scoring


_ROUGE = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (the ``rouge-score`` package, with stemming)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_ROUGE.score(reference, prediction)["rougeL"].fmeasure)


def score(
    queries: Sequence[dict],
    outputs: Sequence[str],
    *,
    repos_dir: str | os.PathLike | None = None,
    html_dir: str | os.PathLike | None = None,
    named_roots: Mapping[str, str | os.PathLike] | None = None,
    base: str | os.PathLike = ".",
    timeout_s: float = CALL_TIMEOUT_S,
    trajectory_success: Sequence[bool | None] | None = None,
) -> dict:
    """Score ``outputs`` (one answer text per query). Calls run in :func:`repo_root` folders:
    ``repos_dir`` and ``html_dir``, by default ``data/repos`` and ``data/html`` under ``base``,
    and ``named_roots`` (repository name -> folder, the benchmark's choice).
    ``trajectory_success``, when the benchmark ran the agent loop, holds each query's outcome.

    Returns ``{"accuracy", "ci", "confusion", "counts", "per_query"}`` and, when some queries
    carry ``meta.unseen_template``, ``"subsets": {"unseen_template": {"n", "accuracy", "ci"}}``."""
    if len(queries) != len(outputs):
        raise ValueError(f"{len(queries)} queries but {len(outputs)} outputs")
    if trajectory_success is not None and len(trajectory_success) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(trajectory_success)} agent outcomes")
    repos_dir = Path(base) / DEFAULT_REPOS_DIR if repos_dir is None else Path(repos_dir)
    html_dir = Path(base) / DEFAULT_HTML_DIR if html_dir is None else Path(html_dir)
    rows = []
    with Sandbox(timeout_s) as sandbox:
        checker = call_check.CallChecker(sandbox)
        for i, (record, text) in enumerate(zip(queries, outputs, strict=True)):
            expected = expected_category(record)
            pred = parse_prediction(text, record_format(record))
            row: dict[str, Any] = {
                "expected": expected,
                "predicted": pred.category,
                "attempted": pred.attempted_call,
                "valid": pred.valid,
            }
            if expected != "direct":
                root = repo_root(record, repos_dir, html_dir, named_roots)
                row["call_match"], row["executable"] = checker.check(pred, record, root)
            else:
                reference = records.answer_of(record).get("content") or ""
                row["rouge_l"] = 0.0 if pred.attempted_call else rouge_l(finish_text(text), reference)
            if trajectory_success is not None:
                row["trajectory_success"] = trajectory_success[i]
            if pred.problems:
                row["problems"] = pred.problems
            rows.append(row)
    out = aggregate(rows)
    out["confusion"] = confusion(rows)
    out["per_query"] = rows
    unseen = [
        row for row, r in zip(rows, queries, strict=True) if (r.get("meta") or {}).get("unseen_template")
    ]
    if unseen:
        sub = aggregate(unseen)
        out["subsets"] = {"unseen_template": {"n": len(unseen), "accuracy": sub["accuracy"], "ci": sub["ci"]}}
    return out


def confusion(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """``{expected: {predicted: n}}`` over the categories."""
    table = {e: dict.fromkeys(PREDICTED_CATEGORIES, 0) for e in records.CATEGORIES}
    for row in rows:
        table[row["expected"]][row["predicted"]] += 1
    return table


def _share(flags: list[bool]) -> tuple[float | None, list[float] | None]:
    n = len(flags)
    return (sum(flags) / n if n else None), wilson(sum(flags), n)


def aggregate(rows: Sequence[dict]) -> dict:
    """``accuracy``, ``ci`` and ``counts`` of per-query rows (see the module doc)."""
    needs = [r["expected"] != "direct" for r in rows]
    att = [r["attempted"] for r in rows]
    tool_rows = [r for r in rows if r["expected"] != "direct"]
    checked = [r for r in tool_rows if r.get("call_match") is not None]
    flags: dict[str, list[bool]] = {
        "tool_recall": [r["attempted"] for r in tool_rows],
        "direct_recall": [not r["attempted"] for r in rows if r["expected"] == "direct"],
        "call_match": [bool(r["call_match"]) for r in checked],
        "executable": [bool(r["executable"]) for r in checked],
        "call_validity": [r["attempted"] and r["valid"] for r in tool_rows],
        "trajectory_success": [
            bool(r["trajectory_success"]) for r in rows if r.get("trajectory_success") is not None
        ],
        "discrimination": [a == n for a, n in zip(att, needs, strict=True)],
        "category": [r["predicted"] == r["expected"] for r in rows],
    }
    accuracy: dict[str, float | None] = {}
    ci: dict[str, list[float] | None] = {}
    for key in PROPORTIONS:
        accuracy[key], ci[key] = _share(flags[key])
    y, a = np.array(needs, dtype=bool), np.array(att, dtype=bool)
    accuracy["balanced_discrimination"] = _balanced(y[None, :], a[None, :])[0] if rows else None
    accuracy["macro_f1"] = _macro_f1(y[None, :], a[None, :])[0] if rows else None
    for key in ("balanced_discrimination", "macro_f1"):
        accuracy[key] = None if accuracy[key] is None or np.isnan(accuracy[key]) else float(accuracy[key])
    ci["balanced_discrimination"] = bootstrap(lambda idx: _balanced(y[idx], a[idx]), len(rows))
    ci["macro_f1"] = bootstrap(lambda idx: _macro_f1(y[idx], a[idx]), len(rows))
    rouge = [r["rouge_l"] for r in rows if r.get("rouge_l") is not None]
    accuracy["rouge_l"] = sum(rouge) / len(rouge) if rouge else None
    ci["rouge_l"] = mean_interval(rouge)
    counts = {
        "queries": len(rows),
        "need_tool": len(tool_rows),
        "direct": len(rows) - len(tool_rows),
        "attempted_calls": sum(att),
        "call_checked": len(checked),
    }
    return {
        "accuracy": {k: accuracy[k] for k in ACCURACY_KEYS},
        "ci": {k: ci[k] for k in ACCURACY_KEYS},
        "counts": counts,
    }


def _recalls(y: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        tool = (y & a).sum(axis=1) / y.sum(axis=1)
        direct = (~y & ~a).sum(axis=1) / (~y).sum(axis=1)
    return tool, direct


def _balanced(y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Row-wise mean of the recalls of the classes present (``y``: needs a tool, ``a``: attempted)."""
    tool, direct = _recalls(y, a)
    both = np.stack([tool, direct])
    present = ~np.isnan(both)
    return np.where(present.any(axis=0), np.nansum(both, axis=0) / np.maximum(present.sum(axis=0), 1), np.nan)


def _macro_f1(y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Row-wise macro-F1 over the classes present in truth or prediction (as scikit-learn does)."""
    tp, tn = (y & a).sum(axis=1), (~y & ~a).sum(axis=1)
    fp, fn = (~y & a).sum(axis=1), (y & ~a).sum(axis=1)
    d_tool, d_direct = 2 * tp + fp + fn, 2 * tn + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f_tool = np.where(d_tool > 0, 2 * tp / np.maximum(d_tool, 1), np.nan)
        f_direct = np.where(d_direct > 0, 2 * tn / np.maximum(d_direct, 1), np.nan)
    both = np.stack([f_tool, f_direct])
    present = ~np.isnan(both)
    return np.where(present.any(axis=0), np.nansum(both, axis=0) / np.maximum(present.sum(axis=0), 1), np.nan)
