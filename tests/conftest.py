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
