"""Brief language-model pretraining of the tiny model on local text, cached per machine.

A random tiny base cannot learn the tool-or-search decision in a demo's budget: its attention does
not yet look at the question. A few hundred steps of next-token prediction on local code,
docstrings and plain chat turns (:mod:`mlx_tune.models.tiny_corpus`) give it that, the way a real
instruct model arrives at fine-tuning already able to read. The weights are cached under
:func:`cache_dir` by a hash of everything that shapes them, so a second build loads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from mlx_tune import UserError, __version__, fileio

PRETRAIN = {"batch_size": 8, "seq_len": 256, "learning_rate": 2e-3, "warmup": 20}


def versions() -> dict[str, str]:
    """The library versions that shape a build (part of the cache key and of the build record)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("mlx", "mlx-lm", "tokenizers")} | {"mlx_tune": __version__}


def cache_dir() -> Path:
    """Where pretrained tiny weights are cached: ``$MLX_TUNE_CACHE`` or ``~/.cache/mlx_tune``."""
    return Path(os.environ.get("MLX_TUNE_CACHE") or Path.home() / ".cache" / "mlx_tune")


def cached_path(tok, texts: list[str], config: dict, steps: int, seed: int) -> Path:
    """The cache file for these inputs (it may not exist yet)."""
    tok_hash = hashlib.sha256(tok.to_str().encode()).hexdigest()
    key_src = json.dumps(
        {"config": config, "steps": steps, "seed": seed, "pretrain": PRETRAIN, "tok": tok_hash}
        | {"text": hashlib.sha256("\x00".join(texts).encode()).hexdigest(), "versions": versions()},
        sort_keys=True,
    )
    return cache_dir() / "tiny" / hashlib.sha256(key_src.encode()).hexdigest()[:32] / "model.safetensors"


def pretrain(model, tok, texts: list[str], config: dict, steps: int, seed: int, eot_token: str) -> None:
    """Train ``model`` in place for ``steps`` steps on ``texts`` (or load the cached result)."""
    import mlx.core as mx
    import numpy as np

    cached = cached_path(tok, texts, config, steps, seed)
    if cached.is_file():
        model.load_weights(str(cached))
        mx.eval(model.parameters())
        return

    eot = tok.token_to_id(eot_token)
    ids: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    seq = PRETRAIN["seq_len"] + 1
    data = np.array(ids[: len(ids) // seq * seq], dtype=np.int32).reshape(-1, seq)
    if len(data) == 0:
        raise UserError("pretraining corpus is empty: give --corpus files or use --pretrain-steps 0")
    lm_train(model, data, steps, seed, PRETRAIN["batch_size"], PRETRAIN["learning_rate"], PRETRAIN["warmup"])
    cached.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(cached) as tmp:
        mx.save_safetensors(str(tmp), flat_params(model))


def flat_params(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.parameters()))


def lm_train(model, data, steps: int, seed: int, batch_size: int, lr: float, warmup: int) -> None:
    """Next-token training on random windows of ``data`` (rows of token ids): AdamW, linear
    warmup, cosine decay to a tenth of ``lr``."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from tqdm import tqdm

    def loss_fn(model, batch):
        logits = model(batch[:, :-1])
        return nn.losses.cross_entropy(logits, batch[:, 1:], reduction="mean")

    warmup = min(warmup, max(steps - 1, 0))
    schedule = optim.join_schedules(
        [optim.linear_schedule(lr / 20, lr, warmup), optim.cosine_decay(lr, max(1, steps - warmup), lr / 10)],
        [warmup],
    )
    opt = optim.AdamW(learning_rate=schedule, weight_decay=0.01)
    step_fn = nn.value_and_grad(model, loss_fn)
    rng = np.random.RandomState(seed)
    model.train()
    with tqdm(range(steps), desc="pretrain tiny", file=sys.stderr, leave=False) as bar:
        for _ in bar:
            batch = mx.array(data[rng.randint(0, len(data), size=batch_size)])
            loss, grads = step_fn(model, batch)
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state, loss)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
