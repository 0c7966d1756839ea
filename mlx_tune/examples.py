"""Repository and domain examples: grep / read / direct records grounded in real source files.

From the symbols :mod:`mlx_tune.extract` finds, build questions of three kinds:

- ``grep``: locating things (where is a class or function defined, which files use or import
  a name, every use of a decorator). The pattern is checked at generation time to match at
  least one line of ``meta.path``; an ungrounded example is never written.
- ``read``: showing one file whose path the question names; the file exists in the repo.
- ``direct``: explaining a class, function or method from its docstring and signature only.

Examples are spread round-robin across repositories and, inside a repository, across kinds;
questions come from several templates per kind; duplicates (``records.normalized_key``) are
dropped. Same inputs and seed give byte-identical output.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlx_tune import UserError, fileio, records
from mlx_tune.example_templates import DIRECT_QUESTIONS, DOC_LEADS, GREP_TEMPLATES, READ_TEMPLATES
from mlx_tune.extract import FileInfo, extract_files
from mlx_tune.repos import WalkStats, iter_repo_files, load_manifest, read_text

GENERATOR = "repo-examples/1"
DEFAULT_COUNTS = {"grep": 300, "read": 150, "direct": 100}
DOMAIN_COUNTS = {"grep": 120, "read": 60, "direct": 60}
SOURCE_SUFFIXES = (".py", ".md", ".html")
MIN_DOC_CHARS = 20
MAX_SIGNATURE_CHARS = 200


@dataclass
class Repo:
    """One repository to generate from."""

    name: str
    root: Path
    commit: str = "unknown"
    source: str = ""  # "repo:<name>" or "domain:<name>"

    def __post_init__(self) -> None:
        self.source = self.source or f"repo:{self.name}"


@dataclass
class Result:
    records: list[dict]
    requested: dict[str, int]
    by_category: Counter = field(default_factory=Counter)
    by_repo: dict[str, Counter] = field(default_factory=dict)
    files_parsed: int = 0
    skipped: Counter = field(default_factory=Counter)
    output: Path | None = None

    @property
    def shortfall(self) -> dict[str, int]:
        return {c: n - self.by_category[c] for c, n in self.requested.items() if self.by_category[c] < n}


# ---------------------------------------------------------------- finding repositories


def find_repos(repos_dir: str | os.PathLike) -> list[Repo]:
    """The repositories in ``repos_dir``: each non-hidden sub-folder; commits from the manifest
    when there is one, else from git, else ``unknown``."""
    base = Path(repos_dir)
    if not base.is_dir():
        raise UserError(f"--repos: {repos_dir}: no such directory; run `mlx-tune repos clone` or `repos add`")
    manifest = load_manifest(base)
    found = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = manifest.get(sub.name, {})
        commit = entry.get("commit") or entry.get("version") or _git_head(sub) or "unknown"
        found.append(Repo(sub.name, sub, str(commit)))
    if not found:
        raise UserError(
            f"--repos: {repos_dir}: no repositories (sub-folders) in it; "
            "run `mlx-tune repos clone`, `repos add PATH` or `repos add-installed DIST` first"
        )
    return found


def domain_repo(path: str | os.PathLike | None = None) -> Repo:
    """One repository for the domain set; default: this project's own source tree."""
    root = Path(path) if path is not None else default_domain_root()
    if not root.is_dir():
        raise UserError(f"--repo: {root}: no such directory; pass the repository to learn from")
    # The project's own tree is named after its package, not after wherever it was checked out.
    name = "mlx_tune" if path is None else root.resolve().name
    return Repo(name, root, _git_head(root) or "unknown", source=f"domain:{name}")


def default_domain_root() -> Path:
    import mlx_tune

    return Path(mlx_tune.__file__).resolve().parent.parent


def _git_head(root: Path) -> str | None:
    """HEAD's sha read from ``.git`` files (no subprocess), or ``None``."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text(encoding="utf-8").strip() or None
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except (OSError, UnicodeDecodeError):
        return None
    return None


def display_root(root: Path) -> str:
    """``root`` relative to the working directory when inside it, else absolute (POSIX)."""
    absolute = root.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return absolute.as_posix()


# ---------------------------------------------------------------- candidates


@dataclass
class _Cand:
    category: str
    kind: str
    path: str
    symbol: str | None
    fields: dict
    pattern: str | None = None
    templates: list = field(default_factory=list)
    answer: list[str] = field(default_factory=list)  # sentence parts; "{lead}" marks the docstring
    doc: str | None = None


@dataclass
class _Scan:
    repo: Repo
    files: list[FileInfo]
    other_files: list[str]
    stats: WalkStats


def _candidates(scan: _Scan) -> dict[str, dict[str, list[_Cand]]]:
    """Candidates by category, then by kind, in a deterministic order."""
    repo = scan.repo.name
    out: dict[str, dict[str, list[_Cand]]] = {c: defaultdict(list) for c in records.CATEGORIES}
    grep, read, direct = out["grep"], out["read"], out["direct"]
    ok = [f for f in scan.files if f.status == "ok"]
    defined: dict[str, str] = {}
    decorators: dict[str, list[str]] = defaultdict(list)
    imports: dict[str, list[str]] = defaultdict(list)
    users: dict[str, list[str]] = defaultdict(list)
    for f in ok:
        base = {"repo": repo, "path": f.path, "dir": _top_dir(f.path)}
        for c in f.classes:
            if _public(c.qualname):
                defined.setdefault(c.name, f.path)
                fields = {**base, "name": c.name, "qual": c.qualname}
                grep["class"].append(_Cand("grep", "class", f.path, c.qualname, fields, rf"class {c.name}\b"))
                read["symbol"].append(_Cand("read", "class", f.path, c.qualname, fields))
                doc = _doc_summary(c.docstring)
                if doc:
                    answer = _class_answer(c, f, repo)
                    direct["class"].append(
                        _Cand("direct", "class", f.path, c.qualname, fields, answer=answer, doc=doc)
                    )
        for fn in f.functions:
            if not _public(fn.qualname) or fn.name.startswith("__"):
                continue
            cls = fn.qualname.rpartition(".")[0]
            fields = {**base, "name": fn.name, "qual": fn.qualname, "cls": cls}
            grep[fn.kind].append(_Cand("grep", fn.kind, f.path, fn.qualname, fields, rf"def {fn.name}\b"))
            if fn.kind == "function":
                defined.setdefault(fn.name, f.path)
                read["symbol"].append(_Cand("read", "function", f.path, fn.qualname, fields))
            doc = _doc_summary(fn.docstring)
            if doc:
                answer = _function_answer(fn, f, repo)
                direct[fn.kind].append(
                    _Cand("direct", fn.kind, f.path, fn.qualname, fields, answer=answer, doc=doc)
                )
            for d in fn.decorators:
                head = _decorator_head(d)
                if head and f.path not in decorators[head]:
                    decorators[head].append(f.path)
        for imp in f.imports:
            if imp.level == 0 and imp.module and f.path not in imports[imp.module]:
                imports[imp.module].append(f.path)
            for n in imp.names:
                if n != "*" and "." not in n and f.path not in users[n]:
                    users[n].append(f.path)
        read["file"].append(_Cand("read", "file", f.path, None, base))
        module = _module_of(f.path)
        if module:
            read["module"].append(_Cand("read", "file", f.path, None, {**base, "module": module}))
    for path in scan.other_files:
        read["file"].append(_Cand("read", "file", path, None, {"repo": repo, "path": path}))
    for head, paths in sorted(decorators.items()):
        for i, path in enumerate(paths):
            fields = {"repo": repo, "path": path, "dir": _top_dir(path), "name": head}
            # One repo-wide question per decorator (grounded in its first file), then per-file ones.
            scope = None if i == 0 else "file"
            grep["decorator"].append(
                _Cand("grep", "decorator", path, head, {**fields, "scope": scope}, rf"@{re.escape(head)}\b")
            )
    for module, paths in sorted(imports.items()):
        pattern = rf"^\s*(?:from|import)\s+{re.escape(module)}\b"
        for i, path in enumerate(paths[:3]):
            fields = {"repo": repo, "path": path, "dir": _top_dir(path), "name": module}
            grep["import"].append(
                _Cand(
                    "grep", "import", path, module, {**fields, "scope": None if i == 0 else "file"}, pattern
                )
            )
    for name, paths in sorted(users.items()):
        users_of = [p for p in paths if p != defined.get(name)]
        if name not in defined or not users_of:
            continue  # a usage question is about this repository's own names
        for i, path in enumerate(users_of[:3]):
            fields = {"repo": repo, "path": path, "dir": _top_dir(path), "name": name}
            grep["usage"].append(
                _Cand(
                    "grep",
                    "usage",
                    path,
                    name,
                    {**fields, "scope": None if i == 0 else "file"},
                    rf"\b{name}\b",
                )
            )
    return out


def _public(qualname: str) -> bool:
    return not any(part.startswith("_") and not part.startswith("__") for part in qualname.split("."))


def _top_dir(path: str) -> str | None:
    return path.split("/", 1)[0] if "/" in path else None


def _module_of(path: str) -> str | None:
    """Dotted module name for paths that map 1:1 (no ``src/`` layout, no ``__init__``)."""
    if not path.endswith(".py") or path.startswith(("src/", "tests/", "test/")) or "/" not in path:
        return None
    stem = path[:-3]
    if stem.endswith("/__init__") or "-" in stem or "." in stem:
        return None
    return stem.replace("/", ".")


def _decorator_head(decorator: str) -> str | None:
    head = decorator.split("(", 1)[0].strip()
    return head if re.fullmatch(r"[A-Za-z_][\w.]*", head) else None


def _doc_summary(doc: str | None, limit: int = 500) -> str | None:
    """The docstring's first paragraph as one line, cut at a sentence end near ``limit``."""
    if not doc:
        return None
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    if len(para) < MIN_DOC_CHARS or para.startswith((":", "..", ">>>")):
        return None
    if len(para) > limit:
        cut = para.rfind(". ", 0, limit)
        para = para[: cut + 1] if cut > MIN_DOC_CHARS else para[:limit].rsplit(" ", 1)[0] + " ..."
    if not para.endswith((".", "!", "?", "...")):
        para += "."
    return para


def _class_answer(c, f: FileInfo, repo: str) -> list[str]:
    """Sentence parts (the docstring lead is picked later): facts read from the AST only."""
    bases = [b for b in c.bases if b not in ("object",)]
    first = f"`{c.qualname}` is a class defined in `{f.path}` of {repo}"
    first += f" and derives from {_join_code(bases)}." if bases else "."
    extra = []
    if c.decorators:
        extra.append(f"It is decorated with {_join_code(['@' + d for d in c.decorators[:3]])}.")
    methods = [
        m.rpartition(".")[2] for m in c.methods if _public(m) and not m.rpartition(".")[2].startswith("_")
    ]
    if methods:
        extra.append(f"Its public methods include {_join_code(methods[:5])}.")
    return [first, "{lead}", *extra]


def _function_answer(fn, f: FileInfo, repo: str) -> list[str]:
    what = ("an async " if fn.is_async else "a ") + ("method" if fn.kind == "method" else "function")
    if fn.kind == "method":
        first = f"`{fn.qualname}` is {what} of the `{fn.qualname.rpartition('.')[0]}` class in `{f.path}`"
    else:
        first = f"`{fn.name}` is {what} in `{f.path}` of {repo}"
    if len(fn.signature) <= MAX_SIGNATURE_CHARS:
        first += f", with the signature `{fn.signature}`."
    else:
        first += "."
    extra = (
        [f"It is decorated with {_join_code(['@' + d for d in fn.decorators[:3]])}."] if fn.decorators else []
    )
    return [first, "{lead}", *extra]


def _join_code(items: Sequence[str]) -> str:
    quoted = [f"`{i}`" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


# ---------------------------------------------------------------- rendering


class _Renderer:
    def __init__(self, repo: Repo, rng: random.Random, fmt: str):
        self.repo, self.rng, self.fmt = repo, rng, fmt
        self.root_display = display_root(repo.root)
        self._texts: dict[str, str | None] = {}

    def text(self, path: str) -> str | None:
        if path not in self._texts:
            self._texts[path] = read_text(self.repo.root / path)
        return self._texts[path]

    def meta(self, cand: _Cand) -> dict:
        return {
            "category": cand.category,
            "origin": "real",
            "source": self.repo.source,
            "repo": self.repo.name,
            "root": self.root_display,
            "commit": self.repo.commit,
            "path": cand.path,
            "symbol": cand.symbol,
            "kind": cand.kind,
            "generator": GENERATOR,
        }

    def options(self, cand: _Cand, kind: str) -> list[dict]:
        """Every way to render ``cand`` (shuffled); each a grounded record."""
        f = cand.fields
        out = []
        if cand.category == "grep":
            if not self.grounded(cand.pattern, cand.path):
                return []
            # Decorator/import/usage candidates carry a scope: the first (None) is asked repo-wide,
            # the others only about the file they name, so one question never repeats per file.
            file_only = f.get("scope") == "file"
            for question, scope in GREP_TEMPLATES[kind]:
                if (scope == "file") != file_only or (scope == "dir" and not f.get("dir")):
                    continue
                args = {"pattern": cand.pattern}
                if scope == "dir":
                    args["path"] = f["dir"]
                elif scope == "file":
                    args["path"] = cand.path
                out.append(
                    records.tool_call_record(question.format(**f), "grep", args, self.meta(cand), self.fmt)
                )
        elif cand.category == "read":
            if not self.readable(cand.path):
                return []
            for question in READ_TEMPLATES[kind]:
                out.append(
                    records.tool_call_record(
                        question.format(**f), "read", {"path": cand.path}, self.meta(cand), self.fmt
                    )
                )
        else:
            for question in DIRECT_QUESTIONS[kind]:
                lead = self.rng.choice(DOC_LEADS).format(doc=cand.doc)
                answer = " ".join(part.replace("{lead}", lead) for part in cand.answer)
                out.append(records.direct_record(question.format(**f), answer, self.meta(cand), self.fmt))
        self.rng.shuffle(out)
        return out

    def grounded(self, pattern: str, path: str) -> bool:
        text = self.text(path)
        if text is None:
            return False
        rx = re.compile(pattern)
        return any(rx.search(line) for line in text.splitlines())

    def readable(self, path: str) -> bool:
        if not records.is_safe_relative_path(path):
            return False
        full = (self.repo.root / path).resolve()
        root = self.repo.root.resolve()
        return full.is_file() and root in full.parents and self.text(path) is not None


# ---------------------------------------------------------------- generation


def generate(
    repos: Sequence[Repo],
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
) -> Result:
    """Build up to ``counts[category]`` records from ``repos``; see the module docstring."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    for c, n in counts.items():
        if c not in records.CATEGORIES or n < 0:
            raise UserError(f"--{c}: expected a count >= 0, got {n}")
    scans = _scan(repos, jobs, progress)
    result = Result(records=[], requested=counts)
    for s in scans:
        result.files_parsed += sum(f.status == "ok" for f in s.files)
        result.skipped.update(s.stats.skipped)
        result.skipped.update(f.status for f in s.files if f.status != "ok")
    rng = random.Random(seed)
    seen: set[str] = set()
    sources = []
    for s in scans:
        sources.append((s.repo, _candidates(s), _Renderer(s.repo, rng, fmt)))
    out: list[dict] = []
    for category in records.CATEGORIES:
        streams = [
            (repo.name, _stream(cands[category], renderer, rng, seen)) for repo, cands, renderer in sources
        ]
        out.extend(_round_robin(streams, counts.get(category, 0), rng))
    rng.shuffle(out)
    result.records = out
    for r in out:
        m = r["meta"]
        result.by_category[m["category"]] += 1
        result.by_repo.setdefault(m["repo"], Counter())[m["category"]] += 1
    return result


def _scan(repos: Sequence[Repo], jobs: int | None, progress: bool) -> list[_Scan]:
    pairs, layout = [], []
    for repo in repos:
        stats = WalkStats()
        files = list(iter_repo_files(repo.root, SOURCE_SUFFIXES, stats))
        py = [p for p in files if p.endswith(".py")]
        other = []
        for p in files:
            if not p.endswith(".py"):
                if read_text(repo.root / p) is None:
                    stats.skipped["not_utf8"] += 1
                else:
                    other.append(p)
        layout.append((repo, len(pairs), len(py), other, stats))
        pairs.extend((str(repo.root), p) for p in py)
    infos = extract_files(pairs, jobs=jobs, progress=progress)
    return [_Scan(repo, infos[start : start + n], other, stats) for repo, start, n, other, stats in layout]


def _stream(
    by_kind: dict[str, list[_Cand]], renderer: _Renderer, rng: random.Random, seen: set[str]
) -> Iterator[dict]:
    """Records from one repository and category, cycling kinds so each gets a fair share."""
    queues = {}
    for kind in sorted(by_kind):
        cands = list(by_kind[kind])
        rng.shuffle(cands)
        queues[kind] = iter(cands)
    while queues:
        for kind in list(queues):
            record = None
            for cand in queues[kind]:
                for option in renderer.options(cand, kind):
                    key = records.normalized_key(option)
                    if key not in seen:
                        seen.add(key)
                        record = option
                        break
                if record is not None:
                    break
            if record is None:
                del queues[kind]
            else:
                yield record


def _round_robin(streams: list[tuple[str, Iterator[dict]]], n: int, rng: random.Random) -> list[dict]:
    out: list[dict] = []
    live = list(streams)
    while live and len(out) < n:
        order = list(live)
        rng.shuffle(order)
        for item in order:
            if len(out) >= n:
                break
            record = next(item[1], None)
            if record is None:
                live.remove(item)
            else:
                out.append(record)
    return out


# ---------------------------------------------------------------- entry points


def repo_examples(
    repos_dir: str | os.PathLike,
    output: str | os.PathLike,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
) -> Result:
    """Generate examples from every repository in ``repos_dir`` and write them to ``output``."""
    result = generate(find_repos(repos_dir), counts or DEFAULT_COUNTS, seed, fmt, jobs, progress)
    return _write(result, output)


def domain_examples(
    output: str | os.PathLike,
    repo: str | os.PathLike | None = None,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
) -> Result:
    """The domain set: examples from one repository (default: this project's own tree)."""
    result = generate([domain_repo(repo)], counts or DOMAIN_COUNTS, seed, fmt, jobs, progress)
    return _write(result, output)


def _write(result: Result, output: str | os.PathLike) -> Result:
    if not result.records:
        raise UserError(
            f"{output}: no examples could be generated (files parsed: {result.files_parsed}); "
            "check that the repositories hold Python sources"
        )
    fileio.write_jsonl(output, result.records)
    result.output = Path(output)
    return result


def format_summary(result: Result) -> str:
    """A short human summary: counts by category and repository, files parsed and skipped."""
    cats = records.CATEGORIES
    lines = [f"wrote {len(result.records)} examples to {result.output}"]
    lines.append("  " + ", ".join(f"{c} {result.by_category[c]}/{result.requested.get(c, 0)}" for c in cats))
    width = max((len(n) for n in result.by_repo), default=4)
    lines.append(f"  {'repo':<{width}}  " + "  ".join(f"{c:>6}" for c in cats))
    for name in sorted(result.by_repo):
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{result.by_repo[name][c]:>6}" for c in cats))
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())) or "none"
    lines.append(f"  files parsed {result.files_parsed}; skipped: {skipped}")
    if result.shortfall:
        short = ", ".join(f"{c} {n}" for c, n in result.shortfall.items())
        lines.append(f"  shortfall (not enough distinct symbols): {short}")
    return "\n".join(lines)
