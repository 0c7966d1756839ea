"""Benchmark models side by side: ``python -m mlx_tune.bench`` (also ``mlx-tune bench``).

For each model (a base folder or Hugging Face id, ``BASE@ADAPTER_DIR`` for a LoRA adapter on its
base, or a fused folder) :mod:`mlx_tune.eval.bench_model` measures load time (median over fresh
processes), prompt and generation tokens/s, latency per query, peak memory, size on disk, adapter
size and trainable parameters, accuracy on one held-out query set (see :mod:`mlx_tune.eval.metrics`)
and answer-token perplexity. Every accuracy figure carries a 95% interval, and the baselines of
:mod:`mlx_tune.eval.baselines` (never call, always ``grep "."``, a keyword program) are scored on the
same queries as rows of the same table (``kind: baseline``). It writes ``results.json``,
``results.md``, ``chart.png``, ``bench.log`` and ``predictions/<name>.jsonl``, all published
together when the run completes (:func:`mlx_tune.eval.bench_score.staged_output`). A model that fails
is listed with its ``error``; the others are still measured. Tool calls run in the repository
``meta.repo`` names inside ``--repos`` (HTML records: ``--html-dir``), never in a folder the
query file names.

Subcommands: ``bench score`` scores answers made elsewhere without a model
(:mod:`mlx_tune.eval.bench_score`); ``bench report DIR`` redraws ``results.md`` and ``chart.png``.

Answers are decoded greedily in batches (:func:`mlx_tune.eval.evaluate.generate_batched`) and stop when
complete, or as soon as their tool call's JSON is broken (counted in ``stopped_broken_calls``,
marked ``stopped_early`` in the predictions): the rest of such an answer cannot change a score.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import click

from mlx_tune import UserError, layout
from mlx_tune.eval import metrics
from mlx_tune.eval.bench_inputs import (  # noqa: F401  (re-exported: public here too)
    adapter_base_model,
    default_models,
    default_queries,
    load_queries,
    parse_model_options,
    phase_base_model,
    project_models,
)
from mlx_tune.eval.bench_measure import machine_info
from mlx_tune.eval.bench_model import DEFAULT_AGENT_STEPS, benchmark_model
from mlx_tune.eval.bench_report import ACCURACY_KEYS, format_table, redraw  # noqa: F401  (ACCURACY_KEYS: public)
from mlx_tune.eval.bench_score import (
    AGENT_KEYS,
    HTML_OPTION,
    MEASURED_KEYS,
    REPO_OPTION,
    REPOS_OPTION,
    baseline_entries,
    fused_agreement,
    named_roots,
    score_predictions,
    staged_output,
    versions,
    write_outputs,
)
from mlx_tune.fileio import sha256_file

DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32

log = logging.getLogger("mlx_tune.eval.bench")
log.propagate = False  # bench.log gets the details; the console gets the table


def run_benchmark(
    models: dict[str, str],
    queries: Path,
    out_dir: Path,
    *,
    repeats: int = 3,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    progress: bool = True,
    repos_dir: str | os.PathLike = metrics.DEFAULT_REPOS_DIR,
    html_dir: str | os.PathLike = metrics.DEFAULT_HTML_DIR,
    roots: dict[str, str] | None = None,
    agent_steps: int = DEFAULT_AGENT_STEPS,
) -> dict:
    """Benchmark ``models`` (name -> spec) and the baselines on ``queries``; write the results
    into ``out_dir`` (all files at once, at the end) and return them (the ``results.json`` object).
    Calls run in ``repos_dir/<meta.repo>``, ``html_dir``, or ``roots[meta.repo]`` (default:
    :func:`mlx_tune.eval.bench_score.named_roots`)."""
    from tqdm import tqdm

    if not models:
        raise UserError("nothing to benchmark: no models given (pass --model NAME=SPEC)")
    if batch_size < 1 or max_tokens < 1 or repeats < 0 or (limit is not None and limit < 1):
        raise UserError("--batch-size, --max-tokens and --limit must be >= 1, --repeats >= 0")
    if agent_steps < 0:
        raise UserError("--agent-steps must be >= 0 (0 skips the agent loop)")
    queries = Path(queries)
    query_records = load_queries(queries, limit)
    roots = named_roots((), repos_dir) if roots is None else roots
    score_kw = {"repos_dir": Path(repos_dir), "html_dir": Path(html_dir), "named_roots": roots}
    with staged_output(out_dir) as stage:
        handler = logging.FileHandler(stage / "bench.log", mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            results: dict[str, Any] = {
                "machine": machine_info(),
                "versions": versions(),
                "settings": {
                    "queries": str(queries),
                    "queries_sha256": sha256_file(queries),
                    "n_queries": len(query_records),
                    "repeats": repeats,
                    "max_tokens": max_tokens,
                    "batch_size": batch_size,
                    "limit": limit,
                    "decoding": "greedy",
                    "agent_steps": agent_steps,
                    "repos_dir": str(repos_dir),
                    "html_dir": str(html_dir),
                    "named_roots": roots,
                    "missing_repos": metrics.missing_repositories(query_records, **score_kw),
                },
                "models": [],
            }
            log.info("benchmark: %d models on %d queries from %s", len(models), len(query_records), queries)
            bar = tqdm(models.items(), desc="bench", unit="model", disable=not progress)
            for name, spec in bar:
                bar.set_postfix_str(name)
                tic = time.perf_counter()
                try:
                    entry = benchmark_model(
                        name,
                        spec,
                        query_records,
                        stage,
                        repeats=repeats,
                        max_tokens=max_tokens,
                        batch_size=batch_size,
                        progress=progress,
                        score_kw=score_kw,
                        agent_steps=agent_steps,
                    )
                    log.info(
                        "%s: done in %.1fs: %s",
                        name,
                        time.perf_counter() - tic,
                        json.dumps(entry["accuracy"]),
                    )
                except Exception as e:  # one model failing must not stop the others
                    message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                    log.error("%s: failed: %s", name, message)
                    if not isinstance(e, UserError):
                        log.error("%s", traceback.format_exc())
                    entry = _failed_entry(name, spec, message)
                results["models"].append(entry)
            results["fused_agreement"] = fused_agreement(results["models"], stage)
            results["models"] += baseline_entries(query_records, stage, **score_kw)
            write_outputs(stage, results)
            log.info("wrote %s/results.json, results.md, chart.png", out_dir)
        finally:
            log.removeHandler(handler)
            handler.close()
    return results


def _failed_entry(name: str, spec: str, message: str) -> dict:
    entry: dict[str, Any] = {"name": name, "kind": "model", "spec": spec}
    entry.update(dict.fromkeys(MEASURED_KEYS + AGENT_KEYS + ("confusion", "counts", "subsets")))
    entry["accuracy"] = dict.fromkeys(ACCURACY_KEYS)
    entry["ci"] = dict.fromkeys(ACCURACY_KEYS)
    entry["error"] = message
    return entry


# ---------------------------------------------------------------- commands


@click.group("bench", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model_opts",
    multiple=True,
    metavar="NAME=SPEC",
    help="A model to benchmark (repeatable). SPEC is a model folder or Hugging Face id, "
    "or BASE@ADAPTER_DIR for a LoRA adapter on its base, e.g. base=models/tiny, "
    "p7=models/tiny@adapters/phase7. Default: the base the phase configs name, every "
    "adapters/phaseN and every models/*-fused-* folder.",
)
@click.option(
    "--queries",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out records (JSONL). Default: data/phase7/test.jsonl, else the highest "
    "data/phaseN/test.jsonl.",
)
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=int,
    help="Fresh-process loads per model for the load-time median (0 skips it).",
)
@click.option(
    "--max-tokens",
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    type=int,
    help="Most tokens generated per answer.",
)
@click.option(
    "--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=int, help="Queries decoded together."
)
@click.option("--limit", type=int, help="Use only the first N queries.")
@click.option(
    "--agent-steps",
    default=DEFAULT_AGENT_STEPS,
    show_default=True,
    type=int,
    help="Most tool calls per query in the agent loop (the model's calls run in the sandbox and "
    "their output is fed back); 0 skips the agent loop.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder. Default: benchmarks/run-<timestamp>.",
)
@REPOS_OPTION
@REPO_OPTION
@HTML_OPTION
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--task",
    "task_name",
    default="tools",
    show_default=True,
    help="The task whose metrics and baselines score the models: tools, chat or dot (mlx_tune.tasks). "
    "Other than tools: --model and --queries are required; baselines read train.jsonl beside --queries.",
)
@click.pass_context
def command(
    ctx,
    model_opts,
    queries,
    repeats,
    max_tokens,
    batch_size,
    limit,
    agent_steps,
    out_dir,
    repos_dir,
    repo_opts,
    html_dir,
    quiet,
    task_name,
) -> None:
    """Benchmark models side by side: accuracy with 95% intervals against baselines, load time,
    speed, memory, size, perplexity.

    Writes results.json, results.md, chart.png, bench.log and predictions/ to --out (all at the
    end of the run), and prints the tables. `bench score` scores answers made elsewhere;
    `bench report DIR` redraws results.md and chart.png from results.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    out_dir = out_dir or layout.BENCHMARKS_DIR / time.strftime("run-%Y%m%d-%H%M%S")
    try:
        from mlx_tune.tasks import check_name

        if check_name(task_name) != "tools":
            results = _task_benchmark(
                task_name, model_opts, queries, out_dir, limit, max_tokens, batch_size, repeats
            )
        else:
            models = parse_model_options(model_opts) if model_opts else default_models()
            if not models:
                raise UserError(
                    "nothing to benchmark: no phase config base, adapters/phaseN or "
                    "models/*-fused-* found; pass --model NAME=SPEC"
                )
            queries = queries or default_queries()
            results = run_benchmark(
                models,
                queries,
                out_dir,
                repeats=repeats,
                max_tokens=max_tokens,
                batch_size=batch_size,
                limit=limit,
                progress=not quiet,
                repos_dir=repos_dir,
                html_dir=html_dir,
                roots=named_roots(repo_opts, repos_dir),
                agent_steps=agent_steps,
            )
    except UserError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        _interrupted(out_dir)
    _finish(results, out_dir)
    failed = [m["name"] for m in results["models"] if m.get("error")]
    if failed:
        models_run = [m for m in results["models"] if m.get("kind") != "baseline"]
        raise click.ClickException(f"{len(failed)} of {len(models_run)} models failed: {', '.join(failed)}")


def _task_benchmark(task_name, model_opts, queries, out_dir, limit, max_tokens, batch_size, repeats) -> dict:
    """``bench --task NAME`` for a task other than tools (:func:`mlx_tune.eval.task_score.run_task_benchmark`)."""
    from mlx_tune.eval.task_score import load_train, run_task_benchmark

    if not model_opts or queries is None:
        raise UserError(f"--task {task_name}: pass --model NAME=SPEC (repeatable) and --queries FILE")
    if batch_size < 1 or max_tokens < 1 or repeats < 0 or (limit is not None and limit < 1):
        raise UserError("--batch-size, --max-tokens and --limit must be >= 1, --repeats >= 0")
    train, train_path = load_train(None, Path(queries))
    return run_task_benchmark(
        task_name,
        parse_model_options(model_opts),
        load_queries(queries, limit),
        out_dir,
        train=train,
        max_tokens=max_tokens,
        batch_size=batch_size,
        repeats=repeats,
        settings={"queries": str(queries), "limit": limit, "train": str(train_path) if train_path else None},
    )


def _interrupted(out_dir: Path) -> None:
    click.echo(
        f"bench: interrupted; nothing written to {out_dir} (earlier results there are untouched)", err=True
    )
    raise SystemExit(130)


def _finish(results: dict, out_dir: Path) -> None:
    click.echo(format_table(results))
    click.echo(f"results: {out_dir}/results.json, {out_dir}/results.md, {out_dir}/chart.png")


@command.command("score")
@click.option(
    "--queries",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out records (JSONL), e.g. data/phase7/test.jsonl.",
)
@click.option(
    "--predictions",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL of answers: one object per line with the answer text in `text`, in query order.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@click.option("--name", help="Name of the scored answers in the table. Default: the predictions file's name.")
@click.option(
    "--task",
    "task_name",
    default="tools",
    show_default=True,
    help="The task whose metrics and baselines score the answers: tools, chat or dot (mlx_tune.tasks).",
)
@click.option(
    "--train",
    "train_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With a --task other than tools: training records the baselines may read (default: "
    "train.jsonl beside --queries, when there is one).",
)
@REPOS_OPTION
@REPO_OPTION
@HTML_OPTION
def score_command(
    queries, predictions, out_dir, name, task_name, train_file, repos_dir, repo_opts, html_dir
) -> None:
    """Score answers made elsewhere (an API model, LM Studio, mlx_lm.server) without loading a
    model: the same results.json, results.md and chart.png as `mlx-tune bench`, with baselines."""
    try:
        from mlx_tune.tasks import check_name

        if check_name(task_name) != "tools":
            from mlx_tune.eval.task_score import score_task_predictions

            results = score_task_predictions(
                task_name, queries, predictions, out_dir, name=name, train=train_file
            )
            _finish(results, out_dir)
            return
        results = score_predictions(
            queries,
            predictions,
            out_dir,
            name=name,
            repos_dir=repos_dir,
            html_dir=html_dir,
            roots=named_roots(repo_opts, repos_dir),
        )
    except UserError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        _interrupted(out_dir)
    _finish(results, out_dir)


@command.command("report")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def report_command(out_dir) -> None:
    """Redraw results.md and chart.png in OUT_DIR from its results.json."""
    try:
        results = redraw(out_dir)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(results))
    click.echo(f"redrew {out_dir}/results.md and {out_dir}/chart.png")


main = command
