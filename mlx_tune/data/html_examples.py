"""HTML training examples: semantic HTML, forms, tables, navigation and accessibility.

``generate_html_examples`` writes a handful of small, valid pages into ``data/html/`` and examples
grounded in them like the repository ones. By default (``style="trajectory"``) a grep or read
example is the whole exchange: the call, a ``tool`` message with the real output of
:func:`mlx_tune.tools.run_grep` / :func:`~mlx_tune.tools.run_read` on the written pages, and a
final answer that cites the file and line the output shows (hand-written around those numbers in
``html_data/examples.yaml``; a search that must find nothing answers so). ``style="call-only"``
keeps the plan's records that end with the call. Direct answers are hand-written statements
about HTML in general, not about the site (they are training targets, so each was checked
against the HTML spec and WAI-ARIA practice).
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from importlib import resources
from pathlib import Path

import yaml

from mlx_tune import UserError, fileio, layout, records, tools

GENERATOR = "html-examples/2"
STYLES = ("trajectory", "call-only")

# ---------------------------------------------------------------- the data

# The pages, images and example pools live in mlx_tune/data/html_data/ (package data); see examples.yaml.
_DATA = resources.files("mlx_tune.data") / "html_data"


def _read(rel: str) -> str:
    return (_DATA / rel).read_text(encoding="utf-8")


def _page(title: str, body: str, current: str = "", up: str = "") -> str:
    cur = {k: ' aria-current="page"' if k == current else "" for k in ("home", "pricing", "blog", "contact")}
    nav = _read("layout/nav.html").format(up=up, **{f"cur_{k}": v for k, v in cur.items()})
    return _read("layout/head.html").format(title=title) + nav + body + _read("layout/foot.html")


_POOLS = yaml.safe_load(_read("examples.yaml"))

PAGES: dict[str, str] = {
    p["path"]: _page(
        p["title"], _read(f"pages/{p['path']}"), p.get("current", ""), up="../" * p["path"].count("/")
    )
    for p in _POOLS["pages"]
}
ASSETS: dict[str, str] = {
    f"img/{f.name}": f.read_text(encoding="utf-8")
    for f in sorted((_DATA / "img").iterdir(), key=lambda f: f.name)
    if f.name.endswith(".svg")
}

# Entries of examples.yaml (see its header for the fields).
GREP_POOL: list[dict] = _POOLS["grep"]
READ_POOL: list[dict] = _POOLS["read"]
DIRECT_POOL: list[dict] = _POOLS["direct"]


# ---------------------------------------------------------------- generating


def write_pages(html_dir: Path | str) -> str:
    """Write the pages and their images into ``html_dir``; return a short content hash (the
    ``commit`` of the examples)."""
    html_dir = Path(html_dir)
    h = hashlib.sha256()
    for rel, text in sorted({**PAGES, **ASSETS}.items()):
        fileio.write_text(html_dir / rel, text)
        h.update(rel.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fill(template: str, fields: dict[str, object], where: str) -> str:
    """``template`` with its ``{name}`` fields filled; a field the output cannot fill is a bug
    in examples.yaml, reported with the entry."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = names - set(fields)
    if missing:
        raise AssertionError(f"examples.yaml {where}: no value for {sorted(missing)}")
    return template.format(**fields)


def _first(lines: list[str], pattern: str, after: int = 0, where: str = "") -> int:
    """The 1-based number of the first line after line ``after`` that matches ``pattern``."""
    for i in range(after, len(lines)):
        if re.search(pattern, lines[i]):
            return i + 1
    raise AssertionError(f"examples.yaml {where}: {pattern!r} matches no line after line {after}")


def _grep_example(html_dir: Path, entry: dict, qi: int, base: dict, fmt: str, style: str) -> dict:
    pattern, search, path = entry["pattern"], entry["search"], entry.get("path")
    where = f"grep {pattern!r}"
    args = {"pattern": pattern} if search == "." else {"pattern": pattern, "path": search}
    out = tools.run_grep(html_dir, pattern, search)
    shown = out.matches[: tools.GREP_SHOW]
    meta = {
        "category": "grep",
        **base,
        "template": f"html.grep.{_slug(entry['symbol'])}.{qi}",
        "style": style,
        "symbol": entry["symbol"],
        "kind": "element",
    }
    if path is None:
        if out.total_matches:
            raise AssertionError(f"examples.yaml {where}: should find nothing, matched {out.files}")
        meta.update(shape="negative", found=False)
        answer = entry["answer"]
    else:
        mine = [m for m in shown if m.path == path]
        if not mine:
            raise AssertionError(f"examples.yaml {where}: no match shown in {path}")
        meta.update(shape="grep-answer", found=True, path=path, defined_in=path, line=mine[0].line)
        fields: dict[str, object] = {
            "at": f"{path}, line {mine[0].line}",
            "code": mine[0].text.strip(),
            "path": path,
            "count": out.total_matches,
            "lines": ("line " if len(mine) == 1 else "lines ") + _join([str(m.line) for m in mine]),
            "places": _join([f"{m.path} line {m.line}" for m in shown]),
        }
        for k, m in enumerate(shown, 1):
            fields.update({f"line{k}": m.line, f"code{k}": m.text.strip()})
        answer = _fill(entry["answer"], fields, where)
    question = entry["questions"][qi]
    if style == "call-only":
        meta["shape"] = "call-only"
        return records.tool_call_record(question, "grep", args, meta, fmt)
    return records.trajectory_record(question, [("grep", args, out.text)], answer, meta, fmt)


def _read_example(html_dir: Path, entry: dict, qi: int, base: dict, fmt: str, style: str) -> dict:
    path = entry["path"]
    where = f"read {path}"
    _, lines = tools.read_lines(html_dir, path)
    cites = {name: _first(lines, rx, where=where) for name, rx in entry["cite"].items()}
    window = entry.get("window")
    if window:
        start = _first(lines, window[0], where=where)
        end = _first(lines, window[1], start, where=where)
        calls = [{"path": path, "start_line": start, "end_line": end}]
        shown = range(start, end + 1)
    else:
        start, end = 1, min(len(lines), tools.READ_SHOW)
        calls = [{"path": path}]
        if max(cites.values()) > end:  # read on, as the first output's last line suggests
            calls.append({"path": path, "start_line": end + 1})
            end = min(len(lines), end + tools.READ_SHOW)
        shown = range(1, end + 1)
    outside = [name for name, line in cites.items() if line not in shown]
    if outside:
        raise AssertionError(f"examples.yaml {where}: {outside} cite lines the reads do not show")
    question = entry["questions"][qi].format(start=start, end=end)
    meta = {
        "category": "read",
        **base,
        "template": f"html.read.{_slug(path + ' ' + (window[0] if window else ''))}.{qi}",
        "style": style,
        "shape": "read-answer",
        "path": path,
        "defined_in": path,
        "line": min(cites.values()),
        "symbol": path,
        "kind": "lines" if window else "page",
        "found": True,
    }
    if style == "call-only":
        meta["shape"] = "call-only"
        return records.tool_call_record(question, "read", calls[0], meta, fmt)
    steps = [("read", c, tools.execute(html_dir, "read", c).text) for c in calls]
    return records.trajectory_record(question, steps, _fill(entry["answer"], cites, where), meta, fmt)


def _limit(option: str, n: int, pool: list) -> None:
    if n > len(pool):
        raise UserError(
            f"{option}: at most {len(pool)} (there are {len(pool)} distinct HTML examples of this kind)"
        )


def build_examples(
    html_dir: Path | str,
    n_grep: int = 9,
    n_read: int = 5,
    n_direct: int = 16,
    seed: int = 0,
    fmt: str = "tools",
    commit: str = "",
    style: str = "trajectory",
) -> list[dict]:
    """The example records over pages already written to ``html_dir``, in a seeded order."""
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    if style not in STYLES:
        raise UserError(f"--style: {style!r} is not one of {', '.join(STYLES)}")
    _limit("--grep", n_grep, GREP_POOL)
    _limit("--read", n_read, READ_POOL)
    _limit("--direct", n_direct, DIRECT_POOL)
    html_dir = Path(html_dir)
    rng = random.Random(seed)
    base = {"origin": "real", "source": "html", "repo": "html", "commit": commit, "generator": GENERATOR}
    out = []
    for entry in rng.sample(GREP_POOL, n_grep):
        qi = rng.randrange(len(entry["questions"]))
        out.append(_grep_example(html_dir, entry, qi, base, fmt, style))
    for entry in rng.sample(READ_POOL, n_read):
        qi = rng.randrange(len(entry["questions"]))
        out.append(_read_example(html_dir, entry, qi, base, fmt, style))
    for entry in rng.sample(DIRECT_POOL, n_direct):
        qi = rng.randrange(len(entry["questions"]))
        meta = {
            "category": "direct",
            "origin": "synthetic",
            "source": "html",
            "generator": GENERATOR,
            "template": f"html.direct.{_slug(entry['topic'])}.{qi}",
            "style": "direct",
            "shape": "direct",
            "symbol": entry["topic"],
            "kind": "concept",
        }
        out.append(records.direct_record(entry["questions"][qi], entry["answer"], meta, fmt))
    rng.shuffle(out)
    return out


def generate_html_examples(
    out: Path | str = layout.HTML_EXAMPLES,
    html_dir: Path | str = layout.HTML_DIR,
    n_grep: int = 9,
    n_read: int = 5,
    n_direct: int = 16,
    seed: int = 0,
    fmt: str = "tools",
    style: str = "trajectory",
) -> dict[str, int]:
    """Write the pages to ``html_dir`` and the examples to ``out``; return counts by category."""
    for option, n, pool in (
        ("--grep", n_grep, GREP_POOL),
        ("--read", n_read, READ_POOL),
        ("--direct", n_direct, DIRECT_POOL),
    ):
        _limit(option, n, pool)  # before writing anything
    if style not in STYLES:
        raise UserError(f"--style: {style!r} is not one of {', '.join(STYLES)}")
    commit = write_pages(html_dir)
    recs = build_examples(html_dir, n_grep, n_read, n_direct, seed=seed, fmt=fmt, commit=commit, style=style)
    for r in recs:
        problems = records.validate_record(r)
        if problems:
            raise AssertionError(f"generated an invalid record: {problems}")
    fileio.write_jsonl(out, recs)
    return {"grep": n_grep, "read": n_read, "direct": n_direct}
