"""HTML training examples: semantic HTML, forms, tables, navigation and accessibility.

``generate_html_examples`` writes a handful of small, valid pages into ``data/html/`` and examples
that are grounded in them exactly like the repository ones: every grep pattern matches a line of
``meta.path`` and every read path exists under ``meta.root``. Direct answers are hand-written
statements about HTML (they are training targets, so each was checked against the HTML spec and
WAI-ARIA practice).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from importlib import resources
from pathlib import Path

import yaml

from mlx_tune import UserError, fileio, records

GENERATOR = "html-examples/1"

# ---------------------------------------------------------------- the data

# The pages, images and example pools live in mlx_tune/html_data/ (package data); see examples.yaml.
_DATA = resources.files("mlx_tune") / "html_data"


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

# (pattern, path searched, file the pattern matches, symbol, questions)
GREP_POOL: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    (g["pattern"], g["search"], g["path"], g["symbol"], tuple(g["questions"])) for g in _POOLS["grep"]
]
# (path, questions)
READ_POOL: list[tuple[str, tuple[str, ...]]] = [(r["path"], tuple(r["questions"])) for r in _POOLS["read"]]
# (topic, questions, answer)
DIRECT_POOL: list[tuple[str, tuple[str, ...], str]] = [
    (d["topic"], tuple(d["questions"]), d["answer"]) for d in _POOLS["direct"]
]


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


def _root_label(html_dir: Path) -> str:
    try:
        return Path(os.path.relpath(html_dir.resolve(), Path.cwd().resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return html_dir.resolve().as_posix()


def _check_grounded(html_dir: Path, pattern: str, path: str) -> None:
    lines = (html_dir / path).read_text(encoding="utf-8").splitlines()
    if not any(re.search(pattern, line) for line in lines):
        raise AssertionError(f"grep pattern {pattern!r} matches no line of {path}")


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
) -> list[dict]:
    """The example records over pages already written to ``html_dir``, in a seeded order."""
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    _limit("--grep", n_grep, GREP_POOL)
    _limit("--read", n_read, READ_POOL)
    _limit("--direct", n_direct, DIRECT_POOL)
    html_dir = Path(html_dir)
    rng = random.Random(seed)
    base = {
        "source": "html",
        "repo": "html",
        "root": _root_label(html_dir),
        "commit": commit,
        "generator": GENERATOR,
    }
    out = []
    for pattern, search, path, symbol, questions in rng.sample(GREP_POOL, n_grep):
        _check_grounded(html_dir, pattern, path)
        meta = {
            "category": "grep",
            "origin": "real",
            **base,
            "path": path,
            "symbol": symbol,
            "kind": "element",
        }
        args = {"pattern": pattern} if search == "." else {"pattern": pattern, "path": search}
        out.append(records.tool_call_record(rng.choice(questions), "grep", args, meta, fmt))
    for path, questions in rng.sample(READ_POOL, n_read):
        if not (html_dir / path).is_file():
            raise AssertionError(f"read path {path} does not exist in {html_dir}")
        meta = {"category": "read", "origin": "real", **base, "path": path, "symbol": path, "kind": "page"}
        out.append(records.tool_call_record(rng.choice(questions), "read", {"path": path}, meta, fmt))
    for topic, questions, answer in rng.sample(DIRECT_POOL, n_direct):
        meta = {"category": "direct", "origin": "synthetic", **base, "symbol": topic, "kind": "concept"}
        out.append(records.direct_record(rng.choice(questions), answer, meta, fmt))
    rng.shuffle(out)
    return out


def generate_html_examples(
    out: Path | str = "data/html_examples/training_examples.jsonl",
    html_dir: Path | str = "data/html",
    n_grep: int = 9,
    n_read: int = 5,
    n_direct: int = 16,
    seed: int = 0,
    fmt: str = "tools",
) -> dict[str, int]:
    """Write the pages to ``html_dir`` and the examples to ``out``; return counts by category."""
    for option, n, pool in (
        ("--grep", n_grep, GREP_POOL),
        ("--read", n_read, READ_POOL),
        ("--direct", n_direct, DIRECT_POOL),
    ):
        _limit(option, n, pool)  # before writing anything
    commit = write_pages(html_dir)
    recs = build_examples(html_dir, n_grep, n_read, n_direct, seed=seed, fmt=fmt, commit=commit)
    for r in recs:
        problems = records.validate_record(r)
        if problems:
            raise AssertionError(f"generated an invalid record: {problems}")
    fileio.write_jsonl(out, recs)
    return {"grep": n_grep, "read": n_read, "direct": n_direct}
