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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_tune import UserError
from mlx_tune.fileio import atomic_path, write_text
from mlx_tune.metrics import ACCURACY_KEYS, PREDICTED_CATEGORIES  # noqa: F401  (ACCURACY_KEYS: public here too)

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
CHART_KEYS = (
    "balanced_discrimination",
    "macro_f1",
    "call_match",
    "executable",
    "trajectory_success",
    "rouge_l",
)

log = logging.getLogger("mlx_tune.bench")


def _num(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}f}"


def _mb(v: Any, digits: int) -> str:
    return _num(v / 1e6 if v is not None else None, digits)


_SPEED_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("model", lambda m: m["name"]),
    ("load s", lambda m: _num(m.get("load_time_s"), 2)),
    ("prompt tok/s", lambda m: _num(m.get("prompt_tps"), 0)),
    ("gen tok/s", lambda m: _num(m.get("generation_tps"), 1)),
    ("lat mean s", lambda m: _num(m.get("latency_s_mean"), 2)),
    ("lat p95 s", lambda m: _num(m.get("latency_s_p95"), 2)),
    ("agent s", lambda m: _num(m.get("agent_wall_s"), 1)),
    ("peak GB", lambda m: _num(m.get("peak_memory_gb"), 2)),
    ("size MB", lambda m: _mb(m.get("size_bytes"), 1)),
    ("adapter MB", lambda m: _mb(m.get("adapter_bytes"), 2)),
    ("trainable", lambda m: _num(m.get("trainable_params"), 0)),
    ("ppl", lambda m: _num(m.get("perplexity"), 2)),
)


def figure(value: float | None, interval: list[float] | None, key: str = "") -> str:
    """``71% [62-79]`` (``0.31 [0.25-0.37]`` for ROUGE-L); ``n/a`` for a figure that does not apply."""
    if value is None:
        return "n/a"
    if key == "rouge_l":
        ci = f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""
        return f"{value:.2f}{ci}"
    ci = f" [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}]" if interval else ""
    return f"{100 * value:.0f}%{ci}"


def _label(m: dict) -> str:
    return f"{m['name']} (baseline)" if m.get("kind") == "baseline" else m["name"]


def _acc_rows(entries: list[dict]) -> list[list[str]]:
    rows = []
    for m in entries:
        acc, ci = m.get("accuracy") or {}, m.get("ci") or {}
        if m.get("error"):
            rows.append([_label(m)] + ["-"] * len(_ACC_COLUMNS))
            continue
        rows.append([_label(m)] + [figure(acc.get(k), ci.get(k), k) for _, k in _ACC_COLUMNS])
    return rows


def _accuracy_table(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    return _keep(["model", *(h for h, _ in _ACC_COLUMNS)], _acc_rows(entries))


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
    return _keep([h for h, _ in _SPEED_COLUMNS], [[fn(m) for _, fn in _SPEED_COLUMNS] for m in ok])


def _settings_line(results: dict) -> str:
    s = results.get("settings", {})
    if s.get("mode") == "score":
        return f"{s.get('n_queries', '?')} queries from {s.get('queries', '?')}, answers from {s.get('predictions', '?')}"
    return (
        f"{s.get('n_queries', '?')} queries from {s.get('queries', '?')}, greedy, "
        f"max {s.get('max_tokens', '?')} tokens, batch {s.get('batch_size', '?')}"
    )


def _missing_note(results: dict) -> str:
    s = results.get("settings", {})
    missing = s.get("missing_repos") or []
    if not missing:
        return ""
    return (
        f"NOTE: no folder for repositories {', '.join(missing)} in {s.get('repos_dir')} "
        f"(HTML: {s.get('html_dir')}): their queries' call metrics are not checked."
    )


def format_table(results: dict) -> str:
    """Accuracy (models and baselines, with 95% intervals) and speed tables as plain text."""
    lines = _plain(*_accuracy_table(results["models"]))
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
    s, v, mach = results.get("settings", {}), results.get("versions", {}), results.get("machine", {})
    out = ["# Benchmark results", "", _settings_line(results) + "."]
    if s.get("mode") != "score":
        out.append(f"Load time: median of {s.get('repeats')} fresh processes.")
    out += [
        f"mlx {v.get('mlx')}, mlx-lm {v.get('mlx_lm')}, mlx_tune {v.get('mlx_tune')} on "
        f"{mach.get('platform')} ({mach.get('mlx_device', 'no model run')}).",
        "",
        "## Accuracy",
        "",
        *([_missing_note(results), ""] if _missing_note(results) else []),
        "Percentages with 95% intervals in brackets (Wilson for shares of queries; seeded bootstrap "
        "for balanced discrimination, macro-F1 and ROUGE-L); `n/a` where no query qualifies. "
        "Baselines need no model (see `mlx_tune/baselines.py`).",
        "",
        *_md(*_accuracy_table(results["models"])),
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


def plot_results(results: dict, path: Path) -> bool:
    """Draw ``chart.png``: accuracy with 95% error bars (models in colour, baselines grey, ``n/a``
    as an empty hatched marker) and generation speed; ``False`` when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [m for m in results.get("models", []) if not m.get("error")]
    if not entries:
        return False
    keys = [
        k
        for k in CHART_KEYS
        if k != "trajectory_success" or any((m.get("accuracy") or {}).get(k) is not None for m in entries)
    ]
    speeds = [m for m in entries if m.get("kind") != "baseline" and m.get("generation_tps") is not None]
    wide = 6 + 0.9 * len(keys) * max(1, len(entries)) / 3
    if speeds:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(wide + 2, 5.2), width_ratios=[3, 1])
    else:
        fig, ax1 = plt.subplots(figsize=(wide, 5.2))
    width = 0.8 / len(entries)
    colours = plt.get_cmap("tab10")
    greys = ["0.55", "0.7", "0.82", "0.45", "0.9"]
    n_model = n_base = 0
    for j, m in enumerate(entries):
        if m.get("kind") == "baseline":
            colour, hatch = greys[n_base % len(greys)], "..."
            n_base += 1
        else:
            colour, hatch = colours(n_model % 10), None
            n_model += 1
        acc, ci = m.get("accuracy") or {}, m.get("ci") or {}
        label = _label(m)
        for i, key in enumerate(keys):
            x = i + (j - (len(entries) - 1) / 2) * width
            value = acc.get(key)
            if value is None:  # not applicable: an empty hatched marker, never a zero bar
                ax1.bar(x, 0.04, width, facecolor="none", edgecolor="0.4", hatch="///", linewidth=0.6)
                ax1.text(x, 0.05, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
                continue
            err = None
            if ci.get(key):
                low, high = ci[key]
                err = [[max(0.0, value - low)], [max(0.0, high - value)]]
            ax1.bar(x, value, width, color=colour, hatch=hatch, edgecolor="0.3" if hatch else None,
                    label=label, yerr=err, capsize=2, error_kw={"linewidth": 0.8})  # fmt: skip
            label = None
    ax1.set_xticks(range(len(keys)), [k.replace("_", "\n") for k in keys], fontsize=8)
    ax1.set_ylim(0, 1.05)
    ax1.set_title("accuracy (bars: 95% intervals; grey: baselines)")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(4, len(entries)))
    if speeds:
        ax2.bar([m["name"] for m in speeds], [m["generation_tps"] for m in speeds],
                color=[colours(i % 10) for i in range(len(speeds))])  # fmt: skip
        ax2.set_title("generation tokens/s")
        ax2.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def load_results(out_dir: str | Path) -> dict:
    """``out_dir/results.json``; a missing or malformed file is a ``UserError``."""
    path = Path(out_dir) / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file (run `mlx-tune bench` or `mlx-tune bench score` first)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not a results file: {type(e).__name__}") from None
    if not isinstance(results, dict) or not isinstance(results.get("models"), list):
        raise UserError(f"{path}: not a results file (no 'models' list)")
    for i, m in enumerate(results["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise UserError(f"{path}: models[{i}]: expected an object with a 'name'")
        for key in ("accuracy", "ci"):
            table = m.get(key)
            if table is not None and not isinstance(table, dict):
                raise UserError(f"{path}: models[{i}].{key}: expected an object")
            for metric, value in (table or {}).items():
                if not _figure_ok(value, key == "ci"):
                    raise UserError(f"{path}: models[{i}].{key}.{metric}: {value!r} is not a figure")
    return results


def _figure_ok(value: Any, interval: bool) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if value is None:
        return True
    if interval:
        return isinstance(value, list) and len(value) == 2 and all(number(v) for v in value)
    return number(value)


def redraw(out_dir: str | Path) -> dict:
    """Rewrite ``results.md`` and ``chart.png`` in ``out_dir`` from its ``results.json``."""
    results = load_results(out_dir)
    write_text(Path(out_dir) / "results.md", format_markdown(results))
    plot_results(results, Path(out_dir) / "chart.png")
    return results
