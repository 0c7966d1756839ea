"""Whether a model's tool call is the right one: the ``call_match`` and ``executable`` metrics.

A query that needs a tool has a *target*: ``meta.path``, the file its reference answer cites, and
``meta.line`` when set. Calls run through :class:`mlx_tune.tools.Sandbox` (time limit per call).

- A grep *finds the target* when its scope (``path``, default the whole repository) contains the
  target file and its pattern matches a target line there: ``meta.line`` or a line the
  reference's own grep finds in that file (a grep-then-read record's grep finds the docstring,
  its answer cites the ``def``); any line of the file when there is neither.
- A grep is *over-broad* when, searched over the whole repository, it matches more than
  ``max(3, 3 x)`` the files the reference pattern matches or more than ``max(30, 3 x)`` its lines.
  The line bound keeps small folders honest, where every pattern matches few files. So ``.``,
  ``\\b`` or ``\\w`` never count, in any repository of more than a few dozen lines.
- A read *opens the target* when its path, normalised, is the target file and, when it asks for
  a line range and ``meta.line`` is set, the range shows that line.
- Negative queries (``meta.found`` false: the repository lacks what is asked for): a grep is right
  when it runs, is not over-broad (so at most 3 files and 30 lines, as the reference finds
  nothing) and searches for the same subject: its pattern shares a word (3+ letters, not a regex
  class or a Python keyword) with the reference pattern. A random string that finds nothing does
  not count; nor does a read.

``call_match``: a valid call (required arguments present, none the tool does not have) of the
reference's tool that finds or opens the target. ``executable``: a valid call of either tool that,
run, finds or opens the target (a read of the right file answers a grep question too). Both are
``None`` when the repository is not on disk or the target file is missing from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlx_tune import records
from mlx_tune.tools import READ_SHOW, Sandbox, norm_path, resolve_inside

if TYPE_CHECKING:
    from mlx_tune.eval.metrics import Prediction

MIN_FILES, MIN_LINES, BREADTH_FACTOR = 3, 30, 3
_NOT_SUBJECT = {
    "def", "class", "self", "import", "from", "return", "async", "await", "lambda", "none",
    "true", "false", "the", "and", "for", "with", "not", "print",
}  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """What a pattern matches over a whole repository."""

    files: int
    lines: int
    by_file: dict[str, frozenset[int]] = field(default_factory=dict)

    def broader_than(self, ref: Profile) -> bool:
        return self.files > max(MIN_FILES, BREADTH_FACTOR * ref.files) or self.lines > max(
            MIN_LINES, BREADTH_FACTOR * ref.lines
        )


NOTHING = Profile(0, 0)


def subject_words(pattern: str) -> set[str]:
    """The words a regex searches for, lower-cased: ``r"def frob_widget\\b"`` -> ``{frob_widget,
    frob, widget}`` (regex escapes, keywords and words under 3 letters dropped)."""
    text = re.sub(r"\\[A-Za-z]", " ", pattern)
    text = re.sub(r"\\(.)", r"\1", text)
    words = set()
    for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", text):
        w = w.lower()
        words.add(w)
        words.update(p for p in w.split("_") if len(p) >= 3)
    return words - _NOT_SUBJECT


class CallChecker:
    """Checks calls against their queries; remembers each (repository, pattern) search."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self._profiles: dict[tuple[str, str], Profile | None] = {}

    def profile(self, root: Path, pattern: str) -> Profile | None:
        """What ``pattern`` matches over ``root``; ``None`` if the search fails or runs over time."""
        key = (str(root), pattern)
        if key not in self._profiles:
            out = self.sandbox.execute(root, "grep", {"pattern": pattern, "path": "."})
            if not out.ok:
                self._profiles[key] = None
            else:
                by_file: dict[str, set[int]] = {}
                for m in out.matches:
                    by_file.setdefault(m.path, set()).add(m.line)
                frozen = {p: frozenset(v) for p, v in by_file.items()}
                self._profiles[key] = Profile(len(frozen), out.total_matches, frozen)
        return self._profiles[key]

    def check(self, pred: Prediction, record: dict, root: Path | None) -> tuple[bool | None, bool | None]:
        """``(call_match, executable)`` of ``pred`` for ``record`` with its calls run in ``root``."""
        ref = records.record_call(record)
        if ref is None or root is None:
            return None, None
        meta = record.get("meta") or {}
        negative = meta.get("found") is False
        target = None
        if not negative:
            target = meta.get("path") or (ref[1].get("path") if ref[0] == "read" else None)
            full = resolve_inside(root, target) if isinstance(target, str) else None
            if full is None or not full.is_file():
                return None, None
            target = norm_path(target)
        if not pred.valid or pred.tool is None or pred.arguments is None:
            return False, False
        line = meta.get("line") if isinstance(meta.get("line"), int) and meta["line"] >= 1 else None
        ref_profile = NOTHING
        if ref[0] == "grep" and isinstance(ref[1].get("pattern"), str):
            ref_profile = self.profile(root, ref[1]["pattern"]) or NOTHING
        args = pred.arguments
        if negative:
            ok = pred.tool == "grep" and self._negative_grep(root, args, ref, ref_profile)
        elif pred.tool == "read":
            ok = _read_opens(root, args, target, line)
        else:
            ok = self._grep_finds(root, args, target, line, ref_profile)
        return ok and pred.tool == ref[0], ok

    def _grep_finds(self, root: Path, args: dict, target: str, line: int | None, ref: Profile) -> bool:
        scope = resolve_inside(root, args.get("path") or ".")
        wanted = resolve_inside(root, target)
        if scope is None or wanted is None or not (scope == wanted or scope in wanted.parents):
            return False
        found = self.profile(root, args["pattern"])
        if found is None or found.broader_than(ref):
            return False
        wanted_lines = ref.by_file.get(target, frozenset()) | ({line} if line is not None else set())
        lines = found.by_file.get(target, frozenset())
        return bool(lines & wanted_lines) if wanted_lines else bool(lines)

    def _negative_grep(self, root: Path, args: dict, ref: tuple, ref_profile: Profile) -> bool:
        scope = resolve_inside(root, args.get("path") or ".")
        if scope is None or not scope.exists():
            return False
        found = self.profile(root, args["pattern"])
        if found is None or found.broader_than(ref_profile):
            return False
        return bool(subject_words(args["pattern"]) & subject_words(str(ref[1].get("pattern") or "")))


def _read_opens(root: Path, args: dict, target: str, line: int | None) -> bool:
    path = args.get("path")
    full = resolve_inside(root, path) if isinstance(path, str) else None
    if full is None or not full.is_file() or norm_path(path) != target:
        return False
    start, end = args.get("start_line"), args.get("end_line")
    if line is None or (start is None and end is None):
        return True
    start = start or 1
    end = end if end is not None else start + READ_SHOW - 1
    return start <= line <= end
