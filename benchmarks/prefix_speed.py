#!/usr/bin/env python3
"""Shared-prefix training against the plain full-sequence path (issue 5).

Trains LoRA (every linear layer of every block, prompt masking on) through mlx-lm's trainer
twice on the same examples: once with ``train.batch_groups`` / ``make_batch`` / ``make_loss``,
once with ``prefix.prefix_batch_groups`` / ``make_prefix_batch`` / ``make_prefix_loss``. Each
run makes a warm-up pass over its batches (mx.compile traces every new shape), then ``--passes``
timed passes; the fastest pass counts. Prints real tokens/s and peak memory for both, and as the
last line ``ratio: N.NN`` (shared-prefix tokens/s over plain tokens/s; the target is >= 1.6 at
batch 4).

Data: ``data/phase7/train.jsonl`` if present, else records generated offline with
``mlx_tune.examples`` from installed packages. Model: ``--model DIR``, else the tiny model at
its default size (built once into ``--work``).

    python benchmarks/prefix_speed.py [--data FILE] [--model DIR] [--batch-size 4] [--examples 160]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile
import time
from pathlib import Path

DISTS = ["click", "tqdm", "jinja2", "pygments", "rich", "attrs", "pydantic"]


def load_data(path: Path | None, n: int, work: Path) -> tuple[list[dict], str]:
    from mlx_tune import examples, fileio, repos

    path = path or Path("data/phase7/train.jsonl")
    if path.is_file():
        return [r for _, r in fileio.iter_jsonl(path)][:n], str(path)
    present = []
    for name in DISTS:
        try:
            importlib.metadata.distribution(name)
            present.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    repos_dir = work / "repos"
    repos.add_installed(present, repos_dir)
    per = (n + 2) // 3
    result = examples.generate(
        examples.find_repos(repos_dir), {"grep": per, "read": per, "direct": per}, seed=0, progress=False
    )
    return result.records[:n], f"generated from installed packages ({', '.join(present)})"


def run(model_dir: str, exs, batch_size: int, rank: int, shared: bool, passes: int) -> dict:
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm import load
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback
    from mlx_lm.tuner.trainer import train as mlx_train

    from mlx_tune import prefix, train

    model, _ = load(model_dir)
    mx.random.seed(0)
    train.setup_model(
        model, train.TrainSettings(model=model_dir, data="-", iters=1, num_layers=-1, rank=rank, scale=20.0)
    )
    if shared:
        groups = prefix.prefix_batch_groups(exs, batch_size)
        batcher, loss = prefix.make_prefix_batch, prefix.make_prefix_loss(model)
    else:
        groups = train.batch_groups(exs, batch_size)
        batcher, loss = train.make_batch, train.make_loss(model)
    batches = [batcher([exs[i] for i in g]) for g in groups]
    n = len(batches)
    secs: list[float] = []
    marks: dict = {}

    def iterate(**kw):
        t = 0
        while True:
            yield batches[t % n][0]
            t += 1

    class Callback(TrainingCallback):
        def on_train_loss_report(self, info):
            secs.append(1.0 / info["iterations_per_second"])
            if info["iteration"] == n:  # warm-up pass done: measure memory from here
                mx.reset_peak_memory()
            if info["iteration"] == (passes + 1) * n:
                marks["peak"] = mx.get_peak_memory() / 1e9

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArgs(
            batch_size=batch_size,
            iters=(passes + 1) * n,
            steps_per_report=1,
            steps_per_eval=10**9,
            steps_per_save=10**9,
            adapter_file=str(Path(tmp) / "a.safetensors"),
        )
        with train._quiet_mlx_lm_ui():
            mlx_train(
                model=model,
                optimizer=optim.Adam(learning_rate=1e-4),
                train_dataset=exs,
                args=args,
                loss=loss,
                iterate_batches=iterate,
                training_callback=Callback(),
            )
    real = sum(b[1] for b in batches)
    if shared:
        computed = sum(prefix.computed_positions(b[0]) for b in batches)
    else:
        computed = sum(b[0][0].size for b in batches)
    best = min(sum(secs[k * n : (k + 1) * n]) for k in range(1, passes + 1))
    return {
        "batches": n,
        "real": real,
        "computed": computed,
        "seconds": best,
        "tok_s": real / best,
        "step_ms": 1000 * best / n,
        "peak_gb": marks["peak"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, help="records JSONL (default data/phase7/train.jsonl, else generated)"
    )
    ap.add_argument("--model", help="mlx-lm model directory (default: the tiny model, default size)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlx_tune_prefix_speed")
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--passes", type=int, default=2, help="timed passes per path (the fastest counts)")
    a = ap.parse_args()

    from mlx_tune import prefix, train
    from mlx_tune.tiny import build_tiny_model

    a.work.mkdir(parents=True, exist_ok=True)
    recs, source = load_data(a.data, a.examples, a.work)
    model_dir = a.model
    if model_dir is None:
        model_dir = str(a.work / "tiny-default")
        if not Path(model_dir, "config.json").is_file():
            print("building the tiny model (default size) ...", file=sys.stderr)
            build_tiny_model(model_dir)
    from mlx_lm import load

    model, tokenizer = load(model_dir)
    reason = prefix.shared_prefix_support(model)
    if reason:
        sys.exit(f"shared prefix not supported by {model_dir}: {reason}")
    exs = [train.tokenize_record(tokenizer, r, True) for r in recs]
    groups = prefix.prefix_groups(exs)
    lengths = sorted(len(e.tokens) for e in exs)
    print(f"data: {len(exs)} examples, {source}")
    print(f"model: {model_dir}; batch {a.batch_size}, LoRA rank {a.rank} on every layer, mask_prompt on")
    print(
        f"tokens per example: median {lengths[len(lengths) // 2]}, min {lengths[0]}, max {lengths[-1]}; "
        f"prefix groups: {len(groups)} (sizes {sorted((len(g) for g in groups), reverse=True)[:5]})"
    )
    print(f"machine load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    results = {}
    for name, shared in (("plain", False), ("shared-prefix", True)):
        t0 = time.perf_counter()
        r = results[name] = run(model_dir, exs, a.batch_size, a.rank, shared, a.passes)
        print(
            f"{name:>13}: {r['tok_s']:8.1f} real tokens/s, {r['step_ms']:7.1f} ms/step, peak memory "
            f"{r['peak_gb']:.3f} GB, {r['computed']} positions computed for {r['real']} real tokens "
            f"({r['batches']} batches, {time.perf_counter() - t0:.0f} s with warm-up)",
            flush=True,
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ratio: {results['shared-prefix']['tok_s'] / results['plain']['tok_s']:.2f}")


if __name__ == "__main__":
    main()
