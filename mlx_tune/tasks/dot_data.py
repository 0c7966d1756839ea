"""Training pairs for the ``dot`` task: code -> DOT and description -> DOT, from repositories and
from synthetic programs, written as a leakage-safe train/valid/test split.

A pair is a chat record (system, user, assistant) whose answer is the canonical DOT of one
:class:`~mlx_tune.tasks.dot_extract.Fact`. The user message shows the fact's code (code -> DOT)
or a description written from the same facts (description -> DOT). ``meta``
says where the answer comes from (``repo``, ``path``, ``lines``, ``files``, ``kind``).

Records from files that share a source file never straddle splits: files are joined into
components (an import graph joins a package's files) and whole components go to one split.
Same sources and seed, byte-identical files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import click

from mlx_tune import UserError, fileio
from mlx_tune.data import repos
from mlx_tune.tasks import dot_synth
from mlx_tune.tasks.dot_extract import Fact, extract_all
from mlx_tune.tasks.dot_graph import to_dot

GENERATOR = "mlx_tune.tasks.dot_data/1"
# records.py's categories are the first turn's decision; a DOT answer is a direct (tool-free) one.
CATEGORY = "direct"
# Every target is named G: a graph's name carries nothing the metrics score, and one fixed header
# is one thing less for a small model to get wrong (meta.graph keeps the fact's own name).
GRAPH_NAME = "G"
SYSTEM_PROMPT = (
    "You write Graphviz DOT. Answer with one digraph named G and nothing else: quote every node id, "
    "write one edge per line, and declare only the nodes that have no edge."
)
NOUNS = {
    "classes": "class hierarchy",
    "imports": "import graph",
    "calls": "call graph",
    "states": "state machine",
}
RULES = {
    "classes": "an edge from each class to each base class it names",
    "imports": "an edge from each module to each module of the same code it imports",
    "calls": "an edge from each function to each function or method of the module it calls",
    "states": "one node per state and an edge from each state to each state it can move to",
}
CODE_TEMPLATES = (
    "Draw the {noun} of this code as a DOT digraph, with {rule}.\n\n```python\n{code}```",
    "Here is some Python:\n\n```python\n{code}```\n\nWrite its {noun} in DOT ({rule}).",
    "Convert the {noun} of the following code to Graphviz DOT, drawing {rule}.\n\n```python\n{code}```",
)
DESCRIBE_TEMPLATES = (
    "Write a DOT digraph for the {noun} of {subject}. {facts}",
    "The {noun} of {subject}: {facts} Draw it as a DOT digraph.",
    "{facts} Give this {noun} ({subject}) as Graphviz DOT.",
)
EDGE_PHRASES = {
    "classes": ("`{a}` derives from `{b}`.", "`{a}` is a subclass of `{b}`.", "`{a}` inherits from `{b}`."),
    "imports": ("`{a}` imports `{b}`.", "Module `{a}` depends on `{b}`."),
    "calls": ("`{a}` calls `{b}`.", "`{a}` invokes `{b}`."),
    "states": ("From `{a}` the machine can go to `{b}`.", "`{a}` moves to `{b}`."),
}
LONELY = {
    "classes": "`{n}` has no base class here.",
    "imports": "`{n}` imports none of the others.",
    "calls": "`{n}` calls nothing of the module.",
    "states": "`{n}` is a state with no transition of its own.",
}
# The demo trains a tiny model for a few minutes: graphs of at most 8 nodes and 8 edges. Measured
# (task demo, tiny base, 66 iterations, 2 loaded cores, 3.2 min in all): pass@1 parse rate 0% [0-7]
# for the base, 58% [44-70] tuned, on 52 test pairs; node and edge F1 stay near 0 at this size.
DEMO_LIMITS = {"max_nodes": 8, "max_edges": 8}
DEMO_DISTS = ("click", "jinja2", "attrs", "tqdm", "jsonlines", "typer", "anyio", "rich", "mlx-lm")


def describe(fact: Fact, rng: random.Random) -> str:
    """The facts of ``fact``'s graph in sentences, in a seeded order."""
    phrases = EDGE_PHRASES[fact.kind]
    sentences = []
    for a, b in sorted(fact.graph.edges):
        text = rng.choice(phrases).format(a=a, b=b)
        label = fact.graph.labels.get((a, b))
        sentences.append(text[:-1] + f" on `{label}`." if label else text)
    linked = {n for e in fact.graph.edges for n in e}
    sentences += [LONELY[fact.kind].format(n=n) for n in sorted(fact.graph.nodes - linked)]
    rng.shuffle(sentences)
    return " ".join(sentences)


def pairs(fact: Fact, rng: random.Random, meta: dict) -> list[dict]:
    """The records of one fact: description -> DOT, and code -> DOT when it has a snippet."""
    target = to_dot(fact.graph, GRAPH_NAME)
    fields = {"noun": NOUNS[fact.kind], "subject": fact.subject}
    out = []
    ways = [("description", DESCRIBE_TEMPLATES)] + ([("code", CODE_TEMPLATES)] if fact.snippet else [])
    for direction, templates in ways:
        i = rng.randrange(len(templates))
        if direction == "code":
            text = templates[i].format(**fields, rule=RULES[fact.kind], code=fact.snippet)
        else:
            text = templates[i].format(**fields, facts=describe(fact, rng))
        record_meta = {
            **meta,
            "template": f"dot.{fact.kind}.{direction}.{i}",
            "kind": fact.kind,
            "direction": direction,
            "graph": fact.graph.name,
        }
        out.append(record(text, target, record_meta))
    return out


def record(question: str, dot: str, meta: dict) -> dict:
    """A chat record whose answer is ``dot``, with the meta every record carries."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": dot},
    ]
    base = {"category": CATEGORY, "task": "dot", "generator": GENERATOR, "style": "direct", "shape": "direct"}
    return {"messages": messages, "meta": {**base, **meta}}


def fact_meta(fact: Fact, repo: str, origin: str, prefix: str = "") -> dict:
    files = [prefix + f for f in fact.files]
    return {
        "origin": origin,
        "source": f"repo:{repo}",
        "repo": repo,
        "path": files[0],
        "lines": fact.lines,
        "files": files,
    }


def sample(facts: list[Fact], per_kind: int, rng: random.Random) -> list[Fact]:
    """At most ``per_kind`` facts of each kind, drawn with ``rng``, in their original order."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        by_kind[f.kind].append(i)
    keep = sorted(i for idx in by_kind.values() for i in rng.sample(idx, min(per_kind, len(idx))))
    return [facts[i] for i in keep]


def repo_records(name: str, files: dict[str, str], per_kind: int, seed: int, **limits) -> list[dict]:
    """Records from one repository's files (``{path: source}``), at most ``per_kind`` facts a kind
    (``limits``: ``max_nodes``/``max_edges`` of :func:`extract_all`)."""
    rng = random.Random(f"dot-data:{seed}:{name}")
    out = []
    for fact in sample(extract_all(files, **limits), per_kind, rng):
        out += pairs(fact, rng, fact_meta(fact, name, "real"))
    return out


def synthetic_records(n: int, seed: int, **limits) -> list[dict]:
    """Records from ``n`` synthetic programs (:mod:`mlx_tune.tasks.dot_synth`), one fact each."""
    rng = random.Random(f"dot-data:{seed}:synthetic")
    out = []
    for i, (kind, files) in enumerate(dot_synth.programs(n, seed)):
        facts = [f for f in extract_all(files, **limits) if f.kind == kind]
        for fact in facts[:1]:
            meta = fact_meta(fact, "synthetic", "synthetic", prefix=f"p{i:03d}/")
            meta["source"] = f"synthetic:{kind}"
            out += pairs(fact, rng, meta)
    return out


def dedupe(records: list[dict]) -> list[dict]:
    """The records without exact repeats of the same question and answer."""
    seen, out = set(), []
    for r in records:
        key = (r["messages"][1]["content"], r["messages"][2]["content"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def split(records: list[dict], seed: int, valid: float = 0.1, test: float = 0.2) -> dict[str, list[dict]]:
    """Train/valid/test with every component of records that share a file in one split.

    Components are ordered by a seeded hash and dealt to test, then valid, until each holds its
    share of the records; the rest is train."""
    parent: dict[tuple, tuple] = {}

    def find(k: tuple) -> tuple:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for r in records:
        keys = [(r["meta"]["repo"], f) for f in r["meta"]["files"]]
        for k in keys[1:]:
            a, b = find(keys[0]), find(k)
            if a != b:
                parent[max(a, b)] = min(a, b)
    comps: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        comps[find((r["meta"]["repo"], r["meta"]["files"][0]))].append(r)

    def rank(key: tuple) -> str:
        return hashlib.sha256(f"{seed}:{key[0]}:{key[1]}".encode()).hexdigest()

    out: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    wanted = {"test": test * len(records), "valid": valid * len(records)}
    for key in sorted(comps, key=rank):
        name = next((s for s in ("test", "valid") if len(out[s]) < wanted[s]), "train")
        out[name] += comps[key]
    return out


def installed_files(dist_name: str) -> tuple[str, dict[str, str]]:
    """``(version, {path: source})`` of an installed distribution's ``.py`` files (read as text,
    found through ``importlib.metadata``, never imported)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{dist_name}: no installed distribution of that name; check `pip list`") from None
    files = {}
    for rel in sorted(Path(str(f)).as_posix() for f in dist.files or []):
        parts = rel.split("/")
        if not rel.endswith(".py") or ".." in parts or any(p.endswith(".dist-info") for p in parts):
            continue
        text = repos.read_text(Path(dist.locate_file(rel)))
        if text is not None:
            files[rel] = text
    return dist.version, files


def folder_files(root: str | Path) -> dict[str, str]:
    """``{path: source}`` of the ``.py`` files under a repository folder (:func:`repos.iter_repo_files`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    files = {}
    for rel in repos.iter_repo_files(root, suffixes=(".py",)):
        text = repos.read_text(root / rel)
        if text is not None:
            files[rel] = text
    return files


def examples(
    sources: dict[str, dict[str, str]], *, seed: int = 0, synthetic: int = 40, per_kind: int = 6, **limits
) -> list[dict]:
    """The records of ``sources`` (repository name -> ``{path: source}``) and of ``synthetic``
    synthetic programs, exact repeats removed: what ``data/dot_examples/training_examples.jsonl``
    holds for ``mlx-tune data merge`` (which splits by ``meta.repo``/``meta.path``)."""
    records: list[dict] = []
    for name in sorted(sources):
        records += repo_records(name, sources[name], per_kind, seed, **limits)
    records += synthetic_records(synthetic, seed, **limits)
    records = dedupe(records)
    if not records:
        raise UserError("dot data: no graph found in the sources (no classes, imports, calls or tables)")
    return records


def build(
    sources: dict[str, dict[str, str]],
    out_dir: str | Path,
    *,
    seed: int = 0,
    synthetic: int = 40,
    per_kind: int = 6,
    valid: float = 0.1,
    test: float = 0.2,
    extra_manifest: dict | None = None,
    **limits,
) -> dict:
    """Write ``train/valid/test.jsonl`` (:func:`split`) and ``manifest.json`` into ``out_dir`` from
    :func:`examples` (``limits``: ``max_nodes``/``max_edges``); return the counts."""
    records = examples(sources, seed=seed, synthetic=synthetic, per_kind=per_kind, **limits)
    splits = split(records, seed, valid, test)
    out_dir = Path(out_dir)
    for name, recs in splits.items():
        fileio.write_jsonl(out_dir / f"{name}.jsonl", recs)
    counts = {
        "records": len(records),
        **{name: len(recs) for name, recs in splits.items()},
        "origin": dict(sorted(Counter(r["meta"]["origin"] for r in records).items())),
        "synthetic_share": round(sum(r["meta"]["origin"] == "synthetic" for r in records) / len(records), 3),
        "kind": dict(sorted(Counter(r["meta"]["kind"] for r in records).items())),
        "direction": dict(sorted(Counter(r["meta"]["direction"] for r in records).items())),
    }
    manifest = {"generator": GENERATOR, "task": "dot", "seed": seed, **counts, **(extra_manifest or {})}
    manifest["files"] = {f"{n}.jsonl": fileio.sha256_file(out_dir / f"{n}.jsonl") for n in splits}
    fileio.write_json(out_dir / "manifest.json", manifest)
    return counts


def sources_from(specs: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Repositories named on a command line: ``NAME=DIR`` or ``DIR`` (a folder, named after it), or
    the name of an installed distribution. Returns ``(sources, versions)`` (installed ones only)."""
    sources, versions = {}, {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if sep:
            sources[name] = folder_files(folder)
        elif Path(spec).is_dir():
            name = Path(spec).resolve().name
            sources[name] = folder_files(spec)
        else:
            versions[name], sources[name] = installed_files(spec)
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
            raise UserError(f"{spec}: {name!r} is not a plain repository name (give NAME=DIR)")
        if not sources[name]:
            raise UserError(f"{spec}: no Python files")
    return sources, versions


def data_command(
    specs: list[str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    synthetic: int = 40,
    per_kind: int = 6,
    valid: float = 0.1,
    test: float = 0.2,
) -> dict:
    """What ``mlx-tune data dot-examples REPO... -o DIR`` does: every pair of the repositories
    (:func:`sources_from`) and of the synthetic programs, split by source file (:func:`split`)
    into ``DIR/{train,valid,test}.jsonl`` with a ``manifest.json``, all written or none; returns
    the counts. (``data merge`` builds tools data; a DOT phase's folder comes from here.)"""
    sources, versions = sources_from(specs)
    with fileio.atomic_folder(out_dir) as stage:
        return build(
            sources,
            stage,
            seed=seed,
            synthetic=synthetic,
            per_kind=per_kind,
            valid=valid,
            test=test,
            extra_manifest={"sources": versions},
        )


def build_demo_data(
    out_dir: str | Path, seed: int = 0, dists=DEMO_DISTS, synthetic: int = 56, per_kind: int = 3
) -> dict:
    """The offline demo set: a few small graphs of each kind from installed packages plus synthetic
    programs (about 250 pairs, ~45% synthetic; ``DEMO_LIMITS``); packages missing here are skipped."""
    sources, versions = {}, {}
    for dist in dists:
        try:
            versions[dist], files = installed_files(dist)
        except UserError:
            continue
        sources[dist] = files
    return build(
        sources,
        out_dir,
        seed=seed,
        synthetic=synthetic,
        per_kind=per_kind,
        extra_manifest={"sources": versions, "limits": DEMO_LIMITS},
        **DEMO_LIMITS,
    )


@click.command("dot-examples")
@click.argument("repos", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="data/phase20", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: train/valid/test.jsonl and manifest.json (data/phase20 is the folder the "
                   "DOT recipe, mlx_tune/configs/phases/dot.yaml, trains on).")  # fmt: skip
@click.option("--synthetic", default=40, show_default=True, type=click.IntRange(0),
              help="Synthetic programs to add (each gives a code -> DOT and a description -> DOT pair).")  # fmt: skip
@click.option("--per-kind", default=6, show_default=True, type=click.IntRange(1),
              help="Most graphs of each kind (classes, imports, calls, states) per source file.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for choosing and phrasing pairs.")
def dot_examples_command(repos, out_dir, synthetic, per_kind, seed) -> None:
    """Code -> DOT and description -> DOT pairs from REPOS (NAME=DIR, a folder, or an installed
    package's name), parsed with ast (never imported), plus synthetic programs."""
    counts = data_command(list(repos), out_dir, seed=seed, synthetic=synthetic, per_kind=per_kind)
    kinds = ", ".join(f"{k} {v}" for k, v in counts["kind"].items())
    click.echo(
        f"wrote {counts['records']} pairs to {out_dir}: train {counts['train']}, valid {counts['valid']}, "
        f"test {counts['test']} ({kinds}; {counts['synthetic_share']:.0%} synthetic)"
    )
