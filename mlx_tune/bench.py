"""Benchmark models side by side: ``python -m mlx_tune.bench`` (also ``mlx-tune bench``).

For each model (a base folder or Hugging Face id, ``BASE@ADAPTER_DIR`` for a LoRA adapter on its
base, or a fused folder) it measures load time (median over fresh processes), prompt and
generation tokens/s, latency per query, peak memory, size on disk, adapter size and trainable
parameters, accuracy on one held-out query set (see :mod:`mlx_tune.metrics`) and answer-token
perplexity. It writes ``results.json``, ``results.md``, ``bench.log``, ``predictions/<name>.jsonl``
and, with matplotlib installed (extra ``plot``), ``chart.png``. A model that fails is listed with
its ``error``; the others are still measured.

Answers are decoded greedily in batches (:func:`mlx_tune.evaluate.generate_batched`) and stop when
complete, or as soon as their tool call's JSON is broken (counted in ``stopped_broken_calls``,
marked ``stopped_early`` in the predictions): the rest of such an answer cannot change a score.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from mlx_tune import UserError, records
from mlx_tune.bench_report import ACCURACY_KEYS, format_markdown, format_table, plot_results
from mlx_tune.fileio import iter_jsonl, sha256_file, write_json, write_jsonl, write_text

DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32

log = logging.getLogger("mlx_tune.bench")
log.propagate = False  # bench.log gets the details; the console gets the table

# Runs in a fresh interpreter: load the model, materialise the weights, compute one token's logits.
_LOAD_PROBE = r"""
import json, sys, time
import mlx.core as mx
import mlx_lm
t0 = time.perf_counter()
model, tokenizer = mlx_lm.load(sys.argv[1], adapter_path=sys.argv[2] or None)
mx.eval(model.parameters())
mx.eval(model(mx.array([[0]])))
print(json.dumps({"load_time_s": time.perf_counter() - t0}))
"""


# ---------------------------------------------------------------- inputs


def default_queries(root: str | os.PathLike = ".") -> Path:
    """``data/phase7/test.jsonl``, else the highest ``data/phaseN/test.jsonl``."""
    root = Path(root)
    preferred = root / "data/phase7/test.jsonl"
    if preferred.is_file():
        return preferred
    found = sorted(
        (int(m.group(1)), p)
        for p in root.glob("data/phase*/test.jsonl")
        if (m := re.fullmatch(r"phase(\d+)", p.parent.name))
    )
    if not found:
        raise UserError(
            "no held-out queries: data/phaseN/test.jsonl not found (run `mlx-tune data merge`) "
            "or pass --queries FILE"
        )
    return found[-1][1]


def load_queries(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Read and check a held-out query file (records); a bad line is a ``UserError`` naming it."""
    path = Path(path)
    out = []
    for lineno, record in iter_jsonl(path):
        problems = records.validate_record(record)
        if problems:
            raise UserError(f"{path}:{lineno}: {problems[0]}")
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{path}: no queries (the file is empty)")
    return out


def phase_base_model(root: Path) -> str | None:
    """``train.model`` of the highest-numbered phase config that names one."""
    import yaml

    best = None
    for p in sorted(root.glob("data/phases/phase*.yaml")):
        m = re.fullmatch(r"phase(\d+)\.yaml", p.name)
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        model = (cfg.get("train") or {}).get("model") if isinstance(cfg, dict) else None
        if m and isinstance(model, str) and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), model)
    return best[1] if best else None


def default_models(root: str | os.PathLike = ".") -> dict[str, str]:
    """What exists: the base named in the phase configs, each ``adapters/phaseN`` adapter (on the
    base its ``adapter_config.json`` names), each fused ``models/*-fused-*`` folder."""
    root = Path(root)
    base = phase_base_model(root)
    models: dict[str, str] = {}
    if base:
        models["base"] = base
    for d in sorted(root.glob("adapters/phase*"), key=lambda p: (len(p.name), p.name)):
        if (d / "adapters.safetensors").is_file():
            on = adapter_base_model(d) or base
            if on:
                models[d.name] = f"{on}@{_rel(d, root)}"
    for d in sorted(root.glob("models/*-fused-*")):
        if (d / "config.json").is_file():
            models[d.name] = _rel(d, root)
    return models


def adapter_base_model(adapter_dir: Path) -> str | None:
    """The ``model`` an adapter was trained on, from its ``adapter_config.json`` (or ``None``)."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    model = cfg.get("model")
    return model if isinstance(model, str) else None


def _rel(p: Path, root: Path) -> str:
    return str(p) if root == Path(".") else str(p.relative_to(root))


def parse_model_options(options: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``NAME=SPEC`` options (a bare ``SPEC`` is named after its last path part)."""
    models: dict[str, str] = {}
    for opt in options:
        name, sep, spec = opt.partition("=")
        if not sep:
            name, spec = Path(opt.split("@")[-1].rstrip("/")).name or opt, opt
        if not name or not spec:
            raise UserError(f"--model {opt!r}: expected NAME=SPEC (SPEC: MODEL or MODEL@ADAPTER_DIR)")
        if name in models:
            raise UserError(f"--model {opt!r}: the name {name!r} is used twice")
        models[name] = spec
    return models


# ---------------------------------------------------------------- measuring


def measure_load_time(spec: str, repeats: int = 3) -> list[float]:
    """Seconds from ``mlx_lm.load`` to the first token's logits, each run in a fresh process."""
    from mlx_tune.evaluate import check_spec

    base, adapter = check_spec(spec)
    times = []
    for _ in range(max(repeats, 0)):
        proc = subprocess.run(
            [sys.executable, "-c", _LOAD_PROBE, base, adapter or ""],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"model {spec}: load probe failed: {tail}")
        times.append(json.loads(proc.stdout.strip().splitlines()[-1])["load_time_s"])
    return times


def dir_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def safetensors_params(path: str | os.PathLike) -> int:
    """Number of parameters stored in a safetensors file (read from its header only)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def model_sizes(spec: str) -> dict[str, Any]:
    """``size_bytes`` (base folder plus adapter), ``adapter_bytes``, ``trainable_params``."""
    from mlx_tune.evaluate import parse_spec

    base, adapter = parse_spec(spec)
    base_path = Path(base)
    if not base_path.exists():
        try:
            from mlx_lm.utils import hf_repo_to_path

            base_path = hf_repo_to_path(base)
        except Exception:
            base_path = None
    size = dir_bytes(base_path) if base_path is not None else None
    out: dict[str, Any] = {"size_bytes": size, "adapter_bytes": None, "trainable_params": None}
    if adapter:
        weights = Path(adapter) / "adapters.safetensors"
        out["adapter_bytes"] = weights.stat().st_size
        out["trainable_params"] = safetensors_params(weights)
        out["size_bytes"] = (size or 0) + out["adapter_bytes"] if size is not None else None
    return out


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


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
) -> dict:
    """Measure one model; raises on failure (the caller records the error)."""
    import mlx.core as mx

    from mlx_tune import evaluate, metrics

    evaluate.check_spec(spec)  # a clear error before anything is measured
    entry: dict[str, Any] = {"name": name, "spec": spec}
    entry.update(model_sizes(spec))
    mx.clear_cache()
    mx.reset_peak_memory()
    model, tokenizer = evaluate.load_model(spec)  # fails fast on a bad spec or a mismatched adapter
    log.info("%s: loaded %s", name, spec)
    gen = evaluate.generate_batched(
        model, tokenizer, queries, max_tokens=max_tokens, batch_size=batch_size, progress=progress
    )
    ppl = evaluate.perplexity(model, tokenizer, queries)
    entry["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    del model, tokenizer
    mx.clear_cache()
    scored = metrics.score(queries, gen.texts)
    load_times = measure_load_time(spec, repeats) if repeats > 0 else []
    entry.update(
        {
            "load_time_s": statistics.median(load_times) if load_times else None,
            "load_times_s": load_times,
            "prompt_tps": gen.prompt_tps,
            "generation_tps": gen.generation_tps,
            "latency_s_mean": statistics.fmean(gen.latencies),
            "latency_s_p95": _p95(gen.latencies),
            "eval_wall_s": gen.wall_time,
            "prompt_tokens": gen.prompt_tokens,
            "shared_prefix_tokens": gen.prefix_tokens,
            "generation_tokens": gen.generation_tokens,
            "stopped_broken_calls": sum(gen.stopped_broken),
            "perplexity": ppl,
            "accuracy": scored["accuracy"],
            "confusion": scored["confusion"],
            "counts": scored["counts"],
            "error": None,
        }
    )
    preds = [
        {"index": i, "text": text, **row, **({"stopped_early": True} if stopped else {})}
        for i, (text, row, stopped) in enumerate(
            zip(gen.texts, scored["per_query"], gen.stopped_broken, strict=True)
        )
    ]
    write_jsonl(out_dir / "predictions" / f"{_safe_name(name)}.jsonl", preds)
    return entry


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def machine_info() -> dict:
    import mlx.core as mx

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "mlx_device": str(mx.default_device()),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import mlx_tune

    out = {"mlx_tune": mlx_tune.__version__}
    for pkg in ("mlx", "mlx-lm"):
        try:
            out[pkg.replace("-", "_")] = version(pkg)
        except PackageNotFoundError:
            out[pkg.replace("-", "_")] = None
    return out


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
) -> dict:
    """Benchmark ``models`` (name -> spec) on ``queries``; write the results into ``out_dir``
    and return them (the ``results.json`` object)."""
    from tqdm import tqdm

    if not models:
        raise UserError("nothing to benchmark: no models given (pass --model NAME=SPEC)")
    if batch_size < 1 or max_tokens < 1 or repeats < 0 or (limit is not None and limit < 1):
        raise UserError("--batch-size, --max-tokens and --limit must be >= 1, --repeats >= 0")
    queries = Path(queries)
    query_records = load_queries(queries, limit)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "bench.log", mode="w", encoding="utf-8")
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
                    out_dir,
                    repeats=repeats,
                    max_tokens=max_tokens,
                    batch_size=batch_size,
                    progress=progress,
                )
                log.info(
                    "%s: done in %.1fs: %s", name, time.perf_counter() - tic, json.dumps(entry["accuracy"])
                )
            except Exception as e:  # one model failing must not stop the others
                message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                log.error("%s: failed: %s", name, message)
                if not isinstance(e, UserError):
                    log.error("%s", traceback.format_exc())
                entry = _failed_entry(name, spec, message)
            results["models"].append(entry)
        write_json(out_dir / "results.json", results)
        write_text(out_dir / "results.md", format_markdown(results))
        chart = plot_results(results, out_dir / "chart.png")
        log.info("wrote %s/results.json, results.md%s", out_dir, ", chart.png" if chart else "")
        return results
    finally:
        log.removeHandler(handler)
        handler.close()


def _failed_entry(name: str, spec: str, message: str) -> dict:
    keys = (
        "load_time_s",
        "prompt_tps",
        "generation_tps",
        "latency_s_mean",
        "latency_s_p95",
        "peak_memory_gb",
        "size_bytes",
        "adapter_bytes",
        "trainable_params",
        "perplexity",
        "confusion",
    )
    entry: dict[str, Any] = {"name": name, "spec": spec, **dict.fromkeys(keys)}
    entry["accuracy"] = dict.fromkeys(ACCURACY_KEYS)
    entry["error"] = message
    return entry


# ---------------------------------------------------------------- command


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model_opts",
    multiple=True,
    metavar="NAME=SPEC",
    help="A model to benchmark (repeatable). SPEC is a model folder or Hugging Face id, "
    "or BASE@ADAPTER_DIR for a LoRA adapter on its base, e.g. base=models/tiny, "
    "p7=models/tiny@adapters/phase7. Default: the base in data/phases/*.yaml, every "
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
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder. Default: benchmarks/run-<timestamp>.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(model_opts, queries, repeats, max_tokens, batch_size, limit, out_dir, quiet) -> None:
    """Benchmark models side by side: load time, speed, memory, size, accuracy, perplexity.

    Writes results.json, results.md, bench.log, predictions/ and (extra `plot`) chart.png to
    --out, and prints the table.
    """
    try:
        models = parse_model_options(model_opts) if model_opts else default_models()
        if not models:
            raise UserError(
                "nothing to benchmark: no data/phases/*.yaml base, adapters/phaseN or "
                "models/*-fused-* found; pass --model NAME=SPEC"
            )
        queries = queries or default_queries()
        out_dir = out_dir or Path("benchmarks") / time.strftime("run-%Y%m%d-%H%M%S")
        results = run_benchmark(
            models,
            queries,
            out_dir,
            repeats=repeats,
            max_tokens=max_tokens,
            batch_size=batch_size,
            limit=limit,
            progress=not quiet,
        )
    except UserError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(results))
    click.echo(f"results: {out_dir}/results.json, {out_dir}/results.md")
    failed = [m["name"] for m in results["models"] if m.get("error")]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(results['models'])} models failed: {', '.join(failed)}"
        )


main = command

if __name__ == "__main__":
    from mlx_tune import cpu_blas

    cpu_blas.reexec_with_openblas()
    command()
