"""Training throughput: `mlx-tune train` (shared prefix on and off) against `mlx_lm lora`.

    .venv/bin/python benchmarks/train_speed.py [--model DIR] [--data DIR] [--epochs 3] [--batch-size 4]
    .venv/bin/python benchmarks/train_speed.py --task chat [--max-train 64]

Three fresh subprocesses, one after the other, same model, data and LoRA settings (prompt masking
on): ``mlx-tune train`` with every optimisation (``--shared-prefix auto``), the same with
``--shared-prefix off``, and ``mlx_lm lora``. Each trains ``epochs`` whole passes over the
training set (cut to a multiple of the batch size, so every example is seen once per epoch by
each); the first epoch (compilation) is left out of the timing. Throughput is in real
(non-padding) tokens per second of training-step time (validation excluded), counted as each
tool tokenizes the data. Peak memory: the child process' maximum resident set size (and, for
ours, mlx's own peak). Data: data/phase7 if present (``--data`` to choose). The last line is
``ratio: N.NN``: ours (shared prefix on) over mlx-lm's (targets: >= 2x, and >= 1.6x on over off).

``--task chat``: a variable-length chat set built offline (:func:`chat_records`: "What does X do?"
questions about the standard library, answered by X's docstring, no tools), and ours packed
(``--packing on``, :mod:`mlx_tune.training.packing`) and unpacked (``--packing off``) against ``mlx_lm
lora``, each with the share of its computed positions that is padding (mlx-lm's from its own
batching rule: consecutive records, padded to 1 + a multiple of 32). The last line is
``ratio: N.NN``: ours packed over mlx-lm's (target: >= 1.5x).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
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


# Standard-library modules whose docstrings make the chat set (parsed with ast, never imported).
CHAT_MODULES = (
    "argparse ast bisect calendar configparser csv dataclasses difflib enum fractions functools "
    "gettext heapq inspect json/__init__ json/decoder json/encoder pathlib pprint random shutil "
    "statistics string subprocess tarfile tempfile textwrap threading typing zipfile/__init__"
).split()


def chat_records(n: int, seed: int = 0, max_chars: int = 1500) -> list[dict]:
    """``n`` plain Q&A chat records (no tools): "What does json.dumps do?" answered by the cleaned
    docstring of ``json.dumps`` (cut at a paragraph before ``max_chars``), from the standard
    library's sources, so the answers run from one line to a page. Deterministic for a seed."""
    from mlx_tune.docstrings import clean_docstring

    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for name in CHAT_MODULES:
        path = root / f"{name}.py"
        if not path.is_file():
            continue
        module = name.removesuffix("/__init__").replace("/", ".")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            inner = node.body if isinstance(node, ast.ClassDef) else []
            for item in [node, *inner]:
                if not isinstance(item, (ast.FunctionDef, ast.ClassDef)) or item.name.startswith("_"):
                    continue
                qual = item.name if item is node else f"{node.name}.{item.name}"
                text = clean_docstring(ast.get_docstring(item))
                while len(text) > max_chars and "\n\n" in text:
                    text = text.rsplit("\n\n", 1)[0]
                if len(text.split()) >= 4 and len(text) <= max_chars:
                    found.append((f"{module}.{qual}", text))
    found.sort()
    random.Random(seed).shuffle(found)
    return [
        {
            "messages": [
                {"role": "user", "content": f"What does {name} do?"},
                {"role": "assistant", "content": text},
            ]
        }
        for name, text in found[:n]
    ]


def prepare_data(src: Path | None, batch_size: int, out: Path, max_train: int, task: str = "tools") -> Path:
    from mlx_tune import fileio

    if task == "chat":
        recs = chat_records(max_train + 16)
        train, valid = recs[:max_train], recs[max_train:]
    elif src is not None:
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


def mlx_lm_padding(lengths: list[int], batch_size: int, max_seq_length: int) -> float:
    """The padding share of mlx-lm's batches over an epoch: it sorts by ``CacheDataset.itemlen``
    (the record's key count, the same for every record here), so batches are consecutive records,
    each padded to 1 + a multiple of 32 (at most ``max_seq_length``)."""
    real = padded = 0
    for i in range(0, len(lengths) - batch_size + 1, batch_size):
        batch = lengths[i : i + batch_size]
        width = min(1 + 32 * ((max(batch) + 31) // 32), max_seq_length)
        real += sum(min(n, width) for n in batch)
        padded += batch_size * width
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="mlx-lm model dir (default: the tiny model)")
    ap.add_argument(
        "--data", type=Path, help="dir with train/valid.jsonl (default: data/phase7 or generated)"
    )
    ap.add_argument(
        "--task",
        choices=("tools", "chat"),
        default="tools",
        help="tools: the tool-use data (shared prefix on/off); chat: docstring Q&A (packing on/off)",
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
    chat = args.task == "chat"
    src = args.data or (ROOT / "data/phase7" if (ROOT / "data/phase7/train.jsonl").is_file() else None)
    if chat:
        src = None
    work = Path(tempfile.mkdtemp(prefix="train_speed."))
    data = prepare_data(src, args.batch_size, work / "data", args.max_train, args.task)
    n_train = sum(1 for _ in open(data / "train.jsonl"))
    nb = n_train // args.batch_size
    iters = nb * args.epochs
    what = "standard-library docstring Q&A" if chat else (src or "generated records")
    print(
        f"model {model}\ndata {what}: {n_train} train records, batch {args.batch_size}, "
        f"{args.epochs} epochs = {iters} iterations (first epoch untimed)"
    )

    def ours(name: str, flags: list[str]) -> dict:
        out = work / f"ours-{name}"
        cmd = [
            sys.executable,
            "-m",
            "mlx_tune",
            "train",
            *common_args(model, data, out, iters, args),
            *flags,
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
        _, rss = run(cmd, work / f"ours-{name}.log")
        rows = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "train_loss" in r]
        timed = rows[1:]
        summary = json.loads((out / "summary.json").read_text())
        return {
            "tps": sum(r["real_tokens"] for r in timed) / sum(r["seconds"] for r in timed),
            "rss": rss,
            "peak": summary["peak_memory_gb"],
            "padding": summary["padding_share"],
        }

    if chat:
        runs = {
            "packed": ours("packed", ["--packing", "on"]),
            "unpacked": ours("unpacked", ["--packing", "off"]),
        }
    else:
        runs = {
            "shared prefix on": ours("auto", ["--shared-prefix", "auto", "--packing", "off"]),
            "shared prefix off": ours("off", ["--shared-prefix", "off", "--packing", "off"]),
        }

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
    lengths = mlx_lm_lengths(model, data)[: nb * args.batch_size]
    mlx_tps = sum(lengths) * (args.epochs - 1) / secs
    mlx_pad = mlx_lm_padding(lengths, args.batch_size, args.max_seq_length)

    for name, r in runs.items():
        label = f"mlx-tune train, {name}:"
        print(
            f"{label:<35}{r['tps']:,.0f} real tokens/s, padding {r['padding']:.1%}, peak RSS "
            f"{r['rss']:.3f} GB (mlx peak {r['peak']} GB)"
        )
    print(
        f"{'mlx_lm lora:':<35}{mlx_tps:,.0f} real tokens/s, padding {mlx_pad:.1%}, peak RSS {mlx_rss:.3f} GB"
    )
    first, second = list(runs)
    print(f"{first} / {second}: {runs[first]['tps'] / runs[second]['tps']:.2f}")
    print(f"logs: {work}")
    print(f"ratio: {runs[first]['tps'] / mlx_tps:.2f}")


if __name__ == "__main__":
    main()
