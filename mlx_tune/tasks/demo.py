"""``mlx-tune demo --task NAME`` for a task other than ``tools``: the task's offline demo data,
the tiny base, a fine-tune on the train split, and a benchmark of base against tuned model and
the task's baselines on the test split, with 95% intervals.

Stages (all under ``--out``, ``benchmarks/demo-<task>`` by default; the tiny base in ``models/tiny``
as the tools demo builds it, reused when there):

1. ``data/``: ``task.build_demo_data`` (train/valid/test.jsonl, manifest.json);
2. ``adapter/``: :func:`mlx_tune.training.train.train` with the ``tiny`` preset (the base is fine-tuned
   whole, as the tools demo does; ``--model`` other than the tiny one: LoRA with the preset's rates);
3. ``results.json``, ``results.md``, ``chart.png``, ``predictions/``
   (:func:`mlx_tune.eval.task_score.run_task_benchmark`, also what ``mlx-tune bench --task`` runs).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from mlx_tune import layout
from mlx_tune.tasks import get_task


@dataclass
class TaskDemoSettings:
    """What ``demo --task`` runs; the defaults keep it to a few minutes on two CPU cores."""

    model: str | None = None
    """Base model; ``None`` builds (or reuses) the embedded tiny model in ``models/tiny``."""
    out: Path | None = None
    """Output folder (default ``benchmarks/demo-<task>``)."""
    seed: int = 0
    epochs: float = 3
    """Passes over the train split (``iters`` overrides it)."""
    iters: int | None = None
    """Training iterations (``None``: ``epochs`` over the train split)."""
    max_tokens: int | None = None
    """Most tokens per answer (``None``: the task's ``MAX_TOKENS``, else 48)."""
    limit: int | None = None
    """Benchmark at most this many test queries."""
    pretrain_steps: int | None = None
    preset: str | None = None
    """Training preset; default: ``tiny`` on the tiny base, the training defaults on another model."""
    log: Callable[[str], None] = field(default=lambda s: click.echo(s, err=True))


def _timed(timings: dict, name: str, log, fn):
    t = time.perf_counter()
    log(f"[demo] {name} ...")
    out = fn()
    timings[name] = round(time.perf_counter() - t, 1)
    log(f"[demo] {name}: done in {timings[name]:.1f} s")
    return out


def base_model(s: TaskDemoSettings) -> str:
    """``s.model``, else the tiny model in ``models/tiny`` (built, with cached pretraining, when missing)."""
    if s.model:
        return s.model
    if not (layout.TINY_MODEL_DIR / "config.json").is_file():
        from mlx_tune.models.tiny import DEFAULT_PRETRAIN_STEPS, build_tiny_model

        steps = DEFAULT_PRETRAIN_STEPS if s.pretrain_steps is None else s.pretrain_steps
        build_tiny_model(layout.TINY_MODEL_DIR, seed=0, pretrain_steps=steps)
    return str(layout.TINY_MODEL_DIR)


def run_task_demo(task_name: str, s: TaskDemoSettings) -> dict:
    """Run the task's demo (see the module doc) and return its ``results.json`` object."""
    from mlx_tune.eval.bench_inputs import load_queries
    from mlx_tune.eval.bench_report import format_table
    from mlx_tune.eval.task_score import run_task_benchmark
    from mlx_tune.fileio import write_json
    from mlx_tune.models import cpu_blas
    from mlx_tune.training import train

    task = get_task(task_name)
    out = Path(s.out or layout.BENCHMARKS_DIR / f"demo-{task.NAME}")
    data, adapter = out / "data", out / "adapter"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    s.log(f"[demo] task {task.NAME}: {task.SUMMARY}; {cpu_blas.describe()}")
    manifest = _timed(timings, "data", s.log, lambda: task.build_demo_data(data, s.seed))
    model = _timed(timings, "base model", s.log, lambda: base_model(s))
    overrides = {
        "model": model,
        "data": str(data),
        "adapter_path": str(adapter),
        "seed": s.seed,
        "task": task.NAME,
    }
    if task.NAME != "tools":  # the preset weighs the call-or-answer token; these tasks have no such choice
        overrides["decision_weight"] = 1.0
    overrides.update({"iters": s.iters} if s.iters else {"epochs": s.epochs})
    preset = s.preset or ("tiny" if s.model is None else None)
    settings = train.resolve_settings(preset=preset, overrides=overrides)
    summary = _timed(timings, "train", s.log, lambda: train.train(settings, resume=False, overwrite=True))
    if summary.get("status") == "interrupted":
        raise KeyboardInterrupt
    queries = load_queries(data / "test.jsonl", s.limit)
    results = _timed(
        timings,
        "benchmark",
        s.log,
        lambda: run_task_benchmark(
            task_name,
            {"base": model, "tuned": f"{model}@{adapter}"},
            queries,
            out / "bench",
            train=load_queries(data / "train.jsonl"),
            max_tokens=s.max_tokens or getattr(task, "MAX_TOKENS", 48),
            settings={"queries": str(data / "test.jsonl")},
        ),
    )
    click.echo(format_table(results))
    total = round(time.perf_counter() - start, 1)
    write_json(
        out / "demo_run.json",
        {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "task": task.NAME,
            "model": model,
            "data": {k: manifest.get(k) for k in ("records", "origin", "synthetic_share", "tier")},
            "train": {
                k: summary.get(k)
                for k in ("status", "iters", "val_loss_first", "val_loss_best", "train_seconds")
            },
            "total_seconds": total,
            "stage_seconds": timings,
        },
    )
    s.log(f"[demo] finished in {total / 60:.1f} min; results in {out}/bench/")
    return results
