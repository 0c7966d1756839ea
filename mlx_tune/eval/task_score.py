"""The benchmark of a task other than ``tools`` (:mod:`mlx_tune.tasks`): ``mlx-tune bench --task
NAME`` answers held-out queries with models (:func:`run_task_benchmark`) and ``mlx-tune bench score
--task NAME`` scores answers made elsewhere (:func:`score_task_predictions`), each with the task's
metrics and baselines, writing the benchmark's folder (``results.json`` in the shape
:mod:`mlx_tune.eval.bench_score` writes, ``results.md``, ``chart.png``, ``predictions/``) and
replacing ``--out`` as a whole when done (:func:`mlx_tune.eval.bench_score.staged_output`).

The task modules are reached through the registry (:func:`mlx_tune.tasks.get_task`), so evaluation
imports no task code: a task plugs its ``score`` and ``baselines`` in.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from mlx_tune import UserError, fileio
from mlx_tune.tasks import get_task


def model_entry(name: str, kind: str, spec: str | None, scored: dict, **measured) -> dict:
    """One row of ``results.json["models"]``: the task's figures, measured fields as given (else null)."""
    from mlx_tune.eval.bench_score import AGENT_KEYS, MEASURED_KEYS

    entry: dict[str, Any] = {"name": name, "kind": kind, "spec": spec}
    entry.update(dict.fromkeys(MEASURED_KEYS + AGENT_KEYS))
    entry.update(measured)
    entry.update(
        accuracy=scored["accuracy"],
        ci=scored["ci"],
        confusion=None,
        counts=scored.get("counts"),
        subsets=None,
    )
    entry["error"] = None
    return entry


def write_predictions(stage: Path, name: str, texts: list[str], rows: list[dict]) -> None:
    from mlx_tune.eval.bench_score import safe_name

    out = [{"index": i, "text": t, **row} for i, (t, row) in enumerate(zip(texts, rows, strict=True))]
    fileio.write_jsonl(stage / "predictions" / f"{safe_name(name)}.jsonl", out)


def baseline_entries(task, queries: list[dict], train: list[dict], stage: Path | None) -> list[dict]:
    """The task's baselines scored like a model, ``kind: baseline``."""
    entries = []
    for name, texts in task.baselines(queries, train).items():
        scored = task.score(queries, texts, train=train)
        if stage is not None:
            write_predictions(stage, f"baseline-{name}", texts, scored["rows"])
        entries.append(model_entry(name, "baseline", None, scored))
    return entries


def load_train(path: Path | None, queries: Path) -> tuple[list[dict], Path | None]:
    """The training records the baselines read: ``path``, else ``train.jsonl`` beside the queries."""
    from mlx_tune.eval.bench_inputs import load_queries

    path = path or (queries.parent / "train.jsonl" if (queries.parent / "train.jsonl").is_file() else None)
    return (load_queries(path), path) if path else ([], None)


def score_task_predictions(
    task_name: str,
    queries: str | os.PathLike,
    predictions: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    train: str | os.PathLike | None = None,
) -> dict:
    """Score answers made elsewhere with task ``task_name``; write the run's folder and return ``results.json``."""
    from mlx_tune.eval.bench_inputs import load_queries
    from mlx_tune.eval.bench_score import read_predictions, staged_output, versions, write_outputs

    task = get_task(task_name)
    queries, predictions = Path(queries), Path(predictions)
    query_records = load_queries(queries)
    texts = read_predictions(predictions, len(query_records))
    train_records, train_path = load_train(Path(train) if train else None, queries)
    if train and not train_records:
        raise UserError(f"--train {train}: no records")
    name = name or predictions.stem
    with staged_output(out_dir) as stage:
        scored = task.score(query_records, texts, train=train_records)
        write_predictions(stage, name, texts, scored["rows"])
        results = {
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "versions": versions(),
            "settings": {
                "mode": "score",
                "task": task.NAME,
                "queries": str(queries),
                "queries_sha256": fileio.sha256_file(queries),
                "n_queries": len(query_records),
                "predictions": str(predictions),
                "predictions_sha256": fileio.sha256_file(predictions),
                "train": str(train_path) if train_path else None,
                "missing_repos": [],
            },
            "models": [
                model_entry(name, "model", str(predictions), scored),
                *baseline_entries(task, query_records, train_records, stage),
            ],
        }
        write_outputs(stage, results)
    return results


def run_task_benchmark(
    task_name: str,
    models: dict[str, str],
    queries: list[dict],
    out_dir: Path,
    *,
    train: list[dict] | None = None,
    max_tokens: int = 128,
    batch_size: int = 32,
    repeats: int = 0,
    settings: dict | None = None,
) -> dict:
    """Answer ``queries`` with each model (greedy, batched), take the answer-token perplexity
    (per origin where the task says how), peak memory, sizes and (``repeats`` > 0) the median load
    time over fresh processes, score with the task, add its baselines, and write ``out_dir`` as
    ``mlx-tune bench`` does; return the ``results.json`` object."""
    from mlx_tune.eval.bench_measure import machine_info
    from mlx_tune.eval.bench_score import staged_output, versions, write_outputs

    task = get_task(task_name)
    entries = []
    with staged_output(out_dir) as stage:
        for name, spec in models.items():
            try:
                entries.append(
                    _measure(task, name, spec, queries, stage, max_tokens, batch_size, train or [], repeats)
                )
            except Exception as e:  # one model failing must not stop the others
                message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                entries.append(
                    {**model_entry(name, "model", spec, {"accuracy": {}, "ci": {}}), "error": message}
                )
        results = {
            "machine": machine_info(),
            "versions": versions(),
            "settings": {
                "task": task.NAME,
                "n_queries": len(queries),
                "repeats": repeats,
                "max_tokens": max_tokens,
                "batch_size": batch_size,
                "decoding": "greedy",
                "missing_repos": [],
                **(settings or {}),
            },
            "models": entries + baseline_entries(task, queries, train or [], stage),
        }
        write_outputs(stage, results)
    return results


def _measure(
    task,
    name: str,
    spec: str,
    queries: list[dict],
    stage: Path,
    max_tokens: int,
    batch_size: int,
    train,
    repeats: int,
) -> dict:
    """Measure one model (:func:`mlx_tune.eval.bench_model.measure_model`: answers, perplexity per
    origin where the task says how, peak memory, sizes, load time), score it with the task; its
    predictions go into ``stage``."""
    from mlx_tune.eval.bench_model import measure_model

    m = measure_model(
        name,
        spec,
        queries,
        repeats=repeats,
        max_tokens=max_tokens,
        batch_size=batch_size,
        stop_broken_calls=False,
        perplexity=getattr(task, "perplexity_by_origin", None),
    )
    scored = task.score(queries, m.gen.texts, train=train)
    for key, (value, ci) in m.perplexity.items():
        if key != "all":
            scored["accuracy"][f"perplexity/{key}"], scored["ci"][f"perplexity/{key}"] = value, ci
    write_predictions(stage, name, m.gen.texts, scored["rows"])
    return model_entry(name, "model", spec, scored, **m.fields)
