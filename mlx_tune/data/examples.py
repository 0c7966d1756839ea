"""Repository and domain examples: grep and read trajectories grounded in real tool output.

For every repository the symbols :mod:`mlx_tune.data.extract` finds become questions
(:mod:`mlx_tune.data.questions`): where the code is that does what a docstring describes, how a
function works (grep, then read the lines), which files import or use a name, a name defined
in several files, a name or capability the repository lacks, what a file or a line range holds.
Each example runs the real ``grep``/``read`` (:mod:`mlx_tune.tools`, through an in-memory
:class:`~mlx_tune.data.repo_index.RepoIndex` with byte-identical output) and, in the default
``trajectory`` style, records the call, the tool's output and an answer built only from that
output. The ``call-only`` style keeps the plan's one-call records (same questions, no output,
no answer). Direct records come from the standard library (:mod:`mlx_tune.data.stdlib_direct`),
never from the repository. Examples are spread round-robin across repositories and, inside a
repository, across kinds; duplicates (``records.normalized_key``) are dropped. Same inputs and
seed give byte-identical output.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlx_tune import UserError, fileio, records
from mlx_tune.data.data_quality import is_literal_pattern
from mlx_tune.data.extract import FileInfo, extract_files
from mlx_tune.data.questions import Draft, Planner
from mlx_tune.data.repo_index import RepoIndex
from mlx_tune.data.repos import WalkStats, iter_repo_files, load_manifest

GENERATOR = "repo-examples/2"
# About a third of each phase answers directly: the decision (search or answer) is the skill, and a
# set where ~80% of queries need a tool teaches "always call" (and leaves ~20 direct test queries, too
# few for an interval that can separate a model from the keyword baseline).
DEFAULT_COUNTS = {"grep": 300, "read": 150, "direct": 220}
DOMAIN_COUNTS = {"grep": 120, "read": 60, "direct": 100}
STYLES = ("trajectory", "call-only")
# The mix of kinds within a repository's grep records (a kind repeats to weigh more); kinds that
# run out of candidates drop out and the rest fill in.
GREP_CYCLE = (
    "behaviour", "explain", "named", "negative", "behaviour", "usage", "explain", "import",
    "behaviour", "ambiguous", "explain", "decorator", "behaviour", "negative", "named", "explain",
    "usage", "behaviour", "ambiguous", "explain", "negative", "import",
)  # fmt: skip
READ_CYCLE = ("line", "file")
LITERAL_SHARE = 0.25  # most literal `class X`/`def X` searches per repository (issue 10: <= 30%)


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
    by_shape: Counter = field(default_factory=Counter)
    files_parsed: int = 0
    skipped: Counter = field(default_factory=Counter)
    output: Path | None = None

    @property
    def shortfall(self) -> dict[str, int]:
        return {c: n - self.by_category[c] for c, n in self.requested.items() if self.by_category[c] < n}

    def count(self, recs: list[dict]) -> None:
        for r in recs:
            m = r["meta"]
            self.by_category[m["category"]] += 1
            self.by_shape[m.get("shape", "?")] += 1
            # Direct records (about Python, not a repository) share one row.
            self.by_repo.setdefault(m.get("repo") or "(python)", Counter())[m["category"]] += 1


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
    """One repository for the domain set; default: this project's library source (the
    ``mlx_tune`` package folder, so not its tests), named ``mlx_tune``."""
    if path is None:
        root = default_domain_root() / "mlx_tune"
        return Repo("mlx_tune", root, _git_head(root.parent) or "unknown", source="domain:mlx_tune")
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"--repo: {root}: no such directory; pass the repository to learn from")
    name = root.resolve().name
    return Repo(name, root, _git_head(root) or "unknown", source=f"domain:{name}")


def default_domain_root() -> Path:
    """This project's checkout (the folder holding the ``mlx_tune`` package)."""
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


# ---------------------------------------------------------------- generation


def generate(
    repos: Sequence[Repo],
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
    style: str = "trajectory",
) -> Result:
    """Up to ``counts["grep"]`` and ``counts["read"]`` records from ``repos`` (the direct count
    is the entry points' business); see the module docstring."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    if style not in STYLES:
        raise UserError(f"--style: {style!r} is not one of {', '.join(STYLES)}")
    for c, n in counts.items():
        if c not in records.CATEGORIES or n < 0:
            raise UserError(f"--{c}: expected a count >= 0, got {n}")
    scans = _scan(repos, jobs, progress)
    result = Result(records=[], requested={c: counts.get(c, 0) for c in records.TOOL_CATEGORIES})
    for _, files, stats in scans:
        result.files_parsed += sum(f.status == "ok" for f in files)
        result.skipped.update(stats.skipped)
        result.skipped.update(f.status for f in files if f.status != "ok")
    rng = random.Random(seed)
    masks: set[str] = set()
    seen: set[str] = set()
    planners = [
        (repo, Planner(repo.name, RepoIndex(repo.root), files, rng, masks)) for repo, files, _ in scans
    ]
    out: list[dict] = []
    for category, cycle in (("grep", GREP_CYCLE), ("read", READ_CYCLE)):
        streams = [_stream(repo, planner, cycle, style, fmt, seen) for repo, planner in planners]
        out.extend(_round_robin(streams, counts.get(category, 0), rng))
    rng.shuffle(out)
    result.records = out
    result.count(out)
    return result


def _scan(
    repos: Sequence[Repo], jobs: int | None, progress: bool
) -> list[tuple[Repo, list[FileInfo], WalkStats]]:
    pairs, layout = [], []
    for repo in repos:
        stats = WalkStats()
        py = [p for p in iter_repo_files(repo.root, (".py",), stats)]
        layout.append((repo, len(pairs), len(py), stats))
        pairs.extend((str(repo.root), p) for p in py)
    infos = extract_files(pairs, jobs=jobs, progress=progress)
    return [(repo, infos[start : start + n], stats) for repo, start, n, stats in layout]


def _stream(
    repo: Repo, planner: Planner, cycle: Sequence[str], style: str, fmt: str, seen: set[str]
) -> Iterator[dict]:
    """Records of one repository, taking kinds in ``cycle`` order until every kind runs out.
    A draft whose search is a literal ``class X``/``def X`` is skipped while such searches would
    pass :data:`LITERAL_SHARE` of the repository's greps (small repositories run out of the
    other kinds first)."""
    pools = {kind: iter(items) for kind, items in planner.pools().items() if kind in cycle}
    live = set(pools)
    greps = literal = 0
    while live:
        for kind in cycle:
            if kind not in live:
                continue
            record = None
            for item in pools[kind]:
                draft = planner.draft(kind, item)
                if draft is None:
                    continue
                steps = draft.steps if style == "trajectory" else draft.steps[:1]
                patterns = [args["pattern"] for tool, args, _ in steps if tool == "grep"]
                lit = sum(map(is_literal_pattern, patterns))
                if lit and greps >= 8 and literal + lit > LITERAL_SHARE * (greps + len(patterns)):
                    continue
                record = to_record(draft, repo, style, fmt)
                key = records.normalized_key(record)
                if key not in seen:
                    seen.add(key)
                    greps, literal = greps + len(patterns), literal + lit
                    break
                record = None
            if record is None:
                live.discard(kind)
            else:
                yield record


def to_record(draft: Draft, repo: Repo, style: str = "trajectory", fmt: str = "tools") -> dict:
    """The training record of a draft: the whole trajectory, or only its first call."""
    meta = {
        "category": draft.steps[0][0],
        "origin": "real",
        "source": repo.source,
        "generator": GENERATOR,
        "template": draft.template,
        "style": style,
        "shape": draft.shape if style == "trajectory" else "call-only",
        "repo": repo.name,
        "commit": repo.commit,
        **{k: v for k, v in draft.meta.items() if v is not None},
    }
    if style == "call-only":
        tool, args, _ = draft.steps[0]
        return records.tool_call_record(draft.question, tool, args, meta, fmt)
    return records.trajectory_record(draft.question, draft.steps, draft.answer, meta, fmt)


def _round_robin(streams: list[Iterator[dict]], n: int, rng: random.Random) -> list[dict]:
    out: list[dict] = []
    live = list(streams)
    while live and len(out) < n:
        order = list(live)
        rng.shuffle(order)
        for item in order:
            if len(out) >= n:
                break
            record = next(item, None)
            if record is None:
                live.remove(item)
            else:
                out.append(record)
    return out


def add_direct(result: Result, n: int, seed: int, fmt: str, pool: str) -> Result:
    """Add ``n`` direct records about Python and its standard library
    (:func:`mlx_tune.data.stdlib_direct.build_direct`, question pool ``pool``) and shuffle."""
    result.requested["direct"] = n
    if n > 0:
        from mlx_tune.data import stdlib_direct

        direct = stdlib_direct.build_direct(n, seed=seed, fmt=fmt, pool=pool)
        result.count(direct)
        result.records = result.records + direct
        random.Random(seed).shuffle(result.records)
    return result


# ---------------------------------------------------------------- entry points


def repo_examples(
    repos_dir: str | os.PathLike,
    output: str | os.PathLike,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
    style: str = "trajectory",
) -> Result:
    """Generate examples from every repository in ``repos_dir`` and write them to ``output``."""
    counts = dict(counts or DEFAULT_COUNTS)
    result = generate(find_repos(repos_dir), counts, seed, fmt, jobs, progress, style)
    return _write(add_direct(result, counts.get("direct", 0), seed, fmt, "repo"), output)


def domain_examples(
    output: str | os.PathLike,
    repo: str | os.PathLike | None = None,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "tools",
    jobs: int | None = None,
    progress: bool = True,
    style: str = "trajectory",
) -> Result:
    """The domain set: examples from one repository (default: this project's library source)."""
    counts = dict(counts or DOMAIN_COUNTS)
    result = generate([domain_repo(repo)], counts, seed, fmt, jobs, progress, style)
    return _write(add_direct(result, counts.get("direct", 0), seed, fmt, "domain"), output)


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
    """A short human summary: counts by category, shape and repository, files parsed and skipped."""
    cats = records.CATEGORIES
    lines = [f"wrote {len(result.records)} examples to {result.output}"]
    lines.append("  " + ", ".join(f"{c} {result.by_category[c]}/{result.requested.get(c, 0)}" for c in cats))
    lines.append("  shapes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.by_shape.items())))
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
