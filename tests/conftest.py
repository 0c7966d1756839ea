"""Shared fixtures. Tests never use the network; models are built in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_tune import fileio, records


def one_line_error(result) -> str:
    """The one ``Error: ...`` line of a CliRunner result that failed cleanly (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def make_records(n: int = 12, fmt: str = "tools") -> list[dict]:
    """``n`` small valid records cycling grep / read / direct, each from its own source file."""
    out = []
    for i in range(n):
        kind = records.CATEGORIES[i % 3]
        meta = {
            "category": kind,
            "origin": "synthetic",
            "source": "repo:demo",
            "repo": "demo",
            "path": f"demo/mod{i}.py",
            "symbol": f"Thing{i}",
            "kind": "class",
            "generator": "test/1",
        }
        if kind == "grep":
            r = records.tool_call_record(
                f"Where is Thing{i} defined?",
                "grep",
                {"pattern": rf"class Thing{i}\b", "path": "demo"},
                meta,
                fmt,
            )
        elif kind == "read":
            r = records.tool_call_record(
                f"Show me demo/mod{i}.py.", "read", {"path": f"demo/mod{i}.py"}, meta, fmt
            )
        else:
            r = records.direct_record(
                f"What does Thing{i} do?", f"Thing{i} holds item number {i}.", meta, fmt
            )
        out.append(r)
    return out


def loss_and_grads(model, loss_fn, batch):
    """``(loss, trained tokens, {name: gradient})`` of ``loss_fn(model, *batch)``."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    (value, ntoks), grads = nn.value_and_grad(model, loss_fn)(model, *batch)
    return value.item(), ntoks.item(), dict(tree_flatten(grads))


def assert_close(a: dict, b: dict, rtol: float = 1e-5):
    """Equal keys, each array within ``rtol`` of its largest magnitude (which must be non-zero)."""
    import mlx.core as mx

    assert a.keys() == b.keys()
    for k in a:
        scale = mx.abs(a[k]).max().item()
        assert scale > 0, k
        assert mx.abs(a[k] - b[k]).max().item() <= rtol * scale, k


@pytest.fixture
def sample_records():
    return make_records


def write_data(d: Path, n_train: int = 16, n_valid: int = 4) -> Path:
    """A data dir with ``train.jsonl`` and ``valid.jsonl`` of :func:`make_records` records."""
    recs = make_records(n_train + n_valid)
    fileio.write_jsonl(d / "train.jsonl", recs[:n_train])
    fileio.write_jsonl(d / "valid.jsonl", recs[n_train:])
    return d


def train_settings(model, data, out, **kw):
    """Short LoRA ``TrainSettings`` for the tiny model (``kw`` overrides any field)."""
    from mlx_tune.training.train_config import TrainSettings

    base = dict(
        model=str(model),
        data=str(data),
        adapter_path=str(out),
        iters=6,
        batch_size=4,
        learning_rate=5e-3,
        num_layers=-1,
        rank=4,
        steps_per_eval=3,
        steps_per_report=2,
        save_every=2,
        max_seq_length=1024,
    )
    base.update(kw)
    return TrainSettings(**base)


# Small enough to build in a few seconds: float32, no pretraining, a 512-token BPE vocabulary.
TINY_TEST_SIZE = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "max_corpus_chars": 300_000,
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny float32 Qwen2 model directory (mlx_lm.load-able), built once per session."""
    from mlx_tune.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", pretrain_steps=0, **TINY_TEST_SIZE)


@pytest.fixture(scope="session")
def tiny_model_4bit(tmp_path_factory):
    """The same tiny model, 4-bit quantized (group size 64), for QLoRA paths."""
    from mlx_tune.models.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny4") / "model", bits=4, pretrain_steps=0, **TINY_TEST_SIZE
    )
