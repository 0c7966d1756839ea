"""Reporting of benchmark results: the console tables, ``results.md`` and ``chart.png``.

Everything here reads only the ``results.json`` object, so ``mlx-tune bench report DIR`` redraws
``results.md`` and the chart from a saved run. Accuracy figures carry their 95% intervals
(``71% [62-79]``); ``n/a`` marks a figure that does not apply (no query qualifies), which the
chart draws as an empty hatched marker, never as a zero bar. Baseline rows (``kind: baseline``)
are drawn in grey.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_tune import UserError
from mlx_tune.eval.bench_chart import CHART_KEYS, plot_results  # noqa: F401  (public here too)
from mlx_tune.eval.bench_chart import row_label as _label
from mlx_tune.eval.metrics import ACCURACY_KEYS, PREDICTED_CATEGORIES  # noqa: F401  (ACCURACY_KEYS: public here too)
from mlx_tune.fileio import value_problem, write_text

# Accuracy table columns: (header, key); rouge_l is a mean F1, shown as a decimal.
_ACC_COLUMNS = (
    ("balanced", "balanced_discrimination"),
    ("macro-F1", "macro_f1"),
    ("tool rec", "tool_recall"),
    ("direct rec", "direct_recall"),
    ("call match", "call_match"),
    ("exec", "executable"),
    ("valid", "call_validity"),
    ("agent", "trajectory_success"),
    ("rouge-L", "rouge_l"),
    ("discrim", "discrimination"),
    ("category", "category"),
)

log = logging.getLogger("mlx_tune.eval.bench")


def _num(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}f}"


# Speed table columns after the model name: (header, key of a model row, digits, unit it is divided by).
_SPEED_COLUMNS = (
    ("load s", "load_time_s", 2, 1),
    ("prompt tok/s", "prompt_tps", 0, 1),
    ("gen tok/s", "generation_tps", 1, 1),
    ("lat mean s", "latency_s_mean", 2, 1),
    ("lat p95 s", "latency_s_p95", 2, 1),
    ("agent s", "agent_wall_s", 1, 1),
    ("peak GB", "peak_memory_gb", 2, 1),
    ("size MB", "size_bytes", 1, 1e6),
    ("adapter MB", "adapter_bytes", 2, 1e6),
    ("trainable", "trainable_params", 0, 1),
    ("ppl", "perplexity", 2, 1),
)


def _speed_cell(m: dict, key: str, digits: int, unit: float) -> str:
    v = m.get(key)
    return _num(v / unit if v is not None and unit != 1 else v, digits)


def figure(value: float | None, interval: list[float] | None, key: str = "") -> str:
    """``71% [62-79]`` (``0.31 [0.25-0.37]`` for ROUGE-L, ``12.3 [10.1-15.0]`` for a perplexity); ``n/a``
    for a figure that does not apply."""
    if value is None:
        return "n/a"
    if key.split("/")[0] in ("rouge_l", "perplexity"):
        digits = 2 if key.startswith("rouge_l") or value < 10 else 1
        ci = f" [{interval[0]:.{digits}f}-{interval[1]:.{digits}f}]" if interval else ""
        return f"{value:.{digits}f}{ci}"
    ci = f" [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}]" if interval else ""
    return f"{100 * value:.0f}%{ci}"


def task_columns(results: dict) -> tuple[tuple[str, str], ...]:
    """The accuracy columns of the run's task (``settings.task``; the tools task's without one)."""
    task = (results.get("settings") or {}).get("task")
    if task in (None, "tools"):
        return _ACC_COLUMNS
    from mlx_tune.tasks import columns, get_task

    return tuple(columns(get_task(task, "settings.task"), results.get("models") or []))


def _acc_rows(entries: list[dict], columns=_ACC_COLUMNS) -> list[list[str]]:
    rows = []
    for m in entries:
        acc, ci = m.get("accuracy") or {}, m.get("ci") or {}
        if m.get("error"):
            rows.append([_label(m)] + ["-"] * len(columns))
            continue
        rows.append([_label(m)] + [figure(acc.get(k), ci.get(k), k) for _, k in columns])
    return rows


def _accuracy_table(entries: list[dict], columns=_ACC_COLUMNS) -> tuple[list[str], list[list[str]]]:
    return _keep(["model", *(h for h, _ in columns)], _acc_rows(entries, columns))


def _keep(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Drop the agent column when no row has an agent figure."""
    if "agent" in header or "agent s" in header:
        col = header.index("agent") if "agent" in header else header.index("agent s")
        if all(r[col] in ("n/a", "-") for r in rows):
            header = header[:col] + header[col + 1 :]
            rows = [r[:col] + r[col + 1 :] for r in rows]
    return header, rows


def _models(results: dict) -> list[dict]:
    return [m for m in results.get("models", []) if m.get("kind") != "baseline"]


def _plain(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _speed(results: dict) -> tuple[list[str], list[list[str]]]:
    ok = [m for m in _models(results) if not m.get("error")]
    header = ["model", *(c[0] for c in _SPEED_COLUMNS)]
    return _keep(header, [[m["name"], *(_speed_cell(m, *c[1:]) for c in _SPEED_COLUMNS)] for m in ok])


def _settings_line(results: dict) -> str:
    s = results.get("settings") or {}
    if s.get("mode") == "score":
        return f"{s.get('n_queries', '?')} queries from {s.get('queries', '?')}, answers from {s.get('predictions', '?')}"
    return (
        f"{s.get('n_queries', '?')} queries from {s.get('queries', '?')}, greedy, "
        f"max {s.get('max_tokens', '?')} tokens, batch {s.get('batch_size', '?')}"
    )


def _missing_note(results: dict) -> str:
    s = results.get("settings") or {}
    missing = s.get("missing_repos") or []
    if not missing:
        return ""
    return (
        f"NOTE: no folder for repositories {', '.join(missing)} in {s.get('repos_dir')} "
        f"(HTML: {s.get('html_dir')}): their queries' call metrics are not checked."
    )


def format_table(results: dict) -> str:
    """Accuracy (models and baselines, with 95% intervals) and speed tables as plain text."""
    lines = _plain(*_accuracy_table(results["models"], task_columns(results)))
    header, rows = _speed(results)
    if rows and any(c != "-" for r in rows for c in r[1:]):
        lines += ["", *_plain(header, rows)]
    lines.append(_settings_line(results) + "; 95% intervals in brackets")
    if _missing_note(results):
        lines.append(_missing_note(results))
    lines += [f"FAILED {m['name']}: {m['error']}" for m in results["models"] if m.get("error")]
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """``results.md``: settings, the accuracy and speed tables, subsets, confusion, failures."""
    s, v, mach = (results.get(k) or {} for k in ("settings", "versions", "machine"))
    out = ["# Benchmark results", "", _settings_line(results) + "."]
    if s.get("mode") != "score":
        repeats = s.get("repeats")
        out.append(
            f"Load time: median of {repeats} fresh processes." if repeats else "Load time: not measured."
        )
    task = s.get("task") or "tools"
    out += [
        f"mlx {v.get('mlx')}, mlx-lm {v.get('mlx_lm')}, mlx_tune {v.get('mlx_tune')} on "
        f"{mach.get('platform')} ({mach.get('mlx_device', 'no model run')}).",
        "",
        "## Accuracy",
        "",
        *([_missing_note(results), ""] if _missing_note(results) else []),
        (
            "Percentages with 95% intervals in brackets (Wilson for shares of queries; seeded bootstrap "
            "for balanced discrimination, macro-F1 and ROUGE-L); `n/a` where no query qualifies. "
            "Baselines need no model (see `mlx_tune/eval/baselines.py`)."
            if task == "tools"
            else f"Task `{task}`: its metrics and baselines are defined in `mlx_tune/tasks/{task}.py`, "
            "95% intervals in brackets (Wilson for shares of queries, a seeded bootstrap for means); "
            "`n/a` where no query qualifies. Baselines need no model."
        ),
        "",
        *_md(*_accuracy_table(results["models"], task_columns(results))),
    ]
    header, rows = _speed(results)
    if rows and any(c != "-" for r in rows for c in r[1:]):
        out += ["", "## Speed, memory and size", "", *_md(header, rows)]
    for name, a in sorted((results.get("fused_agreement") or {}).items()):
        out += ["", f"Fused vs adapter: {name} answers exactly as {a['adapter']} on {100 * a['identical']:.0f}% "
                f"of {a['queries']} queries (greedy)."]  # fmt: skip
    subset_entries = [
        {**m, "accuracy": m["subsets"][name]["accuracy"], "ci": m["subsets"][name]["ci"]}
        for name in ("unseen_template",)
        for m in results["models"]
        if (m.get("subsets") or {}).get(name)
    ]
    if subset_entries:
        n = subset_entries[0]["subsets"]["unseen_template"]["n"]
        out += ["", f"## Unseen phrasing ({n} queries whose question template training never saw)", ""]
        out += _md(*_accuracy_table(subset_entries))
    for m in _models(results):
        if m.get("confusion"):
            rows_in = m["confusion"]
            cols = _ordered(next(iter(rows_in.values())), PREDICTED_CATEGORIES)
            out += ["", f"## {m['name']}: confusion (rows expected, columns predicted)", ""]
            body = [
                [e, *(str(rows_in[e].get(c, 0)) for c in cols)]
                for e in _ordered(rows_in, PREDICTED_CATEGORIES)
            ]
            out += _md(["expected", *cols], body)
    failed = [m for m in results["models"] if m.get("error")]
    if failed:
        out += ["", "## Failures", ""] + [
            f"- **{m['name']}** (`{m.get('spec')}`): {m['error']}" for m in failed
        ]
    return "\n".join(out) + "\n"


def _ordered(keys, order) -> list[str]:
    """``keys`` in ``order`` first, then any others sorted (results.json stores keys sorted)."""
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def load_results(out_dir: str | Path) -> dict:
    """``out_dir/results.json``, checked by :func:`results_problems`: a missing file, one that is not
    UTF-8 or not JSON, or a field of the wrong type or shape is a ``UserError`` naming the file and
    every such field."""
    path = Path(out_dir) / "results.json"
    try:
        text = path.read_bytes().decode("utf-8")
        results = json.loads(text)
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file (run `mlx-tune bench` or `mlx-tune bench score` first)"
        ) from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not a results file: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a results file: line {e.lineno} column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # a 5000-digit number; nesting
        what = "nested too deeply" if not isinstance(e, ValueError) else str(e).split(":")[0]
        raise UserError(f"{path}: not a results file: {what}") from None
    bad = value_problem(results)
    problems = [f"not a results file: {bad}"] if bad else results_problems(results)
    if len(problems) == 1:
        raise UserError(f"{path}: {problems[0]}")
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems[:20]) + more)
    return results


def _number(v: Any, finite: bool = False) -> bool:
    """A JSON number (not true/false) that converts to a float (``finite``: not nan or inf either)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        f = float(v)
    except OverflowError:  # an integer too large for a float
        return False
    return not finite or math.isfinite(f)


# What each kind of field must be, and how an error message names it.
_KINDS: dict[str, Callable[[Any], bool]] = {
    "an object": lambda v: isinstance(v, dict),
    "a list": lambda v: isinstance(v, list),
    "a string": lambda v: isinstance(v, str),
    "a number": _number,
    "a finite number": lambda v: _number(v, finite=True),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and _number(v),
    "an interval [low, high]": lambda v: (
        isinstance(v, list) and len(v) == 2 and all(_number(x, finite=True) for x in v)
    ),
}


def _described(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return "a number too large" if not _number(v) else repr(v)[:24]
    return next(k for k in ("an object", "a list", "a string") if _KINDS[k](v))


def _field(key: str) -> str:
    """A key as a message shows it: plain names as they are, others quoted and cut short."""
    return key if re.fullmatch(r"[\w.-]{1,40}", key) else json.dumps(key)[:40]


def results_problems(results: Any) -> list[str]:
    """Every field of a ``results.json`` object that the report reads and that has the wrong type or
    shape, as ``field: expected ..., got ...`` (empty for a file the benchmark wrote). Checked once
    on load, so the rendering can trust every field it reads."""
    found: list[str] = []

    def ok(where: str, value: Any, kind: str, null: bool = True) -> bool:
        """Whether ``value`` is present and of ``kind``; notes a problem unless it is (or may be) null."""
        if value is None and null:
            return False
        if _KINDS[kind](value):
            return True
        found.append(f"{where}: expected {kind}{' or null' if null else ''}, got {_described(value)}")
        return False

    def table(where: str, value: Any, kind: str, null: bool = True) -> None:
        """An object whose every value is of ``kind`` or null (``accuracy``, ``ci``, a confusion row)."""
        if ok(where, value, "an object", null):
            for key, cell in value.items():
                ok(f"{where}.{_field(key)}", cell, kind, null=kind != "an integer")

    if not isinstance(results, dict):
        return [f"not a results file: expected an object, got {_described(results)}"]
    for key in ("settings", "versions", "machine", "fused_agreement"):
        ok(key, results.get(key), "an object")
    settings, fused = results.get("settings"), results.get("fused_agreement")
    if isinstance(settings, dict) and ok("settings.missing_repos", settings.get("missing_repos"), "a list"):
        for i, name in enumerate(settings["missing_repos"]):
            ok(f"settings.missing_repos[{i}]", name, "a string", null=False)
    for name, a in fused.items() if isinstance(fused, dict) else ():
        at = f"fused_agreement.{_field(name)}"
        if ok(at, a, "an object", null=False):
            ok(f"{at}.adapter", a.get("adapter"), "a string", null=False)
            ok(f"{at}.identical", a.get("identical"), "a finite number", null=False)
            ok(f"{at}.queries", a.get("queries"), "an integer", null=False)
    if not ok("models", results.get("models"), "a list", null=False):
        return found
    for i, m in enumerate(results["models"]):
        where = f"models[{i}]"
        if not isinstance(m, dict):
            found.append(f"{where}: expected an object with a 'name', got {_described(m)}")
            continue
        ok(f"{where}.name", m.get("name"), "a string", null=False)
        for key in ("kind", "spec", "error"):
            ok(f"{where}.{key}", m.get(key), "a string")
        for _, key, _, _ in _SPEED_COLUMNS:
            ok(f"{where}.{key}", m.get(key), "a number")
        table(f"{where}.accuracy", m.get("accuracy"), "a finite number")
        table(f"{where}.ci", m.get("ci"), "an interval [low, high]")
        if ok(f"{where}.confusion", m.get("confusion"), "an object"):
            for expected, row in m["confusion"].items():
                table(f"{where}.confusion.{_field(expected)}", row, "an integer", null=False)
        if ok(f"{where}.subsets", m.get("subsets"), "an object"):
            sub, at = m["subsets"].get("unseen_template"), f"{where}.subsets.unseen_template"
            if ok(at, sub, "an object"):
                ok(f"{at}.n", sub.get("n"), "an integer", null=False)
                table(f"{at}.accuracy", sub.get("accuracy"), "a finite number", null=False)
                table(f"{at}.ci", sub.get("ci"), "an interval [low, high]", null=False)
    return found


def redraw(out_dir: str | Path) -> dict:
    """Rewrite ``results.md`` and ``chart.png`` in ``out_dir`` from its ``results.json``."""
    results = load_results(out_dir)
    write_text(Path(out_dir) / "results.md", format_markdown(results))
    plot_results(results, Path(out_dir) / "chart.png")
    return results
