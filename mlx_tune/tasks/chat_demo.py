"""The chat demo's offline Q&A set, built from installed packages' source (parsed with ``ast``,
never imported):

- "real": a user's question about a documented public function or class of :data:`PACKAGES`,
  answered with its docstring's first sentence (:func:`mlx_tune.docstrings.summary`), the text
  the package's authors wrote. Written as OpenAI/ChatML ``messages``.
- "synthetic": template questions with short answers read off the code: whether a name is a class
  or a function, which of the four packages defines it (multiple choice, a letter), how many
  parameters a function takes. Written as ``prompt``/``completion``.

The two files go through :func:`mlx_tune.tasks.chat_combine.combine` like a user's would. The
packages are not those the tiny base was pretrained on (:data:`mlx_tune.models.tiny_corpus.CORPUS_PACKAGES`),
so the base has not seen these answers.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from mlx_tune import UserError, docstrings, fileio
from mlx_tune.models import tiny_corpus
from mlx_tune.tasks.chat_combine import combine

PACKAGES = ("typer", "pydantic", "rich", "anyio")
PER_PACKAGE = 60  # documented names taken per package
REAL_QUESTIONS = (
    "What does {name} do in {package}?",
    "In {package}, what is {name} for?",
    "Can you explain what {package}'s {name} does?",
    "Briefly, what is the purpose of {name} in {package}?",
)


def documented(path: Path) -> list[dict]:
    """Public top-level functions and classes of one file with a usable docstring summary."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in tree.body:
        if not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ) or node.name.startswith("_"):
            continue
        summary = docstrings.summary(ast.get_docstring(node))
        if not summary:
            continue
        params = None
        if not isinstance(node, ast.ClassDef):
            a = node.args
            params = len([p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")])
        out.append({"name": node.name, "summary": summary, "kind": "class" if params is None else "function",
                    "params": params})  # fmt: skip
    return out


def package_names(
    packages: tuple[str, ...] = PACKAGES, per_package: int = PER_PACKAGE, seed: int = 0
) -> list[dict]:
    """Up to ``per_package`` documented names of each installed package (seeded sample; names
    defined twice in a package are left out)."""
    rng = random.Random(seed)
    out = []
    for package in packages:
        found: dict[str, dict] = {}
        twice = set()
        for f in tiny_corpus.default_corpus_files((package,)):
            if f.suffix == ".py":
                for d in documented(f):
                    (twice.add if d["name"] in found else lambda _n: None)(d["name"])
                    found.setdefault(d["name"], {**d, "package": package})
        names = sorted(n for n in found if n not in twice)
        rng.shuffle(names)
        out += [found[n] for n in sorted(names[:per_package])]
    return out


def real_records(names: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"messages": [
            {"role": "user", "content": rng.choice(REAL_QUESTIONS).format(**d)},
            {"role": "assistant", "content": d["summary"]},
        ]}
        for d in names
    ]  # fmt: skip


def synthetic_records(names: list[dict], packages: tuple[str, ...], seed: int) -> list[dict]:
    rng = random.Random(seed + 1)
    letters = "ABCD"
    choices = " ".join(f"{letters[i]}) {p}" for i, p in enumerate(packages[:4]))
    out = []
    for d in names:
        out.append({"prompt": f"Is `{d['name']}` in {d['package']} a class or a function? Answer in one word.",
                    "completion": d["kind"]})  # fmt: skip
        if d["package"] in packages[:4]:
            out.append({"prompt": f"Which package defines `{d['name']}`? {choices}. Answer with the letter.",
                        "completion": letters[packages.index(d["package"])]})  # fmt: skip
        if d["params"] is not None and rng.random() < 0.5:
            out.append({"prompt": f"How many parameters does {d['package']}'s `{d['name']}` take, not counting "
                                  "self?", "completion": str(d["params"])})  # fmt: skip
    return out


def build_demo_data(out_dir: Path, seed: int = 0, packages: tuple[str, ...] = PACKAGES,
                    per_package: int = PER_PACKAGE) -> dict:  # fmt: skip
    """Write ``out_dir/sources/{real,synthetic}.jsonl`` and combine them into ``out_dir``
    (train/valid/test.jsonl, manifest.json); return the manifest."""
    names = package_names(packages, per_package, seed)
    if len(names) < 20:
        raise UserError(f"chat demo: only {len(names)} documented names found in {', '.join(packages)}")
    sources = Path(out_dir) / "sources"
    real, synthetic = sources / "real.jsonl", sources / "synthetic.jsonl"
    fileio.write_jsonl(real, real_records(names, seed))
    fileio.write_jsonl(synthetic, synthetic_records(names, packages, seed))
    return combine([(real, "real"), (synthetic, "synthetic")], Path(out_dir), seed=seed)
