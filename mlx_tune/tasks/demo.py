"""``mlx-tune demo --task NAME`` for a task other than ``tools``: the task's offline demo data,
the tiny base, a fine-tune on the train split, and a benchmark of base against tuned model and
the task's baselines on the test split, with 95% intervals.

Stages (all under ``--out``, ``benchmarks/demo-<task>`` by default; the tiny base in ``models/tiny``
as the tools demo builds it, reused when there):

1. ``data/``: ``task.build_demo_data`` (train/valid/test.jsonl, manifest.json);
2. ``adapter/``: :func:`mlx_tune.train.train` with the ``tiny`` preset (the base is fine-tuned
   whole, as the tools demo does; ``--model`` other than the tiny one: LoRA with the preset's rates);
3. ``results.json``, ``results.md``, ``chart.png``, ``predictions/`` (:func:`run_task_benchmark`).

:func:`run_task_benchmark` is also what ``mlx-tune bench --task`` runs for model specs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from mlx_tune import UserError, layout
from mlx_tune.tasks import get_task


@dataclass
class TaskDemoSettings:
    """What ``demo --task`` runs; the defaults keep it to a few minutes on two CPU cores."""

    model: str | None = None
    """Base model; ``None`` builds (or reuses) the embedded tiny model in ``models/tiny``."""
    out: Path | None = None
    """Output folder (default ``benchmarks/demo-<task>``)."""
    seed: int = 0
    epochs: int = 3
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
        from mlx_tune.tiny import DEFAULT_PRETRAIN_STEPS, build_tiny_model

        steps = DEFAULT_PRETRAIN_STEPS if s.pretrain_steps is None else s.pretrain_steps
        build_tiny_model(layout.TINY_MODEL_DIR, seed=0, pretrain_steps=steps)
    return str(layout.TINY_MODEL_DIR)


def run_task_demo(task_name: str, s: TaskDemoSettings) -> dict:
    """Run the task's demo (see the module doc) and return its ``results.json`` object."""
    from mlx_tune import cpu_blas, train
    from mlx_tune.bench_inputs import load_queries
    from mlx_tune.bench_report import format_table
    from mlx_tune.fileio import write_json

    task = get_task(task_name)
    out = Path(s.out or layout.BENCHMARKS_DIR / f"demo-{task.NAME}")
    data, adapter = out / "data", out / "adapter"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    s.log(f"[demo] task {task.NAME}: {task.SUMMARY}; {cpu_blas.describe()}")
    manifest = _timed(timings, "data", s.log, lambda: task.build_demo_data(data, s.seed))
    model = _timed(timings, "base model", s.log, lambda: base_model(s))
    overrides = {"model": model, "data": str(data), "adapter_path": str(adapter), "seed": s.seed}
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


def run_task_benchmark(
    task_name: str,
    models: dict[str, str],
    queries: list[dict],
    out_dir: Path,
    *,
    train: list[dict] | None = None,
    max_tokens: int = 128,
    batch_size: int = 32,
    settings: dict | None = None,
) -> dict:
    """Answer ``queries`` with each model (greedy, batched), take the answer-token perplexity
    (per origin where the task says how), score with the task, add its baselines, and write
    ``out_dir`` as ``mlx-tune bench`` does; return the ``results.json`` object."""
    from mlx_tune.bench_measure import machine_info
    from mlx_tune.bench_score import staged_output, versions, write_outputs
    from mlx_tune.tasks.score import baseline_entries, model_entry

    task = get_task(task_name)
    entries = []
    with staged_output(out_dir) as stage:
        for name, spec in models.items():
            try:
                entries.append(
                    _measure(task, name, spec, queries, stage, max_tokens, batch_size, train or [])
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
    task, name: str, spec: str, queries: list[dict], stage: Path, max_tokens: int, batch_size: int, train
) -> dict:
    """Load one model, answer, take the perplexity, score; its predictions go into ``stage``."""
    import mlx.core as mx

    from mlx_tune import evaluate, model_spec
    from mlx_tune.bench_measure import p95
    from mlx_tune.tasks.score import model_entry, write_predictions

    model, tokenizer = model_spec.load_model(spec)
    gen = evaluate.generate_batched(
        model,
        tokenizer,
        queries,
        max_tokens=max_tokens,
        batch_size=batch_size,
        stop_broken_calls=False,
    )
    by_origin = getattr(task, "perplexity_by_origin", None)
    if by_origin:  # {"all": (value, ci), origin: (value, ci)}
        ppl = by_origin(model, tokenizer, queries)
    else:
        ppl = {"all": (evaluate.perplexity(model, tokenizer, queries), None)}
    del model, tokenizer
    mx.clear_cache()
    scored = task.score(queries, gen.texts, train=train)
    for key, (value, ci) in ppl.items():
        if key != "all":
            scored["accuracy"][f"perplexity/{key}"], scored["ci"][f"perplexity/{key}"] = value, ci
    write_predictions(stage, name, gen.texts, scored["rows"])
    return model_entry(
        name,
        "model",
        spec,
        scored,
        perplexity=ppl["all"][0],
        generation_tps=gen.generation_tps,
        prompt_tps=gen.prompt_tps,
        latency_s_mean=sum(gen.latencies) / len(gen.latencies),
        latency_s_p95=p95(gen.latencies),
        eval_wall_s=gen.wall_time,
    )
