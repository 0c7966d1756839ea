"""What the benchmark measures besides accuracy: load time in fresh processes, sizes on disk,
trainable parameters, the machine."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlx_tune import UserError

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


def measure_load_time(spec: str, repeats: int = 3) -> list[float]:
    """Seconds from ``mlx_lm.load`` to the first token's logits, each run in a fresh process."""
    from mlx_tune.models.model_spec import check_spec

    s = check_spec(spec)
    times = []
    for _ in range(max(repeats, 0)):
        proc = subprocess.run(
            [sys.executable, "-c", _LOAD_PROBE, s.base, s.adapter or ""],
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
    from mlx_tune.models.model_spec import parse_spec

    base, adapter = (s := parse_spec(spec)).base, s.adapter
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


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


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
