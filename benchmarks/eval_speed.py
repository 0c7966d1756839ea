#!/usr/bin/env python3
"""Speed of mlx_tune's evaluation against a plain ``mlx_lm.generate`` loop, on one model and one
query set, in one run.

(a) ``mlx_tune.eval.evaluate.generate_batched``: greedy, queries decoded together in mlx-lm's
``BatchGenerator``, the shared prompt prefix (system prompt + tool schemas) computed once and its
KV cache copied per query, each query stopping when its answer is complete (``<|im_end|>`` or
``</tool_call>``). (b) one ``mlx_lm.generate`` call per query (greedy, stops at EOS or
``--max-tokens``). Both start from the same loaded model after a warm-up call.

Prints both wall times, how many category predictions (grep/read/direct/invalid) agree, every
difference, and as the last line ``ratio: N.NN agreement: N.NNN`` (loop time / ours; share of
identical category predictions). Targets: ratio >= 5 (>= 3 with ``--agent``) on a model whose tool
calls are valid, agreement >= 0.99. With ``--repeats N`` both sides run N times, alternating, and
each side's best time counts (a shared machine is noisy). The ``calls:`` line says how many of the
attempted tool calls are valid.

    python benchmarks/eval_speed.py [--model SPEC] [--queries FILE] [--limit N]
        [--max-tokens 128] [--batch-size 32] [--repeats 1] [--agent [--repos DIR] [--max-steps 3]]
        [--fixture [--train-steps 300]]

``--agent`` compares the agent loop instead (:mod:`mlx_tune.eval.agent`: each query calls tools in the
sandbox until it answers): every round batched against one ``mlx_lm.generate`` per query and
step; the last line's agreement is then the share of queries whose runs have the same outcome
(same calls, same final text; a call stopped early at broken JSON counts as its full decode).
The queries' repositories are looked up by ``meta.repo`` in ``--repos`` (default data/repos).

``--fixture`` gives a model whose tool calls are valid, offline and in a few CPU minutes: the tiny
model, fully fine-tuned for ``--train-steps`` steps on grep trajectories about the classes of the
installed ``click`` package (its source read as text, the repository the tools run on), cached
under /tmp/mlx_tune_eval_speed; the queries are held-out questions about other classes (plus a
few direct questions). Without ``--model`` and ``--fixture`` the untrained tiny model is used.

On Linux it restarts once with the system OpenBLAS preloaded, like the ``mlx-tune`` commands
(``MLX_TUNE_BLAS=off`` keeps mlx's bundled BLAS; ``MLX_TUNE_OPENBLAS=PATH`` picks a library).

Without ``--model`` it builds the embedded tiny model in a temporary folder (offline); without
``--queries`` it uses the held-out split (data/phase7/test.jsonl, else the highest phase's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mlx_tune import UserError, fileio, layout, records, tools
from mlx_tune.eval import agent, bench, evaluate, metrics
from mlx_tune.models import cpu_blas, model_spec

FIXTURE_CACHE = Path(tempfile.gettempdir()) / "mlx_tune_eval_speed"
FIXTURE_VERSION = 1  # bump when the fixture's records or training change
FIXTURE_SIZE = {"vocab_size": 2048, "max_corpus_chars": 600_000}
GREP_QUESTIONS = ("Where is the class {} defined?", "Which file defines {}?", "Find the class {}.")
DIRECT = [
    ("What does the built-in zip do?", "zip pairs up items of several iterables, stopping at the shortest."),
    ("What does enumerate return?", "enumerate yields pairs of a running index and each item."),
    ("How do I reverse a list in Python?", "Use reversed(items) or items[::-1] for a reversed copy."),
    ("What is a Python dict?", "A dict maps hashable keys to values, in insertion order."),
    ("What does len do?", "len returns the number of items in a container."),
    ("What does str.strip do?", "strip returns the string without leading and trailing whitespace."),
    ("What is a list comprehension?", "A list comprehension builds a list from an expression and a loop."),
    ("What does sorted return?", "sorted returns a new sorted list from the items of an iterable."),
    ("What does the with statement do?", "with runs a block inside a context manager's enter and exit."),
    ("What does range(3) give?", "range(3) gives the numbers 0, 1 and 2."),
    ("What is a Python tuple?", "A tuple is an immutable sequence of items."),
    ("What does isinstance check?", "isinstance checks whether an object is an instance of a class."),
]


def categories(queries: list[dict], texts: list[str]) -> list[str]:
    return [
        metrics.parse_prediction(t, metrics.record_format(q)).category
        for q, t in zip(queries, texts, strict=True)
    ]


def _runs(times: list[float]) -> str:
    return f"(best of {', '.join(f'{t:.2f}' for t in times)})" if len(times) > 1 else ""


# ---------------------------------------------------------------- fixture: a model whose calls are valid


def fixture_records(root: Path) -> tuple[list[dict], list[dict]]:
    """Grep trajectories about the classes defined under ``root`` (every third class held out) and
    direct questions (every third held out): ``(train, test)``. Deterministic."""
    train, test = [], []
    classes = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for m in re.finditer(r"^class (\w+)", path.read_text(encoding="utf-8"), re.MULTILINE):
            classes.append((m.group(1), rel))
    for i, (name, rel) in enumerate(classes):
        pattern = rf"class {name}\b"
        out = tools.run_grep(root, pattern)
        hit = next(m for m in out.matches if m.path == rel)
        answer = f"{name} is defined in {rel}:{hit.line}."
        meta = {
            "category": "grep",
            "origin": "real",
            "source": f"repo:{root.name}",
            "generator": "eval_speed",
        }
        meta |= {"repo": root.name, "path": rel, "line": hit.line, "symbol": name, "shape": "grep-answer"}
        for question in GREP_QUESTIONS:
            step = ("grep", {"pattern": pattern}, out.text)
            (test if i % 3 == 2 else train).append(
                records.trajectory_record(question.format(name), [step], answer, meta)
            )
    for i, (question, answer) in enumerate(DIRECT):
        meta = {
            "category": "direct",
            "origin": "synthetic",
            "source": "stdlib:builtins",
            "generator": "eval_speed",
        }
        (test if i % 3 == 2 else train).append(
            records.direct_record(question, answer, meta | {"shape": "direct"})
        )
    return train, test


def fixture_model(train: list[dict], steps: int, seed: int = 0) -> Path:
    """The tiny model fully fine-tuned on ``train`` for ``steps`` steps (batch 8, Adam, every
    assistant turn trained), cached by a hash of the records, the steps and the versions."""
    from importlib.metadata import version

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import mlx_lm
    import numpy as np
    from mlx_lm.utils import save_model
    from tqdm import tqdm

    from mlx_tune.models import tiny
    from mlx_tune.rendering import tokenize_record
    from mlx_tune.training.prefix import make_prefix_batch, make_prefix_loss

    stamp = [FIXTURE_VERSION, FIXTURE_SIZE, steps, seed, train, version("mlx"), version("mlx-lm")]
    stamp.append(hashlib.sha256(Path(tiny.__file__).read_bytes()).hexdigest())  # how the base is built
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    out = FIXTURE_CACHE / key
    if (out / "config.json").is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "train.jsonl"
        fileio.write_jsonl(corpus, train)
        tiny.build_tiny_model(Path(tmp) / "base", seed=seed, corpus=[corpus], **FIXTURE_SIZE)
        model, tokenizer = mlx_lm.load(str(Path(tmp) / "base"))
        examples = [tokenize_record(tokenizer, r) for r in train]
        loss = make_prefix_loss(model)  # the system prompt and tool schemas run once per batch
        opt = optim.Adam(learning_rate=optim.cosine_decay(2e-3, steps, 2e-4))
        step = nn.value_and_grad(model, loss)
        rng = np.random.default_rng(seed)
        model.train()
        bar = tqdm(range(steps), desc="train fixture model", leave=False)
        for _ in bar:
            arrays, _, _ = make_prefix_batch(
                [examples[j] for j in rng.choice(len(examples), 8, replace=False)]
            )
            (value, _), grads = step(model, *arrays)
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state, value)
            bar.set_postfix(loss=f"{value.item():.3f}")
        print(f"fixture model: {steps} steps, last batch loss {value.item():.3f}", file=sys.stderr)
        model.eval()
        FIXTURE_CACHE.mkdir(parents=True, exist_ok=True)
        with fileio.atomic_path(out) as dest:
            shutil.copytree(Path(tmp) / "base", dest)
            save_model(dest, model)
            (dest / "model.safetensors.index.json").unlink(missing_ok=True)
    return out


def fixture(steps: int) -> tuple[str, list[dict], Path]:
    """``(model folder, held-out queries, repository root)`` of the click fixture."""
    import click

    root = Path(click.__file__).resolve().parent
    train, test = fixture_records(root)
    return str(fixture_model(train, steps)), test, root


# ---------------------------------------------------------------- comparisons


def call_validity(queries: list[dict], texts: list[str]) -> str:
    preds = [
        metrics.parse_prediction(t, metrics.record_format(q)) for q, t in zip(queries, texts, strict=True)
    ]
    attempted = [p for p in preds if p.attempted_call]
    valid = sum(p.valid for p in attempted)
    return f"{valid}/{len(attempted)} attempted tool calls valid ({len(preds)} answers)"


def single_turn(model, tokenizer, queries, args) -> tuple[float, float]:
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
        loop = evaluate.generate_loop(model, tokenizer, queries, max_tokens=args.max_tokens, progress=True)
        times_loop.append(time.perf_counter() - tic)
    t_ours, t_loop = min(times_ours), min(times_loop)
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
    print(f"calls: {call_validity(queries, loop.texts)}")
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
    return t_loop / t_ours, same / len(queries)


def agent_turns(model, tokenizer, queries, root_of, args) -> tuple[float, float]:
    runs_ours, runs_loop = [], []
    with tools.Sandbox() as sandbox:
        sandbox.execute(".", "read", {"path": "."})  # the worker starts before the clocks do
        for _ in range(args.repeats):
            ours = agent.agent_loop(
                model,
                tokenizer,
                queries,
                root_of,
                max_steps=args.max_steps,
                max_tokens=args.max_tokens,
                batch_size=args.batch_size,
                stop_broken_calls=not args.keep_broken_calls,
                sandbox=sandbox,
            )
            runs_ours.append(ours)
            plain = agent.agent_loop_plain(
                model,
                tokenizer,
                queries,
                root_of,
                max_steps=args.max_steps,
                max_tokens=args.max_tokens,
                sandbox=sandbox,
            )
            runs_loop.append(plain)
    # Each side's fastest run is reported; greedy decoding makes the runs' texts the same.
    ours, plain = (min(runs, key=lambda r: r.wall_time) for runs in (runs_ours, runs_loop))
    t_ours, t_loop = ours.wall_time, plain.wall_time
    for name, run, runs in (
        ("ours (batched rounds)", ours, runs_ours),
        ("plain loop (mlx_lm.generate per step)", plain, runs_loop),
    ):
        times = [r.wall_time for r in runs]
        s = agent.summarize(queries, run, root_of)
        print(
            f"{name}: {min(times):.2f}s {_runs(times)}; {run.rounds} rounds, generation {run.generation_time:.2f}s, "
            f"tools {run.tool_time:.2f}s; trajectory_success {s['trajectory_success']:.3f}, mean steps "
            f"{s['mean_steps']:.2f}, tool errors {s['tool_errors']}, step-limit hits {s['step_limit_hits']}, "
            f"ended {s['ended']}"
        )
    first = [r.texts[0] for r in plain.results]
    print(f"first-round calls: {call_validity(queries, first)}")
    same_text = sum(
        a.final == b.final and a.messages == b.messages
        for a, b in zip(ours.results, plain.results, strict=True)
    )
    same = [agent.same_outcome(a, b) for a, b in zip(ours.results, plain.results, strict=True)]
    print(
        f"identical conversations and final texts: {same_text}/{len(queries)}; same outcome: {sum(same)}/{len(queries)}"
    )
    for i, ok in enumerate(same):
        if not ok:
            print(f"  query {i}: ours {ours.results[i].final!r:.120} | loop {plain.results[i].final!r:.120}")
    return t_loop / t_ours, sum(same) / len(queries)


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
    ap.add_argument(
        "--agent", action="store_true", help="compare the agent loop (tool calls run, multi-step)"
    )
    ap.add_argument("--repos", type=Path, default=layout.REPOS_DIR, help="repositories for --agent")
    ap.add_argument("--max-steps", type=int, default=agent.DEFAULT_MAX_STEPS, help="tool calls per query")
    ap.add_argument("--fixture", action="store_true", help="the tiny model trained on click trajectories")
    ap.add_argument("--train-steps", type=int, default=300, help="training steps of the --fixture model")
    args = ap.parse_args(argv)
    if min(args.repeats, args.batch_size, args.max_tokens, args.max_steps, args.train_steps) < 1:
        ap.error("--repeats, --batch-size, --max-tokens, --max-steps and --train-steps must be at least 1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec, fixture_root = args.model, None
            if args.fixture:
                spec, queries, fixture_root = fixture(args.train_steps)
                queries = queries[: args.limit]
                source = f"the click fixture ({args.train_steps} training steps)"
            else:
                queries_path = args.queries or bench.default_queries()
                queries = bench.load_queries(queries_path, args.limit)
                source = str(queries_path)
            if spec is None:
                from mlx_tune.models.tiny import build_tiny_model

                spec = str(build_tiny_model(Path(tmp) / "tiny"))
            model, tokenizer = model_spec.load_model(spec)
            print(
                f"model: {args.model or spec}; {len(queries)} queries from {source}; max {args.max_tokens} "
                f"tokens, batch {args.batch_size}; BLAS: {cpu_blas.active() or 'bundled'}"
            )
            evaluate.generate_loop(model, tokenizer, queries[:1], max_tokens=4)  # warm-up
            if args.agent:
                repos = args.repos
                root_of = (
                    (lambda r: fixture_root) if fixture_root else (lambda r: metrics.repo_root(r, repos))
                )
                ratio, agreement = agent_turns(model, tokenizer, queries, root_of, args)
            else:
                ratio, agreement = single_turn(model, tokenizer, queries, args)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(f"ratio: {ratio:.2f} agreement: {agreement:.3f}")
    return 0


if __name__ == "__main__":
    cpu_blas.reexec_with_openblas()
    sys.exit(main())
