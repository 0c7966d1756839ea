"""Measure one model for the benchmark: :func:`measure_model` is the step every task shares (load,
decode the held-out queries in batches, answer-token perplexity, peak memory, sizes, load time in
fresh processes), with the task's own use of the loaded model plugged in; :func:`benchmark_model` is
the tools task's (:mod:`mlx_tune.eval.bench`): the agent loop (its first round reused from the
single-turn answers), scoring, and the model's predictions."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_tune.eval import metrics
from mlx_tune.eval.bench_measure import measure_load_time, model_sizes, p95
from mlx_tune.eval.bench_score import AGENT_KEYS, scored_fields, write_predictions

DEFAULT_AGENT_STEPS = 3

# bench.py's logger (not this module's): its handler writes bench.log.
log = logging.getLogger("mlx_tune.eval.bench")


@dataclass
class Measured:
    """One model's measured run (:func:`measure_model`)."""

    gen: Any  # evaluate.Generation: the answers, their tokens and timing
    fields: dict[str, Any]  # the results row's measured fields (bench_score.MEASURED_KEYS and more)
    perplexity: dict[str, tuple[float, Any]]  # {"all": (value, ci), origin: (value, ci), ...}
    extra: Any = None  # what ``with_model`` returned


def measure_model(
    name: str,
    spec: str,
    queries: list[dict],
    *,
    repeats: int,
    max_tokens: int,
    batch_size: int,
    progress: bool = False,
    stop_broken_calls: bool = True,
    perplexity: Callable[[Any, Any, list[dict]], dict] | None = None,
    with_model: Callable[[Any, Any, Any], Any] | None = None,
) -> Measured:
    """Load ``spec``, answer ``queries`` (greedy, batched), take the answer-token perplexity, run
    ``with_model(model, tokenizer, gen)`` (a task's further use of the loaded model, e.g. the agent
    loop; its memory counts in the peak), free the model, then time ``repeats`` loads in fresh
    processes (0: none). ``perplexity(model, tokenizer, queries)`` returns ``{"all": (value, ci),
    ...}`` (default: :func:`mlx_tune.eval.evaluate.perplexity` over all queries, no interval).
    Scoring is the caller's; raises on failure (the caller records the error)."""
    import mlx.core as mx

    from mlx_tune.eval import evaluate
    from mlx_tune.models import model_spec

    model_spec.check_spec(spec)  # a clear error before anything is measured
    fields: dict[str, Any] = model_sizes(spec)
    mx.clear_cache()
    mx.reset_peak_memory()
    model, tokenizer = model_spec.load_model(spec)  # fails fast on a bad spec or a mismatched adapter
    log.info("%s: loaded %s", name, spec)
    gen = evaluate.generate_batched(
        model,
        tokenizer,
        queries,
        max_tokens=max_tokens,
        batch_size=batch_size,
        stop_broken_calls=stop_broken_calls,
        progress=progress,
    )
    if perplexity is not None:
        ppl = perplexity(model, tokenizer, queries)
    else:
        ppl = {"all": (evaluate.perplexity(model, tokenizer, queries), None)}
    extra = with_model(model, tokenizer, gen) if with_model is not None else None
    fields["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    del model, tokenizer
    mx.clear_cache()
    load_times = measure_load_time(spec, repeats) if repeats > 0 else []
    fields.update(
        {
            "load_time_s": statistics.median(load_times) if load_times else None,
            "load_times_s": load_times,
            "prompt_tps": gen.prompt_tps,
            "generation_tps": gen.generation_tps,
            "latency_s_mean": statistics.fmean(gen.latencies),
            "latency_s_p95": p95(gen.latencies),
            "eval_wall_s": gen.wall_time,
            "prompt_tokens": gen.prompt_tokens,
            "shared_prefix_tokens": gen.prefix_tokens,
            "generation_tokens": gen.generation_tokens,
            "stopped_broken_calls": sum(gen.stopped_broken),
            "perplexity": ppl["all"][0],
        }
    )
    return Measured(gen, fields, ppl, extra)


def benchmark_model(
    name: str,
    spec: str,
    queries: list[dict],
    out_dir: Path,
    *,
    repeats: int,
    max_tokens: int,
    batch_size: int,
    progress: bool,
    score_kw: dict | None = None,
    agent_steps: int = DEFAULT_AGENT_STEPS,
) -> dict:
    """Measure one model on the tools task (:func:`measure_model`, then the agent loop and scoring),
    writing its predictions into ``out_dir`` (the staging folder); raises on failure (the caller
    records the error). ``score_kw`` goes to ``metrics.score``; ``agent_steps`` is the agent loop's
    call limit (0: no agent loop)."""
    score_kw = score_kw or {}

    def agent_loop(model, tokenizer, gen) -> dict | None:
        return _agent(model, tokenizer, queries, gen, max_tokens, batch_size, agent_steps, score_kw)

    m = measure_model(
        name,
        spec,
        queries,
        repeats=repeats,
        max_tokens=max_tokens,
        batch_size=batch_size,
        progress=progress,
        with_model=agent_loop,
    )
    gen, agent_run = m.gen, m.extra
    success = agent_run["success"] if agent_run else None
    scored = metrics.score(queries, gen.texts, trajectory_success=success, **score_kw)
    entry: dict[str, Any] = {"name": name, "kind": "model", "spec": spec}
    entry.update(m.fields)
    entry.update({**scored_fields(scored), **dict.fromkeys(AGENT_KEYS), "error": None})
    extra: dict[int, dict] = {i: {"stopped_early": True} for i, s in enumerate(gen.stopped_broken) if s}
    if agent_run:
        entry.update(
            {
                "agent_wall_s": agent_run["wall_time"],
                "agent_mean_steps": agent_run["mean_steps"],
                "agent_tool_errors": agent_run["tool_errors"],
                "agent_step_limit_hits": agent_run["step_limit_hits"],
            }
        )
        for i, r in enumerate(agent_run["results"]):
            extra.setdefault(i, {}).update(
                {"agent_final": r.final, "agent_steps": r.steps, "agent_success": agent_run["success"][i]}
            )
    write_predictions(out_dir, name, gen.texts, scored, extra)
    return entry


def _agent(model, tokenizer, queries, gen, max_tokens, batch_size, max_steps, score_kw) -> dict | None:
    """The agent loop (:mod:`mlx_tune.eval.agent`) on ``queries``, its first round taken from the
    single-turn answers ``gen`` (the same prompts, greedy: the same texts), so only the rounds after
    a tool call are decoded again. ``None`` when ``max_steps`` is 0."""
    from mlx_tune.eval import agent

    if max_steps <= 0:
        return None
    first = [gen]
    batched = agent.batched_generator(model, tokenizer, max_tokens=max_tokens, batch_size=batch_size)

    def generate(convs: list[dict]):
        return first.pop() if first else batched(convs)

    def root_of(record: dict):
        return metrics.repo_root(record, **{k: v for k, v in score_kw.items() if k != "timeout_s"})

    tic = time.perf_counter()
    run = agent.run_agent(queries, root_of, generate, max_steps=max_steps)
    summary = agent.summarize(queries, run, root_of)
    # Round 1 was the single-turn decode: its time is in eval_wall_s, not the loop's.
    summary["wall_time"] = time.perf_counter() - tic
    summary["results"] = run.results
    log.info("agent loop: %s", {k: v for k, v in summary.items() if k not in ("success", "results")})
    return summary
