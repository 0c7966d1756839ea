"""Shared fixtures. Tests never use the network; models are built in-process."""

from __future__ import annotations

import pytest

from mlx_tune import records


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


@pytest.fixture
def sample_records():
    return make_records


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
    from mlx_tune.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", pretrain_steps=0, **TINY_TEST_SIZE)


@pytest.fixture(scope="session")
def tiny_model_4bit(tmp_path_factory):
    """The same tiny model, 4-bit quantized (group size 64), for QLoRA paths."""
    from mlx_tune.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny4") / "model", bits=4, pretrain_steps=0, **TINY_TEST_SIZE
    )
