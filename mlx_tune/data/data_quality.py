"""Quality measures of a set of training records (what ``mlx-tune data stats`` reports).

Pure functions over a list of records, so generators and tests can measure the same thing:

- :func:`multi_turn_share`: records holding a ``tool`` message (trajectories).
- :func:`template_count`: distinct question templates (``meta.template``).
- :func:`near_duplicate_share`: records whose question, with names, paths and digits masked
  (:func:`mask_question`), equals another record's.
- :func:`literal_pattern_share`: grep calls whose pattern is only a keyword and a name
  (``class X\\b``, ``def X\\(``): what a template writes, not what an engineer searching for a
  behaviour would type.
- :func:`name_in_question_share`: grep/read questions that already contain the searched name.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from mlx_tune import records

# Suffixes that make a token a file path (besides containing "/").
FILE_SUFFIXES = (
    "py", "pyi", "pyx", "html", "htm", "css", "js", "ts", "json", "jsonl", "yaml", "yml", "toml",
    "cfg", "ini", "md", "rst", "txt", "sh", "c", "h", "cpp", "rs", "go", "java", "xml", "csv",
)  # fmt: skip
_SUFFIX = re.compile(r"\w\.(?:" + "|".join(FILE_SUFFIXES) + r")$", re.IGNORECASE)
_LEAD = "\"'([{<"
_TRAIL = "\"'.,;:!?)]}>"
# A literal pattern, as regex source text: an optional anchor, `class`/`def`/`async def`, one name,
# then at most a word boundary, an opening parenthesis or a colon.
_ANCHORS = ("^", r"^\s*", r"^\s+", r"\s*", r"\s+", r"\b")
_SEPARATORS = (" ", " +", r"\s", r"\s+", r"\s*")
_ENDINGS = (r"\b", r"\(", r"\s*\(", "(", ":", r"\s*:", r"[(:]", r"[:(]", r"\s*[(:]", "$", r"\b\(")


def _alternatives(options) -> str:
    return "(?:" + "|".join(re.escape(o) for o in options) + ")"


_LITERAL = re.compile(
    f"{_alternatives(_ANCHORS)}?(?:async{_alternatives(_SEPARATORS)})?(?:class|def)"
    rf"{_alternatives(_SEPARATORS)}[A-Za-z_]\w*{_alternatives(_ENDINGS)}?"
)


def question_of(record: dict) -> str | None:
    """The record's first user message, or ``None``."""
    for m in record.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return None


def _meta(record: dict) -> dict:
    meta = record.get("meta")
    return meta if isinstance(meta, dict) else {}


def symbol_parts(record: dict) -> list[str]:
    """The dotted parts of ``meta.symbol`` (longest first), e.g. ``["method", "Class"]``."""
    symbol = _meta(record).get("symbol")
    if not isinstance(symbol, str):
        return []
    return sorted({p for p in symbol.split(".") if p}, key=lambda p: (-len(p), p))


def _is_identifier_like(core: str) -> bool:
    if "_" in core and re.search(r"[A-Za-z]", core):
        return True
    # an inner capital (fooBar, FooBar, HTMLParser) in a word that also has lower-case letters
    if re.fullmatch(r"[A-Za-z]\w*", core) and re.search(r".[A-Z]", core) and re.search(r"[a-z]", core):
        return True
    # dotted names and calls: os.path.join, parse(), obj.method() (whose ")" was stripped)
    return bool(re.fullmatch(r"[A-Za-z_]\w+(?:\.[A-Za-z_]\w+)+\(?|[A-Za-z_]\w*\(", core))


def _is_path_like(core: str) -> bool:
    return "/" in core or bool(_SUFFIX.search(core))


def mask_question(text: str, symbol_names: list[str] = ()) -> str:
    """``text`` with names, paths and digits masked, lower-cased, whitespace collapsed.

    Each of ``symbol_names`` (as a word, any case) and every backticked span become ``NAME``;
    tokens that look like code identifiers (contain ``_``, have an inner capital, are dotted or
    called like ``f()``) become ``NAME``; tokens with ``/`` or a file suffix become ``PATH``;
    runs of digits become ``0``.
    """
    text = re.sub(r"`[^`]*`", "NAME", text)
    for name in symbol_names:
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "NAME", text, flags=re.IGNORECASE)
    out = []
    for token in text.split():
        body = token.lstrip(_LEAD)
        lead = token[: len(token) - len(body)]
        core = body.rstrip(_TRAIL)
        trail = body[len(core) :]
        if core in ("NAME", "PATH"):
            masked = core
        elif core and _is_path_like(core):
            masked = "PATH"
        elif core and _is_identifier_like(core):
            masked = "NAME"
            trail = trail[1:] if core.endswith("(") and trail.startswith(")") else trail
        else:  # lower-case, keeping the placeholders of masked names inside (@NAME, NAME's)
            parts = re.split(r"(?<![A-Za-z])(NAME|PATH)(?![A-Za-z])", core)
            masked = "".join(p if p in ("NAME", "PATH") else re.sub(r"\d+", "0", p.lower()) for p in parts)
        out.append(lead.lower() + masked + re.sub(r"\d+", "0", trail.lower()))
    return " ".join(out)


def masked_question(record: dict) -> str | None:
    """The record's user question masked by :func:`mask_question`, or ``None`` if it has none."""
    question = question_of(record)
    return None if question is None else mask_question(question, symbol_parts(record))


def near_duplicate_share(recs: list[dict]) -> float:
    """Share of records (with a user question) whose masked question equals another's."""
    keys = [k for k in map(masked_question, recs) if k is not None]
    if not keys:
        return 0.0
    counts = Counter(keys)
    return sum(1 for k in keys if counts[k] > 1) / len(keys)


def is_literal_pattern(pattern: str) -> bool:
    """True for a grep pattern that is only ``class``/``def`` and one name (``def X\\(``)."""
    return bool(_LITERAL.fullmatch(pattern.strip()))


def grep_patterns(recs: list[dict]) -> list[str]:
    """Every grep call's pattern, over every assistant turn of every record."""
    out = []
    for r in recs:
        for tool, args in records.record_calls(r):
            if tool == "grep" and isinstance(args.get("pattern"), str):
                out.append(args["pattern"])
    return out


def literal_pattern_share(recs: list[dict]) -> float:
    """Share of grep calls whose pattern is a literal ``class X``/``def X`` (0 with no greps)."""
    patterns = grep_patterns(recs)
    return sum(map(is_literal_pattern, patterns)) / len(patterns) if patterns else 0.0


def name_in_question(record: dict) -> bool | None:
    """Whether the question contains the searched name (``meta.symbol``'s last dotted part, any
    case, as a word); ``None`` for a record without a symbol or a question."""
    symbol = _meta(record).get("symbol")
    question = question_of(record)
    if not isinstance(symbol, str) or not symbol.strip(".") or question is None:
        return None
    name = symbol.strip(".").split(".")[-1]
    return bool(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", question, re.IGNORECASE))


def name_in_question_share(recs: list[dict]) -> float:
    """Share of grep/read records with a ``meta.symbol`` whose question contains that name."""
    found = [name_in_question(r) for r in recs if records.record_category(r) in records.TOOL_CATEGORIES]
    found = [f for f in found if f is not None]
    return sum(found) / len(found) if found else 0.0


def multi_turn_share(recs: list[dict], tool_only: bool = False) -> float:
    """Share of records that hold a ``tool`` message (trajectories); with ``tool_only``, among
    the grep/read records only."""
    if tool_only:
        recs = [r for r in recs if records.record_category(r) in records.TOOL_CATEGORIES]
    return sum(map(records.is_trajectory, recs)) / len(recs) if recs else 0.0


def template_count(recs: list[dict]) -> int:
    """Number of distinct ``meta.template`` ids."""
    return len({str(t) for t in (_meta(r).get("template") for r in recs) if t})


def meta_counts(recs: list[dict], key: str) -> dict[str, int]:
    """Records by ``meta[key]`` (``unknown`` where missing), sorted by name."""
    return dict(sorted(Counter(str(_meta(r).get(key) or "unknown") for r in recs).items()))


def balance(recs: list[dict]) -> dict[str, float]:
    """Tool-call and direct shares of the records (by each record's first-turn decision)."""
    n = len(recs)
    tool = sum(records.record_category(r) in records.TOOL_CATEGORIES for r in recs)
    return {
        "tool_share": round(tool / n, 4) if n else 0.0,
        "direct_share": round((n - tool) / n, 4) if n else 0.0,
    }


def quality(recs: list[dict]) -> dict[str, Any]:
    """Every measure above, JSON-ready (shares rounded to 4 places)."""
    return {
        "multi_turn_share": round(multi_turn_share(recs), 4),
        "tool_trajectory_share": round(multi_turn_share(recs, tool_only=True), 4),
        "templates": template_count(recs),
        "near_duplicate_share": round(near_duplicate_share(recs), 4),
        "grep_calls": len(grep_patterns(recs)),
        "literal_pattern_share": round(literal_pattern_share(recs), 4),
        "name_in_question_share": round(name_in_question_share(recs), 4),
        "shape": meta_counts(recs, "shape"),
        "style": meta_counts(recs, "style"),
    }
