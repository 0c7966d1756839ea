"""Reporting of benchmark results: the console table, ``results.md`` and the PNG chart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlx_tune.fileio import atomic_path

ACCURACY_KEYS = ("discrimination", "category", "call_validity", "executable", "rouge_l")

log = logging.getLogger("mlx_tune.bench")

_COLUMNS = (
    ("model", lambda m: m["name"]),
    ("load s", lambda m: _num(m.get("load_time_s"), 2)),
    ("prompt tok/s", lambda m: _num(m.get("prompt_tps"), 0)),
    ("gen tok/s", lambda m: _num(m.get("generation_tps"), 1)),
    ("lat mean s", lambda m: _num(m.get("latency_s_mean"), 2)),
    ("lat p95 s", lambda m: _num(m.get("latency_s_p95"), 2)),
    ("peak GB", lambda m: _num(m.get("peak_memory_gb"), 2)),
    ("size MB", lambda m: _num(m["size_bytes"] / 1e6 if m.get("size_bytes") is not None else None, 1)),
    (
        "adapter MB",
        lambda m: _num(m["adapter_bytes"] / 1e6 if m.get("adapter_bytes") is not None else None, 2),
    ),
    ("trainable", lambda m: _num(m.get("trainable_params"), 0)),
    ("discrim", lambda m: _pct(m, "discrimination")),
    ("category", lambda m: _pct(m, "category")),
    ("valid", lambda m: _pct(m, "call_validity")),
    ("exec", lambda m: _pct(m, "executable")),
    ("rouge-L", lambda m: _num((m.get("accuracy") or {}).get("rouge_l"), 3)),
    ("ppl", lambda m: _num(m.get("perplexity"), 2)),
)


def _num(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}f}"


def _pct(m: dict, key: str) -> str:
    v = (m.get("accuracy") or {}).get(key)
    return "-" if v is None else f"{100 * v:.1f}%"


def _rows(results: dict) -> list[list[str]]:
    return [[fn(m) for _, fn in _COLUMNS] for m in results["models"]]


def format_table(results: dict) -> str:
    """The results as an aligned plain-text table (failed models listed below it)."""
    header = [h for h, _ in _COLUMNS]
    rows = _rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = results.get("settings", {})
    lines.append(
        f"{s.get('n_queries', '?')} queries from {s.get('queries', '?')}, greedy, "
        f"max {s.get('max_tokens', '?')} tokens, batch {s.get('batch_size', '?')}"
    )
    lines += [f"FAILED {m['name']}: {m['error']}" for m in results["models"] if m.get("error")]
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """``results.md``: settings, the table, each model's confusion matrix, failures."""
    s, v, mach = results.get("settings", {}), results.get("versions", {}), results.get("machine", {})
    out = [
        "# Benchmark results",
        "",
        f"{s.get('n_queries')} queries from `{s.get('queries')}`; greedy decoding, max {s.get('max_tokens')} "
        f"tokens, batch size {s.get('batch_size')}, load time median of {s.get('repeats')} fresh processes.",
        f"mlx {v.get('mlx')}, mlx-lm {v.get('mlx_lm')}, mlx_tune {v.get('mlx_tune')} on "
        f"{mach.get('platform')} ({mach.get('mlx_device')}).",
        "",
        "| " + " | ".join(h for h, _ in _COLUMNS) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(_COLUMNS))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in _rows(results)]
    for m in results["models"]:
        if m.get("confusion"):
            cols = list(next(iter(m["confusion"].values())))
            out += [
                "",
                f"## {m['name']}: confusion (rows expected, columns predicted)",
                "",
                "| expected | " + " | ".join(cols) + " |",
                "|---|" + "---:|" * len(cols),
            ]
            out += [
                f"| {e} | " + " | ".join(str(row[c]) for c in cols) + " |"
                for e, row in m["confusion"].items()
            ]
    failed = [m for m in results["models"] if m.get("error")]
    if failed:
        out += ["", "## Failures", ""] + [f"- **{m['name']}** (`{m['spec']}`): {m['error']}" for m in failed]
    return "\n".join(out) + "\n"


def plot_results(results: dict, path: Path) -> bool:
    """A PNG of accuracy and generation speed per model; ``False`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed (extra `plot`): no chart")
        return False
    ok = [m for m in results["models"] if not m.get("error")]
    if not ok:
        return False
    names = [m["name"] for m in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(ok), 4.5))
    width = 0.8 / len(ACCURACY_KEYS)
    for j, key in enumerate(ACCURACY_KEYS):
        vals = [(m["accuracy"].get(key) or 0.0) for m in ok]
        ax1.bar([i + j * width for i in range(len(ok))], vals, width, label=key)
    ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(ok))], names, rotation=20)
    ax1.set_ylim(0, 1)
    ax1.set_title("accuracy")
    ax1.legend(fontsize=7)
    ax2.bar(names, [m.get("generation_tps") or 0.0 for m in ok])
    ax2.set_title("generation tokens/s")
    ax2.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
