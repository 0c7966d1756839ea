"""Batched evaluation on the tiny model: same answers as the plain per-query loop."""

from __future__ import annotations

import math

import pytest
from conftest import make_records

from mlx_tune import UserError, evaluate


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return evaluate.load_model(str(tiny_model))


def test_common_prefix():
    assert evaluate.common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    # Every prompt keeps at least one token of its own.
    assert evaluate.common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert evaluate.common_prefix([]) == 0


def test_batched_matches_the_plain_loop(loaded):
    model, tokenizer = loaded
    queries = make_records(9) + make_records(3, fmt="code")
    batched = evaluate.generate_batched(model, tokenizer, queries, max_tokens=24, batch_size=4)
    loop = evaluate.generate_loop(model, tokenizer, queries, max_tokens=24)
    assert batched.texts == loop.texts
    assert batched.prefix_tokens > 20  # the system prompt is shared and computed once
    assert all(0 < c <= 24 for c in batched.token_counts)
    assert batched.generation_tokens >= sum(batched.token_counts)
    assert batched.prompt_tps > 0 and batched.generation_tps > 0
    assert all(lat > 0 for lat in batched.latencies)


def test_perplexity_is_finite(loaded):
    model, tokenizer = loaded
    ppl = evaluate.perplexity(model, tokenizer, make_records(6), batch_size=4)
    # An untrained model: close to uniform over the vocabulary, certainly finite and > 1.
    assert ppl is not None and 1 < ppl < 10 * len(tokenizer.get_vocab()) and math.isfinite(ppl)


def test_bad_specs_name_what_is_wrong(tiny_model, tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        evaluate.load_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="adapters.safetensors"):
        evaluate.load_model(f"{tiny_model}@{tmp_path}")
    with pytest.raises(UserError, match="expected MODEL or MODEL@ADAPTER_DIR"):
        evaluate.parse_spec("model@")
