"""The chart of a benchmark run, ``chart.png``: accuracy with 95% error bars (models in colour,
baselines grey and hatched, ``n/a`` as an empty hatched marker, never a zero bar) and generation speed.
It reads only the ``results.json`` object (see :mod:`mlx_tune.eval.bench_report`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlx_tune.fileio import atomic_path

CHART_KEYS = (
    "balanced_discrimination",
    "macro_f1",
    "call_match",
    "executable",
    "trajectory_success",
    "rouge_l",
)


def row_label(m: dict) -> str:
    """A row's name in tables and the chart: ``NAME (baseline)`` for a baseline."""
    return f"{m['name']} (baseline)" if m.get("kind") == "baseline" else m["name"]


def _finite(v: Any) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:
        return False


def _literal(text: str) -> str:
    """``text`` as matplotlib draws it literally: a ``$`` would start math text (and an unknown
    symbol in it would fail the whole chart)."""
    return text.replace("$", r"\$")


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
    task = (results.get("settings") or {}).get("task")
    if task not in (None, "tools"):  # another task's figures (mlx_tune.tasks)
        from mlx_tune.tasks import columns, get_task

        module = get_task(task, "settings.task")
        keys = list(getattr(module, "CHART_KEYS", ())) or [k for _, k in columns(module, entries)]
    speeds = [m for m in entries if m.get("kind") != "baseline" and _finite(m.get("generation_tps"))]
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
        label = _literal(row_label(m))
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
        ax2.bar([_literal(m["name"]) for m in speeds], [m["generation_tps"] for m in speeds],
                color=[colours(i % 10) for i in range(len(speeds))])  # fmt: skip
        ax2.set_title("generation tokens/s")
        ax2.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
