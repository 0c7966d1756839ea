"""Baselines every benchmark table carries: what answers that need no model score.

- ``never-call``: always the same short direct answer, never a tool call.
- ``always-grep``: always ``grep`` with the pattern ``.`` over the whole repository.
- ``keyword``: a simple keyword program that ships with the project, documented as one. It reads
  only the question: when the question names a general concept (Python, its standard library
  by module name, HTML/CSS/web words) and no word that points at a repository (repository,
  project, file, "where is", a path, a ``snake_case`` or ``CamelCase`` identifier), it answers
  directly with a fixed sentence; else, when the question names a file path, it reads that
  file; else it greps for the question's most distinctive word (an identifier-looking word
  first, then the longest word that is not a common English or question word, the later one
  on a tie).

A model worth shipping beats all three. Constant answers score balanced discrimination 0.5 by
construction; their call metrics are near zero (:mod:`mlx_tune.eval.call_check`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable

from mlx_tune import records
from mlx_tune.eval.metrics import record_format

DIRECT_TEXT = "That is general knowledge; no repository lookup is needed."

_GENERAL = {
    "python", "html", "css", "web", "browser", "stdlib", "builtin", "built-in", "standard",
    "library", "tag", "element", "attribute", "http", "url", "unicode", "syntax", "keyword",
    "decorator", "generator", "list", "dict", "tuple", "string", "exception", "module",
}  # fmt: skip
_REPO_WORDS = {
    "repository", "repo", "project", "codebase", "file", "files", "folder", "directory",
    "here", "our", "this", "defined", "define", "defines", "implemented", "where", "which",
    "show", "line", "lines",
}  # fmt: skip
_STOP = {
    "what", "does", "do", "did", "the", "a", "an", "is", "are", "was", "of", "in", "on", "to",
    "for", "and", "or", "how", "why", "when", "who", "whom", "that", "this", "there", "these",
    "those", "with", "from", "by", "be", "it", "its", "me", "my", "you", "your", "can", "could",
    "should", "would", "will", "find", "look", "code", "function", "class", "method", "called",
    "name", "named", "used", "use", "uses", "using", "about", "some", "any", "all", "get",
    "set", "have", "has", "into", "out", "up", "than", "then", "also", "which", "where", "show",
    "line", "lines", "file", "files", "defined", "define", "repository", "project", "here",
}  # fmt: skip
_STDLIB = set(getattr(sys, "stdlib_module_names", ()))
_PATH = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:py|pyi|html|htm|css|js|md|txt|toml|yaml|yml|json|cfg))\b"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _question(record: dict) -> str:
    users = [m for m in records.prompt_messages(record) if m.get("role") == "user"]
    return (users[-1].get("content") or "") if users else ""


def _call_text(tool: str, arguments: dict, fmt: str) -> str:
    if fmt == "code":
        return records.render_code_call(tool, arguments)
    return "<tool_call>\n" + json.dumps({"name": tool, "arguments": arguments}) + "\n</tool_call>"


def never_call(record: dict) -> str:
    return DIRECT_TEXT


def always_grep(record: dict) -> str:
    return _call_text("grep", {"pattern": "."}, record_format(record))


def _looks_like_code(word: str) -> bool:
    """``snake_case`` or ``camelCase`` / ``CamelCase`` (a lower-case letter followed by a capital)."""
    return "_" in word.strip("_") or bool(re.search(r"[a-z][A-Z]", word))


def keyword_decision(question: str) -> tuple[str, dict | None]:
    """``("direct", None)``, ``("read", {"path": ...})`` or ``("grep", {"pattern": ...})``."""
    words = _IDENT.findall(question)
    lower = {w.lower() for w in words}
    path = _PATH.search(question)
    repo_hint = bool(lower & _REPO_WORDS) or path is not None or any(_looks_like_code(w) for w in words)
    general = bool(lower & _GENERAL) or any(w in _STDLIB for w in words if w.islower() and len(w) > 2)
    if general and not repo_hint:
        return "direct", None
    if path is not None and records.is_safe_relative_path(path.group(1)):
        return "read", {"path": path.group(1)}
    candidates = [w for w in words if w.lower() not in _STOP and len(w) >= 3]
    if not candidates:
        candidates = [max(words, key=len)] if words else ["def"]
    code_like = [w for w in candidates if _looks_like_code(w)]
    best = code_like[0] if code_like else max(reversed(candidates), key=len)  # a tie: the later word
    return "grep", {"pattern": re.escape(best)}


def keyword(record: dict) -> str:
    decision, arguments = keyword_decision(_question(record))
    if decision == "direct":
        return DIRECT_TEXT
    return _call_text(decision, arguments or {}, record_format(record))


BASELINES: dict[str, Callable[[dict], str]] = {
    "never-call": never_call,
    "always-grep": always_grep,
    "keyword": keyword,
}


def answers(name: str, queries: list[dict]) -> list[str]:
    """The answer texts of baseline ``name`` for ``queries``."""
    return [BASELINES[name](q) for q in queries]
