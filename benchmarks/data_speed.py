#!/usr/bin/env python3
"""Speed of the repository-examples stage against a bare ``ast.parse`` loop.

Times (a) reading and ``ast.parse``-ing every ``.py`` file of the repositories in one
process, and (b) the whole stage for the repositories' grep and read records: walk, AST
extraction over a process pool, the in-memory index, every grep and read the trajectories run,
answers, and writing the JSONL (``examples.repo_examples`` with the default 300 grep / 150
read; direct records come from the standard library, not from these files, so none here).
Prints files/s for both and, as the last line, ``ratio: N.NN`` (stage wall time / bare
parse wall time; the target is <= 2). Each side is run ``--repeat`` times; the best counts.

Without ``--repos`` the repositories are built from installed distributions (click, typer,
pydantic, attrs, jinja2, tqdm, rich, httpx2, anyio, ... whichever are installed) in a
temporary folder with ``mlx_tune.data.repos.add_installed``, so it runs offline.

    python benchmarks/data_speed.py [--repos data/repos] [--jobs N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import sys
import tempfile
import time
from pathlib import Path

from mlx_tune.data import examples, repos

DEFAULT_DISTS = [
    "click",
    "typer",
    "pydantic",
    "attrs",
    "jinja2",
    "tqdm",
    "rich",
    "httpx2",
    "anyio",
    "pygments",
]


def build_installed(dest: Path) -> list[str]:
    present = []
    for name in DEFAULT_DISTS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        present.append(name)
    repos.add_installed(present, dest)
    return present


def python_files(repos_dir: Path) -> list[Path]:
    files = []
    for repo in examples.find_repos(repos_dir):
        files.extend(repo.root / rel for rel in repos.iter_repo_files(repo.root, (".py",)))
    return files


def bare_parse(files: list[Path]) -> int:
    parsed = 0
    for path in files:
        try:
            ast.parse(path.read_bytes().decode("utf-8"), filename=str(path))
        except (SyntaxError, ValueError):  # UnicodeDecodeError is a ValueError
            continue
        parsed += 1
    return parsed


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repos", type=Path, default=None, help="folder of repositories (default: installed)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the fastest counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repos_dir = args.repos
        if repos_dir is None:
            repos_dir = Path(tmp) / "repos"
            names = build_installed(repos_dir)
            print(f"repositories from installed distributions: {', '.join(names)}")
        files = python_files(repos_dir)
        total_bytes = sum(f.stat().st_size for f in files)
        print(f"{len(files)} .py files, {total_bytes / 1e6:.1f} MB, cores {os.cpu_count()}")
        out = Path(tmp) / "examples.jsonl"

        bare_s, parsed = best_of(args.repeat, lambda: bare_parse(files))

        counts = {**examples.DEFAULT_COUNTS, "direct": 0}

        def stage():
            return examples.repo_examples(repos_dir, out, counts, jobs=args.jobs, progress=False)

        stage_s, result = best_of(args.repeat, stage)
    print(f"bare ast.parse: {bare_s:.3f} s, {parsed / bare_s:.0f} files/s")
    print(
        f"stage (extract + generate {len(result.records)} examples): {stage_s:.3f} s, "
        f"{result.files_parsed / stage_s:.0f} files/s"
    )
    print(f"ratio: {stage_s / bare_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
