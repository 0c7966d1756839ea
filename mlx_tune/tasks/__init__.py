"""Tasks: what a fine-tune is for, each in its own module under ``mlx_tune.tasks``.

A task names its record kind, its data generators, its metrics and its baselines:

- ``tools``: tool use over a repository (grep / read / direct), the suite's original task;
- ``chat``: question answering from mixed real and synthetic chat data (:mod:`mlx_tune.tasks.chat`);
- ``dot``: DOT-graph generation from code and descriptions.

Every task module defines ``NAME``, ``SUMMARY`` (one line), ``score(queries, texts)`` (returning
``{"accuracy", "ci", "rows"}``, the shape :func:`mlx_tune.eval.metrics.score` gives), ``baselines(queries,
train)`` (name -> predicted texts) and ``build_demo_data(out_dir, seed)``; optionally ``COLUMNS``
(``(header, key)`` pairs of its accuracy table) and ``CHART_KEYS``. Modules load lazily
(:func:`get_task`), so a missing optional dependency of one task never breaks another, and adding a
task means one line here and its own module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mlx_tune import UserError

DEFAULT_TASK = "tools"
TASK_MODULES = {
    "tools": "mlx_tune.tasks.tools",
    "chat": "mlx_tune.tasks.chat",
    "dot": "mlx_tune.tasks.dot",
}
REQUIRED = ("NAME", "SUMMARY", "score", "baselines", "build_demo_data")
# `mlx-tune data` subcommands that tasks add: command name -> "module:click command".
DATA_COMMANDS = {
    "combine": "mlx_tune.tasks.chat_combine:combine_command",
    "dot-examples": "mlx_tune.tasks.dot_data:dot_examples_command",
}


def task_names() -> list[str]:
    return sorted(TASK_MODULES)


def check_name(name: str, option: str = "--task") -> str:
    """``name`` if it is a registered task, else a ``UserError`` naming ``option`` and the choices."""
    if name not in TASK_MODULES:
        raise UserError(f"{option}: unknown task {name!r} (choose from {', '.join(task_names())})")
    return name


def get_task(name: str, option: str = "--task") -> ModuleType:
    """The module of task ``name`` (imported on first use)."""
    check_name(name, option)
    try:
        module = importlib.import_module(TASK_MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == TASK_MODULES[name]:
            raise UserError(f"{option}: task {name!r} is not available in this installation") from None
        raise UserError(
            f"{option}: task {name!r} needs the package {e.name!r} (pip install {e.name})"
        ) from None
    missing = [k for k in REQUIRED if not hasattr(module, k)]
    if missing:
        raise UserError(f"{option}: task {name!r} ({module.__name__}) lacks {', '.join(missing)}")
    return module


def columns(module: ModuleType, entries: list[dict]) -> list[tuple[str, str]]:
    """The accuracy-table columns of a task: its ``COLUMNS``, else every accuracy key of ``entries``."""
    declared = getattr(module, "COLUMNS", None)
    if declared:
        return list(declared)
    keys: list[str] = []
    for m in entries:
        keys += [k for k in (m.get("accuracy") or {}) if k not in keys]
    return [(k, k) for k in keys]


def data_commands() -> list:
    """The click commands of :data:`DATA_COMMANDS` (one whose module cannot be imported is left out,
    so a task missing a dependency never breaks ``mlx-tune data``)."""
    out = []
    for name, target in DATA_COMMANDS.items():
        module_name, _, attr = target.partition(":")
        try:
            out.append((name, getattr(importlib.import_module(module_name), attr)))
        except ImportError:
            continue
    return out


def record_task(record) -> str:
    """The task a record belongs to: its ``meta.task`` (chat and DOT records name theirs), else
    ``tools`` (training and ``data validate`` check records against ``--task`` with it)."""
    meta = record.get("meta") if isinstance(record, dict) else None
    task = meta.get("task") if isinstance(meta, dict) else None
    return task if isinstance(task, str) and task else "tools"
