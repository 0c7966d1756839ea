#!/usr/bin/env python3
"""Benchmark the project's models side by side on one held-out query set: the base, the phase
5, 6 and 7 adapters, phases 5 and 7 fused to 8 bits, and the QLoRA adapter and its fused model
when adapters/phase5-qlora exists (the list `mlx-tune demo` benchmarks, bench.project_models).

Writes benchmarks/all_phases/ (results.json, results.md, bench.log, predictions/, chart.png with
the `plot` extra) and benchmarks/benchmark_all_phases.log (the table and where the results are).
A model that is missing or fails to load is listed with its error; the others are still measured.

    python scripts/benchmark_all_phases.py [--model BASE] [--queries FILE] [--repeats 3]
        [--max-tokens 256] [--batch-size 16] [--limit N] [--out benchmarks/all_phases]

--model defaults to the base named in the phase configs (train.model); each adapter runs on the
base its adapter_config.json names, else on --model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_tune import UserError, layout  # noqa: E402
from mlx_tune.eval import bench
from mlx_tune.fileio import write_text  # noqa: E402

LOG = layout.BENCHMARKS_DIR / "benchmark_all_phases.log"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="base model (folder or HF id); default: from the phase configs")
    ap.add_argument("--queries", type=Path, help=f"held-out records; default: {layout.query_file()}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=bench.DEFAULT_MAX_TOKENS)
    ap.add_argument("--batch-size", type=int, default=bench.DEFAULT_BATCH_SIZE)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", type=Path, default=layout.BENCHMARKS_DIR / "all_phases")
    args = ap.parse_args(argv)
    try:
        base = args.model or bench.phase_base_model()
        if not base:
            raise UserError("no base model: pass --model or set train.model in a phase config")
        models = bench.project_models(base)
        queries = args.queries or bench.default_queries()
        results = bench.run_benchmark(
            models,
            queries,
            args.out,
            repeats=args.repeats,
            max_tokens=args.max_tokens,
            batch_size=args.batch_size,
            limit=args.limit,
        )
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    table = bench.format_table(results)
    print(table)
    write_text(
        LOG,
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n{table}\n"
        f"results: {args.out}/results.json, {args.out}/results.md, {args.out}/bench.log\n",
    )
    print(f"log: {LOG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
