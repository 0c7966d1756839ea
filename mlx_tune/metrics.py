"""Scoring model answers against held-out records: parse, validate, execute in a sandbox, compare.

Pure Python with no mlx import, so the sandbox worker process starts fast. Nothing a model writes
is imported or executed: tool calls are parsed (JSON or ``ast``) and run by :func:`sandbox_grep` /
:func:`sandbox_read`, plain ``re`` over the repository's files, paths confined to the repository
root (symlinks included), each call in a worker process with a time limit.

Metrics (all fractions; ``None`` where no query qualifies):

- ``discrimination``: the answer calls a tool exactly when the reference does (all queries).
- ``category``: the predicted category (grep / read / direct; a call that does not parse is
  ``invalid``) equals the reference category (all queries); see the confusion matrix.
- ``call_validity``: of the answers that attempt a tool call, the share that parse in the query's
  format and whose arguments fit the tool's schema.
- ``executable``: of the queries whose reference is a tool call (and whose repository is on disk),
  the share whose answer is a valid call that finds the expected thing when run: a grep whose
  matches include the expected file ``meta.path``, a read of that file.
- ``rouge_l``: mean ROUGE-L F1 of the answer text against the reference, over direct queries;
  an answer that attempts a tool call instead scores 0 (it is not a direct answer, and its overlap
  with the reference's words means nothing).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_tune import records

PREDICTED_CATEGORIES = ("grep", "read", "direct", "invalid")
CALL_TIMEOUT_S = 5.0
MAX_FILE_BYTES = 2_000_000
MAX_SCAN_BYTES = 200_000_000
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox"}

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
        parsed = records.parse_code_call(text)
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
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return Prediction("invalid", True, problems=["tool call has no string 'name'"])
        tool, arguments = obj["name"], obj.get("arguments", {})
        if isinstance(arguments, str):  # arguments rendered as a JSON string (mlx-lm's record format)
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            return Prediction("invalid", True, tool=tool, problems=["arguments is not a JSON object"])
    if tool not in records.TOOL_CATEGORIES:
        return Prediction(
            "invalid", True, tool=tool, arguments=arguments, problems=[f"unknown tool {tool!r}"]
        )
    problems = records.validate_call_arguments(tool, arguments)
    return Prediction(tool, True, valid=not problems, tool=tool, arguments=arguments, problems=problems)


# ---------------------------------------------------------------- sandbox


def resolve_inside(root: str | os.PathLike, rel: str) -> Path | None:
    """``root/rel`` fully resolved (symlinks followed), or ``None`` if it leaves ``root``."""
    if not isinstance(rel, str) or not records.is_safe_relative_path(rel) and rel not in ("", "."):
        return None
    base = Path(root).resolve()
    target = (base / rel).resolve() if rel not in ("", ".") else base
    if target != base and base not in target.parents:
        return None
    return target


def _iter_files(root: Path, start: Path) -> Iterator[Path]:
    if start.is_file():
        yield start
        return
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            real = p.resolve()
            if real == root or root in real.parents:
                yield p


def sandbox_grep(root: str | os.PathLike, pattern: str, path: str = ".") -> list[str]:
    """Files (relative POSIX paths) under ``root/path`` with a line matching ``pattern``.

    Raises ``ValueError`` for a path outside the root or a pattern that does not compile."""
    base = Path(root).resolve()
    start = resolve_inside(base, path or ".")
    if start is None:
        raise ValueError(f"path {path!r} is outside the repository")
    if not start.exists():
        return []
    rx = re.compile(pattern)
    found, scanned = [], 0
    for p in _iter_files(base, start):
        try:
            size = p.stat().st_size
            if size > MAX_FILE_BYTES or scanned > MAX_SCAN_BYTES:
                continue
            data = p.read_bytes()
        except OSError:
            continue
        scanned += size
        if b"\0" in data[:8192]:
            continue
        text = data.decode("utf-8", errors="replace")
        if any(rx.search(line) for line in text.splitlines()):
            found.append(p.relative_to(base).as_posix())
    return found


def sandbox_read(root: str | os.PathLike, path: str) -> str:
    """The relative POSIX path of the file ``read(path)`` would show; ``ValueError`` if none."""
    base = Path(root).resolve()
    target = resolve_inside(base, path)
    if target is None:
        raise ValueError(f"path {path!r} is outside the repository")
    if not target.is_file():
        raise ValueError(f"path {path!r} is not a file")
    return Path(os.path.normpath(path)).as_posix()


def _run_call(root: str, tool: str, arguments: dict) -> tuple[str, Any]:
    try:
        if tool == "grep":
            return "ok", sandbox_grep(root, arguments["pattern"], arguments.get("path") or ".")
        return "ok", sandbox_read(root, arguments["path"])
    except (ValueError, re.error, KeyError, TypeError, RecursionError) as e:
        return "error", str(e)


def _ping() -> bool:
    return True


class Sandbox:
    """Runs tool calls in one worker process (spawned, so no mlx state is shared) with a time
    limit per call; a call that runs over (e.g. a catastrophically backtracking regex) kills the
    worker, counts as failed, and a fresh worker serves the next call."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._pool = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def run(self, root: str | os.PathLike, tool: str, arguments: dict) -> tuple[str, Any]:
        """``("ok", result)``, ``("error", message)`` or ``("timeout", message)``."""
        if self._pool is None:
            self._pool = self._ctx.Pool(1)
            self._pool.apply(_ping)  # worker start-up does not count against the first call's limit
        job = self._pool.apply_async(_run_call, (str(root), tool, arguments))
        try:
            return job.get(self.timeout_s)
        except multiprocessing.TimeoutError:
            self.close()
            return "timeout", f"{tool} ran over {self.timeout_s:g}s"


def repo_root(record: dict, base: str | os.PathLike = ".") -> Path | None:
    """The repository a record's paths resolve in: ``meta.root`` (relative to ``base``), else
    ``data/repos/<meta.repo>``; ``None`` if neither is a directory."""
    meta = record.get("meta") or {}
    for cand in (meta.get("root"), meta.get("repo") and f"data/repos/{meta['repo']}"):
        if cand and (Path(base) / cand).is_dir():
            return Path(base) / cand
    return None


def executable_ok(
    pred: Prediction, record: dict, sandbox: Sandbox, base: str | os.PathLike = "."
) -> bool | None:
    """Whether the predicted call finds what the reference call is after (see module doc);
    ``None`` when the reference is not a tool call or its repository is not on disk."""
    expected = records.record_call(record)
    root = repo_root(record, base)
    if expected is None or root is None:
        return None
    if not pred.valid or pred.tool != expected[0]:
        return False
    meta = record.get("meta") or {}
    args = pred.arguments or {}
    target = meta.get("path") or expected[1].get("path")
    if pred.tool == "grep" and target and (root / target).is_file():
        # Do the answer's matches include the expected file? Equivalent to grepping the answer's
        # whole scope, but only that one file is searched (large repositories stay fast).
        scope, wanted = resolve_inside(root, args.get("path") or "."), resolve_inside(root, target)
        if scope is None or wanted is None or not (wanted == scope or scope in wanted.parents):
            return False
        status, result = sandbox.run(root, "grep", {"pattern": args["pattern"], "path": target})
        return status == "ok" and bool(result)
    status, result = sandbox.run(root, pred.tool, args)
    if status != "ok":
        return False
    if pred.tool == "read":
        return _norm(result) == _norm(target)
    # No single expected file: the answer must find a file the reference call finds.
    status, ref = sandbox.run(root, "grep", expected[1])
    return status == "ok" and bool(set(map(_norm, ref)) & set(map(_norm, result)))


def _norm(path: str | None) -> str:
    return os.path.normpath(path).replace("\\", "/") if path else ""


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
    base: str | os.PathLike = ".",
    timeout_s: float = CALL_TIMEOUT_S,
) -> dict:
    """Score ``outputs`` (one answer text per query). Returns ``{"accuracy": {...}, "confusion":
    {expected: {predicted: n}}, "counts": {...}, "per_query": [...]}``; see the module doc."""
    if len(queries) != len(outputs):
        raise ValueError(f"{len(queries)} queries but {len(outputs)} outputs")
    confusion = {e: dict.fromkeys(PREDICTED_CATEGORIES, 0) for e in records.CATEGORIES}
    rows = []
    disc = cat = attempted = valid = 0
    exe: list[bool] = []
    rouge: list[float] = []
    with Sandbox(timeout_s) as sandbox:
        for record, text in zip(queries, outputs, strict=True):
            expected = expected_category(record)
            pred = parse_prediction(text, record_format(record))
            confusion[expected][pred.category] += 1
            disc += pred.attempted_call == (expected != "direct")
            cat += pred.category == expected
            attempted += pred.attempted_call
            valid += pred.attempted_call and pred.valid
            row: dict[str, Any] = {"expected": expected, "predicted": pred.category, "valid": pred.valid}
            if expected != "direct":
                ok = executable_ok(pred, record, sandbox, base)
                row["executable"] = ok
                if ok is not None:
                    exe.append(ok)
            else:
                reference = records.answer_of(record).get("content") or ""
                row["rouge_l"] = 0.0 if pred.attempted_call else rouge_l(finish_text(text), reference)
                rouge.append(row["rouge_l"])
            if pred.problems:
                row["problems"] = pred.problems
            rows.append(row)
    n = len(queries)
    accuracy = {
        "discrimination": disc / n if n else None,
        "category": cat / n if n else None,
        "call_validity": valid / attempted if attempted else None,
        "executable": sum(exe) / len(exe) if exe else None,
        "rouge_l": sum(rouge) / len(rouge) if rouge else None,
    }
    counts = {
        "queries": n,
        "attempted_calls": attempted,
        "executable_checked": len(exe),
        "direct": len(rouge),
    }
    return {"accuracy": accuracy, "confusion": confusion, "counts": counts, "per_query": rows}
