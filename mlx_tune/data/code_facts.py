"""Facts read off a window of source lines, for answers that explain code someone just read.

Everything here looks only at the lines a ``read`` call showed (plain text, ``re``), so an
answer built from it says nothing the tool output does not show: where a definition's body
ends, its module docstring, and what a window of a function does (checks, calls, raises,
returns).
"""

from __future__ import annotations

import keyword
import re

# Calls too common to say anything about what a function does.
_BORING_CALLS = frozenset(
    "len str int float bool list dict set tuple isinstance issubclass getattr setattr hasattr super "
    "print repr range enumerate zip sorted reversed min max any all iter next type id format open "
    "append extend get items keys values pop join split strip startswith endswith replace lower "
    "upper update add cast".split()
)
_MODULE_DOC = re.compile(r'\A(?:\s*#[^\n]*\n|\s*\n)*\s*[rRuU]?("""|\'\'\')(.*?)\1', re.DOTALL)


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def body_end(lines: list[str], def_line: int) -> int:
    """The last line (1-based) of the ``def``/``class`` statement starting at ``def_line``: the
    header runs to the first line ending in ``:``, the body while lines are blank or indented
    deeper than the header."""
    base = indent_of(lines[def_line - 1])
    i = end = header_end(lines, def_line)
    for j in range(i + 1, len(lines) + 1):
        text = lines[j - 1]
        if not text.strip():
            continue
        if indent_of(text) <= base:
            break
        end = j
    return min(end, len(lines))


def header_end(lines: list[str], def_line: int) -> int:
    """The line ending the header (signature) of the statement at ``def_line``: the first line
    from there whose code ends in ``:``."""
    i = def_line
    while i < len(lines) and not lines[i - 1].split("#", 1)[0].rstrip().endswith(":"):
        i += 1
    return i


def module_docstring(text: str) -> str | None:
    """The module docstring's raw text (a leading triple-quoted string), or ``None``."""
    m = _MODULE_DOC.match(text)
    return m.group(2) if m else None


def docstring_span(lines: list[str], def_line: int) -> tuple[int, int] | None:
    """First and last line of the docstring right after the header at ``def_line``."""
    j = header_end(lines, def_line) + 1
    if j > len(lines):
        return None
    m = re.match(r'\s*[rRuU]?("""|\'\'\'|"|\')', lines[j - 1])
    if not m:
        return None
    quote = m.group(1)
    rest = lines[j - 1][m.end() :]
    if quote in rest:
        return j, j
    for k in range(j + 1, len(lines) + 1):
        if quote in lines[k - 1]:
            return j, k
    return None


def code_facts(lines: list[str], start: int, end: int, def_line: int) -> dict:
    """What lines ``start``..``end`` of a function starting at ``def_line`` do: the first
    condition checked, the notable calls, the exceptions raised and the first return, each with
    its line number."""
    skip = docstring_span(lines, def_line) or (0, 0)
    facts: dict = {"checks": None, "calls": [], "raises": [], "returns": None}
    for n in range(max(start, header_end(lines, def_line) + 1), end + 1):
        if skip[0] <= n <= skip[1]:
            continue
        code = lines[n - 1].split("#", 1)[0].strip()
        if not code:
            continue
        m = re.fullmatch(r"(?:if|elif|while) (.+):", code)
        if m and facts["checks"] is None and len(m.group(1)) <= 60:
            facts["checks"] = (m.group(1), n)
        m = re.match(r"raise ([A-Za-z_][\w.]*)", code)
        if m and m.group(1) not in [r[0] for r in facts["raises"]]:
            facts["raises"].append((m.group(1), n))
        m = re.fullmatch(r"return (.+)", code)
        if m and facts["returns"] is None and len(m.group(1)) <= 50:
            facts["returns"] = (m.group(1), n)
        for call in re.findall(r"(?<![\w.])((?:self\.)?[A-Za-z_]\w*)\(", code):
            bare = call.removeprefix("self.")
            if bare in _BORING_CALLS or keyword.iskeyword(bare) or bare.startswith("_"):
                continue
            if call not in facts["calls"]:
                facts["calls"].append(call)
    facts["raises"] = [r for r in facts["raises"] if r[0] not in facts["calls"]]
    facts["calls"] = [c for c in facts["calls"] if c not in {r[0] for r in facts["raises"]}][:4]
    return facts


def join_code(items: list[str]) -> str:
    """```a```, ```a`` and ``b```, ```a``, ``b`` and ``c```."""
    quoted = [f"`{i}`" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def describe_facts(facts: dict) -> str | None:
    """One sentence from :func:`code_facts` ("it checks `x` (line 4), calls `a` and `b` and
    returns `y` (line 9)"), or ``None`` when the window shows nothing notable."""
    clauses = []
    if facts["checks"]:
        clauses.append(f"checks `{facts['checks'][0]}` (line {facts['checks'][1]})")
    if facts["calls"]:
        clauses.append(f"calls {join_code(facts['calls'])}")
    for name, n in facts["raises"][:2]:
        clauses.append(f"raises `{name}` (line {n})")
    if facts["returns"]:
        clauses.append(f"returns `{facts['returns'][0]}` (line {facts['returns'][1]})")
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
