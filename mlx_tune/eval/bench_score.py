"""Scoring without a model: baselines, ``mlx-tune bench score``, and the staged output folder.

``bench score`` scores a JSONL of answers made elsewhere (an API model, LM Studio,
``mlx_lm.server``...): one object per line with the answer in ``text``, in the order of the
queries (an ``index`` field, when present, must say so). It writes the same ``results.json``
as ``mlx-tune bench`` (``models[0]`` is the scored answers, then the baselines), ``results.md``,
``chart.png`` and ``predictions/``.

Every benchmark run writes into a staging folder beside ``--out`` that replaces ``--out`` as a whole
when all of its files are complete (:func:`staged_output`): an interrupted or killed run leaves the
previous results as they were, never new predictions beside an old ``results.json``, and never no
``results.json`` at all.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mlx_tune import UserError, fileio
from mlx_tune.eval import baselines, metrics
from mlx_tune.eval.bench_inputs import load_queries, read_jsonl_lines
from mlx_tune.eval.bench_report import format_markdown, plot_results
from mlx_tune.fileio import read_jsonl, sha256_file, write_json, write_jsonl, write_text

# Fields of a model row that only a model run measures: None for baselines and scored answers.
MEASURED_KEYS = (
    "load_time_s",
    "prompt_tps",
    "generation_tps",
    "latency_s_mean",
    "latency_s_p95",
    "eval_wall_s",
    "peak_memory_gb",
    "size_bytes",
    "adapter_bytes",
    "trainable_params",
    "perplexity",
)
# Filled by the agent loop when the benchmark runs one (mlx_tune.eval.agent); None otherwise.
AGENT_KEYS = ("agent_wall_s", "agent_mean_steps", "agent_tool_errors", "agent_step_limit_hits")
OUTPUTS = ("predictions", "bench.log", "chart.png", "results.md")  # with results.json: a run's own files


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder that stands in for ``out_dir``; when the block succeeds it replaces
    ``out_dir`` as a whole (:func:`mlx_tune.fileio.atomic_folder`), so a reader sees the previous
    run or the new one, never neither and never a mix. The run's own files (``OUTPUTS`` and
    ``results.json``) come only from the block; other files in ``out_dir`` (a user's notes) are
    kept. The staging folder lies beside ``out_dir``; one a killed run left is removed by the next
    run, one of a run still going never is."""
    out_dir = Path(out_dir)
    # staging folders inside out_dir were made by versions before this one: not carried over
    legacy = [p.name for p in out_dir.glob(".staging-*")] if out_dir.is_dir() else []
    with fileio.atomic_folder(out_dir, owned=(*OUTPUTS, "results.json", *legacy)) as stage:
        yield stage


def named_roots(
    options: tuple[str, ...] | list[str] = (), repos_dir: str | os.PathLike = "."
) -> dict[str, str]:
    """Repository folders the benchmark names itself: ``--repo NAME=DIR`` options and, unless
    ``repos_dir`` holds a folder of that name, ``mlx_tune`` (the domain set's default repository,
    this project's library source) as the installed package folder."""
    import mlx_tune

    roots = {}
    if not (Path(repos_dir) / "mlx_tune").is_dir():
        roots["mlx_tune"] = str(Path(mlx_tune.__file__).resolve().parent)
    for opt in options:
        name, sep, folder = opt.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name) or ".." in name or not folder:
            raise UserError(f"--repo {opt!r}: expected NAME=DIR with a plain repository name")
        if not Path(folder).is_dir():
            raise UserError(f"--repo {opt!r}: {folder}: no such folder")
        roots[name] = folder
    return roots


def fused_agreement(entries: list[dict], stage: Path) -> dict[str, dict]:
    """For each fused model benchmarked beside the adapter it was fused from (``phase7-fused-8bit``
    beside ``phase7``): the share of queries whose answers are identical, from the predictions."""
    ok = {m["name"] for m in entries if not m.get("error")}
    out = {}
    for name in sorted(ok):
        m = re.fullmatch(r"(.+?)-fused-.+", name)
        if m and m.group(1) in ok:
            fused, adapter = (
                [r["text"] for r in read_jsonl(stage / "predictions" / f"{safe_name(n)}.jsonl")]
                for n in (name, m.group(1))
            )
            same = sum(a == b for a, b in zip(fused, adapter, strict=True))
            out[name] = {"adapter": m.group(1), "identical": same / len(fused), "queries": len(fused)}
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def scored_fields(scored: dict) -> dict[str, Any]:
    """The accuracy part of a model row, from :func:`mlx_tune.eval.metrics.score`."""
    out = {k: scored[k] for k in ("accuracy", "ci", "confusion", "counts")}
    out["subsets"] = scored.get("subsets")
    return out


def write_predictions(stage: Path, name: str, texts: list[str], scored: dict, extra=None) -> None:
    rows = [
        {"index": i, "text": text, **row, **((extra or {}).get(i) or {})}
        for i, (text, row) in enumerate(zip(texts, scored["per_query"], strict=True))
    ]
    write_jsonl(stage / "predictions" / f"{safe_name(name)}.jsonl", rows)


def baseline_entries(queries: list[dict], stage: Path | None = None, **score_kw) -> list[dict]:
    """One scored row per baseline (:mod:`mlx_tune.eval.baselines`), ``kind: baseline``; their
    answers go to ``stage/predictions/baseline-<name>.jsonl`` when ``stage`` is given."""
    entries = []
    for name in baselines.BASELINES:
        texts = baselines.answers(name, queries)
        scored = metrics.score(queries, texts, **score_kw)
        if stage is not None:
            write_predictions(stage, f"baseline-{name}", texts, scored)
        entry: dict[str, Any] = {"name": name, "kind": "baseline", "spec": None}
        entry.update(dict.fromkeys(MEASURED_KEYS + AGENT_KEYS))
        entry.update(scored_fields(scored))
        entry["error"] = None
        entries.append(entry)
    return entries


def read_predictions(path: str | os.PathLike, n_queries: int) -> list[str]:
    """The answer texts of a predictions JSONL (see the module doc); one-line errors naming
    ``file:line`` for bad JSON, a missing ``text``, an ``index`` out of order or a wrong count."""
    path = Path(path)
    texts = []
    for lineno, obj in read_jsonl_lines(path):
        text = obj.get("text")
        if not isinstance(text, str):
            got = "missing" if "text" not in obj else f"a {type(text).__name__}"
            raise UserError(f"{path}:{lineno}: text: expected the answer as a string, got {got}")
        index = obj.get("index")
        if index is not None and index != len(texts):
            raise UserError(
                f"{path}:{lineno}: index: {index!r}, but this is answer {len(texts)} "
                "(answers must follow the order of the queries)"
            )
        texts.append(text)
    if len(texts) != n_queries:
        raise UserError(f"{path}: {len(texts)} answers for {n_queries} queries (one per query, in order)")
    return texts


def score_predictions(
    queries: str | os.PathLike,
    predictions: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    repos_dir: str | os.PathLike = metrics.DEFAULT_REPOS_DIR,
    html_dir: str | os.PathLike = metrics.DEFAULT_HTML_DIR,
    roots: dict[str, str] | None = None,
    timeout_s: float = metrics.CALL_TIMEOUT_S,
) -> dict:
    """Score answers made elsewhere and write the run's folder; return the ``results.json`` object."""
    queries, predictions = Path(queries), Path(predictions)
    query_records = load_queries(queries)
    texts = read_predictions(predictions, len(query_records))
    name = name or predictions.stem
    roots = named_roots((), repos_dir) if roots is None else roots
    where = {"repos_dir": repos_dir, "html_dir": html_dir, "named_roots": roots}
    score_kw = {**where, "timeout_s": timeout_s}
    with staged_output(out_dir) as stage:
        scored = metrics.score(query_records, texts, **score_kw)
        write_predictions(stage, name, texts, scored)
        entry: dict[str, Any] = {"name": name, "kind": "model", "spec": str(predictions)}
        entry.update(dict.fromkeys(MEASURED_KEYS + AGENT_KEYS))
        entry.update(scored_fields(scored))
        entry["error"] = None
        results = {
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "versions": versions(),
            "settings": {
                "mode": "score",
                "queries": str(queries),
                "queries_sha256": sha256_file(queries),
                "n_queries": len(query_records),
                "predictions": str(predictions),
                "predictions_sha256": sha256_file(predictions),
                "repos_dir": str(repos_dir),
                "html_dir": str(html_dir),
                "named_roots": roots,
                "missing_repos": metrics.missing_repositories(query_records, **where),
            },
            "models": [entry, *baseline_entries(query_records, stage, **score_kw)],
        }
        write_outputs(stage, results)
    return results


def write_outputs(stage: Path, results: dict) -> None:
    """``results.json``, ``results.md`` and ``chart.png`` into the staging folder."""
    write_json(stage / "results.json", results)
    write_text(stage / "results.md", format_markdown(results))
    plot_results(results, stage / "chart.png")


def versions() -> dict:
    """Versions of mlx_tune, mlx and mlx-lm (from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import mlx_tune

    out = {"mlx_tune": mlx_tune.__version__}
    for pkg in ("mlx", "mlx-lm"):
        try:
            out[pkg.replace("-", "_")] = version(pkg)
        except PackageNotFoundError:
            out[pkg.replace("-", "_")] = None
    return out


# ---------------------------------------------------------------- options every bench command shares

REPOS_OPTION = click.option(
    "--repos",
    "repos_dir",
    default=str(metrics.DEFAULT_REPOS_DIR),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding one sub-folder per repository: a query's calls run in the one its "
    "meta.repo names (never in a folder the query file names).",
)
REPO_OPTION = click.option(
    "--repo",
    "repo_opts",
    multiple=True,
    metavar="NAME=DIR",
    help="The folder of repository NAME, outside --repos (repeatable). Default: mlx_tune (the "
    "domain set's repository) is this installed package unless --repos holds one.",
)
HTML_OPTION = click.option(
    "--html-dir",
    default=str(metrics.DEFAULT_HTML_DIR),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the HTML records' calls run in.",
)
