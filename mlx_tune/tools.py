"""The assistant's two tools, ``grep`` and ``read``, run on a repository in a sandbox.

One implementation serves every stage: data generation runs them to put real tool output into
trajectory records, and the benchmark runs a model's calls with them (scoring and the agent
loop). Pure Python with no mlx import, so the sandbox worker process starts fast. Nothing here
imports or executes repository code or model output: ``grep`` is plain ``re`` over file text,
``read`` shows numbered lines; every path is resolved inside the repository root (symlinks
followed and checked), and the benchmark runs each call in a worker process with a time limit.

Output formats (what a ``tool`` message holds):

- grep: one ``path:line:text`` line per matching line, files and lines in order, at most
  :data:`GREP_SHOW` lines, then ``... N more matches in M files``; ``No matches.`` when none.
- read: a header ``path (lines A-B of N)`` and the numbered lines ``  12| text``, at most
  :data:`READ_SHOW` lines from ``start_line`` (default 1), then a note saying how to read on.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GREP_SHOW = 12  # matching lines shown in a grep result
READ_SHOW = 40  # lines shown by a read without an end_line
MAX_LINE_CHARS = 160  # a longer line is cut and marked with " ..."
MAX_FILE_BYTES = 2_000_000
MAX_SCAN_BYTES = 200_000_000
MAX_MATCHES = 10_000  # grep stops collecting (but keeps counting files) past this
CALL_TIMEOUT_S = 5.0
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox"}


@dataclass(frozen=True)
class Match:
    path: str  # relative POSIX path
    line: int  # 1-based
    text: str


@dataclass
class ToolOutput:
    """The result of one call: ``status`` ``ok`` / ``error`` / ``timeout``, the text a ``tool``
    message shows, and for scoring the matches (grep) or the file shown (read)."""

    status: str
    text: str
    matches: list[Match] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # grep: files with a match; read: the file
    total_matches: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------- paths


def is_safe_relative_path(path: str) -> bool:
    """True if ``path`` is relative and cannot climb out of the directory it is resolved in."""
    if not path or path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path):
        return False
    return ".." not in re.split(r"[\\/]+", path)


def resolve_inside(root: str | os.PathLike, rel: str) -> Path | None:
    """``root/rel`` fully resolved (symlinks followed), or ``None`` if it leaves ``root``."""
    if not isinstance(rel, str) or not is_safe_relative_path(rel) and rel not in ("", "."):
        return None
    base = Path(root).resolve()
    target = (base / rel).resolve() if rel not in ("", ".") else base
    if target != base and base not in target.parents:
        return None
    return target


def norm_path(path: str | None) -> str:
    """A relative path in one spelling (``./a//b.py`` -> ``a/b.py``); empty for ``None``."""
    return os.path.normpath(path).replace("\\", "/") if path else ""


def iter_files(root: Path, start: Path) -> Iterator[Path]:
    """Files under ``start`` (or ``start`` itself), in grep's order, that resolve inside ``root``."""
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


def text_of(p: Path) -> str | None:
    """A file's text as the tools see it; ``None`` for a large, binary or unreadable file."""
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            return None
        data = p.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- grep


def grep_matches(root: str | os.PathLike, pattern: str, path: str = ".") -> tuple[list[Match], int]:
    """Matching lines under ``root/path`` (at most :data:`MAX_MATCHES`) and the total count.

    Raises ``ValueError`` for a path outside the root or a pattern that does not compile."""
    base = Path(root).resolve()
    start = resolve_inside(base, path or ".")
    if start is None:
        raise ValueError(f"path {path!r} is outside the repository")
    if not start.exists():
        raise ValueError(f"path {path!r} does not exist")
    rx = re.compile(pattern)
    found: list[Match] = []
    total = scanned = 0
    for p in iter_files(base, start):
        if scanned > MAX_SCAN_BYTES:
            break
        text = text_of(p)
        if text is None:
            continue
        scanned += len(text)
        rel = p.relative_to(base).as_posix()
        for i, line in enumerate(text.splitlines(), 1):
            if rx.search(line):
                total += 1
                if len(found) < MAX_MATCHES:
                    found.append(Match(rel, i, line))
    return found, total


def grep_files(root: str | os.PathLike, pattern: str, path: str = ".") -> list[str]:
    """Files (relative POSIX paths, in walk order) under ``root/path`` with a matching line."""
    matches, _ = grep_matches(root, pattern, path)
    return list(dict.fromkeys(m.path for m in matches))


def _cut(line: str) -> str:
    line = line.rstrip()
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ..."


def format_grep(matches: list[Match], total: int | None = None, show: int = GREP_SHOW) -> str:
    """The text of a grep result (see the module doc)."""
    total = len(matches) if total is None else total
    if not total:
        return "No matches."
    lines = [f"{m.path}:{m.line}:{_cut(m.text)}" for m in matches[:show]]
    if total > show:
        rest_files = len({m.path for m in matches[show:]})
        files = f" in {rest_files} more file{'s' if rest_files != 1 else ''}" if rest_files else ""
        lines.append(f"... {total - show} more matches{files}")
    return "\n".join(lines)


def run_grep(root: str | os.PathLike, pattern: str, path: str = ".") -> ToolOutput:
    matches, total = grep_matches(root, pattern, path or ".")
    files = list(dict.fromkeys(m.path for m in matches))
    return ToolOutput("ok", format_grep(matches, total), matches, files, total)


# ---------------------------------------------------------------- read


def read_lines(root: str | os.PathLike, path: str) -> tuple[str, list[str]]:
    """``(normalised path, lines)`` of a text file inside ``root``; ``ValueError`` otherwise."""
    target = resolve_inside(root, path)
    if target is None:
        raise ValueError(f"path {path!r} is outside the repository")
    if not target.is_file():
        raise ValueError(f"path {path!r} is not a file")
    text = text_of(target)
    if text is None:
        raise ValueError(f"path {path!r} is not a text file")
    return norm_path(path), text.splitlines()


def format_read(path: str, lines: list[str], start: int = 1, end: int | None = None) -> str:
    """The text of a read result: lines ``start``..``end`` (1-based, inclusive), numbered."""
    n = len(lines)
    start = max(1, start)
    end = min(n, end if end is not None else start + READ_SHOW - 1)
    if n == 0:
        return f"{path} (empty file)"
    if start > n:
        return f"{path} has {n} lines; start_line {start} is past the end."
    width = len(str(end))
    body = [f"{i:>{width}}| {_cut(lines[i - 1])}" for i in range(start, end + 1)]
    head = f"{path} (lines {start}-{end} of {n})"
    tail = [f"... {n - end} more lines (read with start_line={end + 1})"] if end < n else []
    return "\n".join([head, *body, *tail])


def run_read(
    root: str | os.PathLike, path: str, start_line: int | None = None, end_line: int | None = None
) -> ToolOutput:
    rel, lines = read_lines(root, path)
    text = format_read(rel, lines, start_line or 1, end_line)
    return ToolOutput("ok", text, files=[rel])


# ---------------------------------------------------------------- dispatch and sandbox


def execute(root: str | os.PathLike, tool: str, arguments: dict[str, Any]) -> ToolOutput:
    """Run one call in this process; a bad call is an ``error`` output, never an exception."""
    try:
        if tool == "grep":
            return run_grep(root, arguments["pattern"], arguments.get("path") or ".")
        if tool == "read":
            return run_read(root, arguments["path"], arguments.get("start_line"), arguments.get("end_line"))
        return ToolOutput("error", f"Error: unknown tool {tool!r}")
    except (ValueError, re.error, KeyError, TypeError, RecursionError, OverflowError) as e:
        return ToolOutput("error", f"Error: {e}")


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

    def execute(self, root: str | os.PathLike, tool: str, arguments: dict) -> ToolOutput:
        """:func:`execute` in the worker, within the time limit (``timeout`` status past it)."""
        if self._pool is None:
            self._pool = self._ctx.Pool(1)
            self._pool.apply(_ping)  # worker start-up does not count against the first call's limit
        job = self._pool.apply_async(execute, (str(root), tool, arguments))
        try:
            return job.get(self.timeout_s)
        except multiprocessing.TimeoutError:
            self.close()
            return ToolOutput("timeout", f"Error: {tool} ran over {self.timeout_s:g}s")
