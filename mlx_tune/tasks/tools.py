"""The ``tools`` task through the task contract (:mod:`mlx_tune.tasks`): tool use over a repository.

A thin adapter: the records, generators, metrics (:func:`mlx_tune.eval.metrics.score`) and baselines
(:mod:`mlx_tune.eval.baselines`) stay where they are; ``mlx-tune bench``, ``data`` and ``demo`` without
``--task`` run this task exactly as before.
"""

from __future__ import annotations

from pathlib import Path

NAME = "tools"
SUMMARY = "tool use over a repository: grep, read or answer directly (the default task)"


def score(queries: list[dict], texts: list[str], *, train: list[dict] | None = None, **score_kw) -> dict:
    """:func:`mlx_tune.eval.metrics.score` (calls run in the folders ``score_kw`` names), plus ``rows``.
    ``train`` is part of the task contract; no tools metric reads it."""
    from mlx_tune.eval import metrics

    scored = metrics.score(queries, texts, **score_kw)
    return {**scored, "rows": scored["per_query"]}


def baselines(queries: list[dict], train: list[dict] | None = None) -> dict[str, list[str]]:
    """The answers of :mod:`mlx_tune.eval.baselines` (they read only the questions, never ``train``)."""
    from mlx_tune.eval import baselines as baselines_mod

    return {name: baselines_mod.answers(name, queries) for name in baselines_mod.BASELINES}


def build_demo_data(out_dir: Path, seed: int = 0) -> dict:
    """The tools demo builds its data in stages (``mlx-tune demo``, :mod:`mlx_tune.demo`)."""
    from mlx_tune import UserError

    raise UserError("the tools task's demo data is built by `mlx-tune demo` itself (its data stages)")
