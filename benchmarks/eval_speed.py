#!/usr/bin/env python3
"""Speed of mlx_tune's evaluation against a plain ``mlx_lm.generate`` loop, on one model and one
query set, in one run.

(a) ``mlx_tune.evaluate.generate_batched``: greedy, queries decoded together in mlx-lm's
``BatchGenerator``, the shared prompt prefix (system prompt + tool schemas) computed once and its
KV cache copied per query, each query stopping when its answer is complete (``<|im_end|>`` or
``</tool_call>``). (b) one ``mlx_lm.generate`` call per query (greedy, stops at EOS or
``--max-tokens``). Both start from the same loaded model after a warm-up call.

Prints both wall times, how many category predictions (grep/read/direct/invalid) agree, every
difference, and as the last line ``ratio: N.NN agreement: N.NNN`` (loop time / ours; share of
identical category predictions). Targets: ratio >= 5, agreement >= 0.99. With ``--repeats N`` both
sides run N times, alternating, and each side's best time counts (a shared machine is noisy).

    python benchmarks/eval_speed.py [--model SPEC] [--queries FILE] [--limit N]
        [--max-tokens 128] [--batch-size 32] [--repeats 1]

On Linux it restarts once with the system OpenBLAS preloaded, like the ``mlx-tune`` commands
(``MLX_TUNE_BLAS=off`` keeps mlx's bundled BLAS; ``MLX_TUNE_OPENBLAS=PATH`` picks a library).

Without ``--model`` it builds the embedded tiny model in a temporary folder (offline); without
``--queries`` it uses the held-out split (data/phase7/test.jsonl, else the highest phase's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mlx_tune import UserError, bench, cpu_blas, evaluate, metrics


def categories(queries: list[dict], texts: list[str]) -> list[str]:
    return [
        metrics.parse_prediction(t, metrics.record_format(q)).category
        for q, t in zip(queries, texts, strict=True)
    ]


def _runs(times: list[float]) -> str:
    return f"(best of {', '.join(f'{t:.2f}' for t in times)})" if len(times) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model SPEC (folder, HF id or BASE@ADAPTER_DIR); default: tiny model")
    ap.add_argument("--queries", type=Path, help="held-out records (JSONL)")
    ap.add_argument("--limit", type=int, help="first N queries (default: all)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=bench.DEFAULT_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=1, help="runs per side, best time counts (default 1)")
    ap.add_argument(
        "--keep-broken-calls",
        action="store_true",
        help="ours decodes broken tool calls to the end too (default: stops them, as the bench does)",
    )
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.max_tokens < 1:
        ap.error("--repeats, --batch-size and --max-tokens must be at least 1")
    try:
        queries_path = args.queries or bench.default_queries()
        queries = bench.load_queries(queries_path, args.limit)
        with tempfile.TemporaryDirectory() as tmp:
            spec = args.model
            if spec is None:
                from mlx_tune.tiny import build_tiny_model

                spec = str(build_tiny_model(Path(tmp) / "tiny"))
            model, tokenizer = evaluate.load_model(spec)
            print(
                f"model: {args.model or 'tiny (built in a temp dir)'}; {len(queries)} queries from "
                f"{queries_path}; max {args.max_tokens} tokens, batch {args.batch_size}; "
                f"BLAS: {cpu_blas.active() or 'bundled'}"
            )
            evaluate.generate_loop(model, tokenizer, queries[:1], max_tokens=4)  # warm-up

            times_ours, times_loop = [], []
            for _ in range(args.repeats):
                tic = time.perf_counter()
                ours = evaluate.generate_batched(
                    model,
                    tokenizer,
                    queries,
                    max_tokens=args.max_tokens,
                    batch_size=args.batch_size,
                    stop_broken_calls=not args.keep_broken_calls,
                    progress=True,
                )
                times_ours.append(time.perf_counter() - tic)
                tic = time.perf_counter()
                loop = evaluate.generate_loop(
                    model, tokenizer, queries, max_tokens=args.max_tokens, progress=True
                )
                times_loop.append(time.perf_counter() - tic)
            t_ours, t_loop = min(times_ours), min(times_loop)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1

    ours_cat, loop_cat = categories(queries, ours.texts), categories(queries, loop.texts)
    same = sum(a == b for a, b in zip(ours_cat, loop_cat, strict=True))
    stopped = [i for i, s in enumerate(ours.stopped_broken) if s]
    print(
        f"ours (batched, shared prefix of {ours.prefix_tokens} tokens, early stop): {t_ours:.2f}s "
        f"{_runs(times_ours)}, {sum(ours.token_counts)} answer tokens; {len(stopped)} answers stopped "
        "at a broken tool call" + (" (off)" if args.keep_broken_calls else "")
    )
    print(
        f"plain loop (mlx_lm.generate per query): {t_loop:.2f}s {_runs(times_loop)}, "
        f"{sum(loop.token_counts)} answer tokens"
    )
    same_text = sum(a == b for a, b in zip(ours.texts, loop.texts, strict=True))
    cut_short = sum(loop.texts[i].startswith(ours.texts[i]) for i in stopped)
    print(
        f"identical answer texts: {same_text}/{len(queries)}; of the {len(stopped)} stopped early, "
        f"{cut_short} are the start of the loop's answer"
    )
    print(f"identical category predictions: {same}/{len(queries)}")
    for i, (a, b) in enumerate(zip(ours_cat, loop_cat, strict=True)):
        if a != b:
            print(
                f"  query {i} (expected {metrics.expected_category(queries[i])}): ours {a} {ours.texts[i]!r:.120}"
                f" | loop {b} {loop.texts[i]!r:.120}"
            )
    print(f"ratio: {t_loop / t_ours:.2f} agreement: {same / len(queries):.3f}")
    return 0


if __name__ == "__main__":
    cpu_blas.reexec_with_openblas()
    sys.exit(main())
