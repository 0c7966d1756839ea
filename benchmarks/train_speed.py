"""Training throughput: `mlx-tune train` (shared prefix on and off) against `mlx_lm lora`.

    .venv/bin/python benchmarks/train_speed.py [--model DIR] [--data DIR] [--epochs 3] [--batch-size 4]

Three fresh subprocesses, one after the other, same model, data and LoRA settings (prompt masking
on): ``mlx-tune train`` with every optimisation (``--shared-prefix auto``), the same with
``--shared-prefix off``, and ``mlx_lm lora``. Each trains ``epochs`` whole passes over the
training set (cut to a multiple of the batch size, so every example is seen once per epoch by
each); the first epoch (compilation) is left out of the timing. Throughput is in real
(non-padding) tokens per second of training-step time (validation excluded), counted as each
tool tokenizes the data. Peak memory: the child process' maximum resident set size (and, for
ours, mlx's own peak). Data: data/phase7 if present (``--data`` to choose). The last line is
``ratio: N.NN``: ours (shared prefix on) over mlx-lm's (targets: >= 2x, and >= 1.6x on over off).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def default_model() -> Path:
    from mlx_tune.models.tiny import build_tiny_model
    from mlx_tune.models.tiny_pretrain import cache_dir

    path = cache_dir() / "bench-tiny-model"
    if not (path / "config.json").is_file():
        build_tiny_model(path)
    return path


def prepare_data(src: Path | None, batch_size: int, out: Path, max_train: int) -> Path:
    from mlx_tune import fileio

    if src is not None:
        train, valid = fileio.read_jsonl(src / "train.jsonl"), fileio.read_jsonl(src / "valid.jsonl")
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_records

        recs = make_records(max_train + 8)
        train, valid = recs[:max_train], recs[max_train:]
    train = train[: min(len(train), max_train) // batch_size * batch_size]
    fileio.write_jsonl(out / "train.jsonl", train)
    fileio.write_jsonl(out / "valid.jsonl", valid[: max(batch_size, 8)])
    return out


def same_blas() -> dict:
    """The same BLAS for every child: ``mlx-tune`` may restart itself with the system OpenBLAS on
    Linux, so mlx-lm gets it preloaded too (nothing changes where there is none)."""
    try:
        from mlx_tune.models import cpu_blas
    except ImportError:
        return {}
    lib = cpu_blas.find_openblas()
    if lib is None:
        return {}
    return cpu_blas.preload_env(lib)


def run(cmd: list[str], log: Path) -> tuple[list[tuple[float, str]], float]:
    """Run ``cmd``; return its output lines with arrival times and its peak RSS in GB (wait4: this
    child only)."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb", **same_blas()}
    lines = []
    with open(log, "w") as f:
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env, text=True
        )
        for line in p.stdout:
            lines.append((time.perf_counter(), ANSI.sub("", line.rstrip("\n"))))
            f.write(line)
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "\n".join(t for _, t in lines[-30:])
        raise SystemExit(f"command failed ({' '.join(cmd)}):\n{tail}")
    return lines, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def mlx_lm_lengths(model: Path, data: Path) -> list[int]:
    """Token counts of the training records as mlx-lm's ChatDataset renders them."""
    from mlx_lm import load

    from mlx_tune import fileio

    _, tok = load(str(model))
    return [
        len(tok.apply_chat_template(r["messages"], tools=r.get("tools"), return_dict=False))
        for r in fileio.read_jsonl(data / "train.jsonl")
    ]


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRAIN_ROW = re.compile(r"^\s*(\d+)\s+[\d.]+\s+\S\s+[\d,.]+\s+[\d.]+k\s*$")
VAL_ROW = re.compile(r"^\s*(\d+)\s+val\s+[\d.]+\s+([\d.]+)s\s*$")


def mlx_lm_seconds(lines: list[tuple[float, str]], first: int, last: int) -> float:
    """Training-step seconds between mlx-lm's report rows for iterations ``first`` and ``last``:
    the wall time between the two rows minus the validation time it printed in between.
    (Its own tokens/s counts only the loss tokens and prints 3 digits, too coarse to use.)"""
    at, val = {}, 0.0
    for t, text in lines:
        m = TRAIN_ROW.match(text)
        if m:
            at[int(m.group(1))] = t
            continue
        m = VAL_ROW.match(text)
        if m and first < int(m.group(1)) <= last:
            val += float(m.group(2))
    if first not in at or last not in at:
        raise SystemExit(f"could not find mlx-lm's report rows for iterations {first} and {last}")
    return at[last] - at[first] - val


def common_args(model: Path, data: Path, adapter_path: Path, iters: int, args) -> list[str]:
    """The options ``mlx-tune train`` and ``mlx_lm lora`` are both given, with the same values."""
    return [
        "--model",
        str(model),
        "--data",
        str(data),
        "--adapter-path",
        str(adapter_path),
        "--iters",
        str(iters),
        "--batch-size",
        str(args.batch_size),
        "--learning-rate",
        str(args.learning_rate),
        "--num-layers",
        str(args.num_layers),
        "--max-seq-length",
        str(args.max_seq_length),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="mlx-lm model dir (default: the tiny model)")
    ap.add_argument(
        "--data", type=Path, help="dir with train/valid.jsonl (default: data/phase7 or generated)"
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-train", type=int, default=32, help="use at most this many training records")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--num-layers", type=int, default=-1)
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs: at least 2 (the first epoch is not timed)")

    model = args.model or default_model()
    src = args.data or (ROOT / "data/phase7" if (ROOT / "data/phase7/train.jsonl").is_file() else None)
    work = Path(tempfile.mkdtemp(prefix="train_speed."))
    data = prepare_data(src, args.batch_size, work / "data", args.max_train)
    n_train = sum(1 for _ in open(data / "train.jsonl"))
    nb = n_train // args.batch_size
    iters = nb * args.epochs
    print(
        f"model {model}\ndata {src or 'generated records'}: {n_train} train records, batch {args.batch_size}, "
        f"{args.epochs} epochs = {iters} iterations (first epoch untimed)"
    )

    def ours(shared: str) -> tuple[float, float, float]:
        out = work / f"ours-{shared}"
        cmd = [
            sys.executable,
            "-m",
            "mlx_tune",
            "train",
            *common_args(model, data, out, iters, args),
            "--shared-prefix",
            shared,
            "--lr-schedule",
            "constant",
            "--rank",
            str(args.rank),
            "--scale",
            "20",
            "--steps-per-report",
            str(nb),
            "--steps-per-eval",
            str(iters),
            "--save-every",
            str(iters),
            "--val-batches",
            "1",
            "--quiet",
        ]
        _, rss = run(cmd, work / f"ours-{shared}.log")
        rows = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "train_loss" in r]
        timed = rows[1:]
        tps = sum(r["real_tokens"] for r in timed) / sum(r["seconds"] for r in timed)
        return tps, rss, json.loads((out / "summary.json").read_text())["peak_memory_gb"]

    on_tps, on_rss, on_peak = ours("auto")
    off_tps, off_rss, off_peak = ours("off")

    # mlx-lm
    cfg = work / "mlx_lm.yaml"
    cfg.write_text(json.dumps({"lora_parameters": {"rank": args.rank, "scale": 20.0, "dropout": 0.0}}))
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm",
        "lora",
        "--train",
        *common_args(model, data, work / "mlx_lm_adapters", iters, args),
        "--mask-prompt",
        "--steps-per-report",
        str(nb),
        "--steps-per-eval",
        str(iters * 10),
        "--save-every",
        str(iters * 10),
        "--val-batches",
        "1",
        "--seed",
        "0",
        "-c",
        str(cfg),
    ]
    lines, mlx_rss = run(cmd, work / "mlx_lm.log")
    secs = mlx_lm_seconds(lines, nb, iters)
    real_per_epoch = sum(mlx_lm_lengths(model, data)[: nb * args.batch_size])
    mlx_tps = real_per_epoch * (args.epochs - 1) / secs

    print(
        f"mlx-tune train, shared prefix on:  {on_tps:,.0f} real tokens/s, peak RSS {on_rss:.3f} GB "
        f"(mlx peak {on_peak} GB)"
    )
    print(
        f"mlx-tune train, shared prefix off: {off_tps:,.0f} real tokens/s, peak RSS {off_rss:.3f} GB "
        f"(mlx peak {off_peak} GB)"
    )
    print(f"mlx_lm lora:                       {mlx_tps:,.0f} real tokens/s, peak RSS {mlx_rss:.3f} GB")
    print(f"shared prefix on / off: {on_tps / off_tps:.2f}")
    print(f"logs: {work}")
    print(f"ratio: {on_tps / mlx_tps:.2f}")


if __name__ == "__main__":
    main()
