"""Training outputs on disk: the adapter (mlx-lm's ``adapters.safetensors`` + ``adapter_config.json``)
and resumable checkpoints (adapter, optimizer state, step and the run's counters)."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_tune import fileio


def save_adapter(model, out_dir: Path, adapter_config: dict) -> int:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` as a directory, atomically."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.trainable_parameters()))
    with fileio.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        mx.save_safetensors(str(tmp / "adapters.safetensors"), weights)
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return (out_dir / "adapters.safetensors").stat().st_size


def save_adapter_files(model, out_dir: Path, adapter_config: dict) -> int:
    """Write the adapter files into an existing directory (each file atomically)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.trainable_parameters()))
    with fileio.atomic_path(out_dir / "adapters.safetensors") as tmp:
        mx.save_safetensors(str(tmp), weights)
    fileio.write_json(out_dir / "adapter_config.json", adapter_config)
    return (out_dir / "adapters.safetensors").stat().st_size


def step_seed(seed: int, step: int) -> int:
    """The RNG (dropout) is reseeded from (seed, step) after every optimizer update, so a resumed
    run draws the same dropout masks as an uninterrupted one (mlx's RNG state cannot be restored)."""
    return (seed * 1_000_003 + step) % (2**63)


def save_checkpoint(ckpt_dir: Path, model, optimizer, step: int, state: dict, keep: int) -> Path:
    """``ckpt_dir/step_NNNNNNN``: adapter, optimizer state and ``state.json``; keeps the newest ``keep``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    target = ckpt_dir / f"step_{step:07d}"
    with fileio.atomic_path(target) as tmp:
        tmp.mkdir()
        mx.save_safetensors(
            str(tmp / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
        )
        opt = dict(tree_flatten(optimizer.state))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True) + "\n")
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep]:
        fileio._rmtree(old)
    return target


def latest_checkpoint(adapter_path: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or ``None``."""
    found = sorted(
        p for p in (Path(adapter_path) / "checkpoints").glob("step_*") if (p / "state.json").is_file()
    )
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Load a checkpoint's adapter and optimizer state; return its ``state.json``."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    model.load_weights(str(path / "adapters.safetensors"), strict=False)
    opt = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt.items()))
    return json.loads((path / "state.json").read_text())
