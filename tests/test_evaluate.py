"""Batched evaluation on the tiny model: same answers as the plain per-query loop."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import pytest
from conftest import make_records

from mlx_tune import rendering
from mlx_tune.eval import evaluate
from mlx_tune.models import model_spec


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return model_spec.load_model(str(tiny_model))


def test_common_prefix():
    assert rendering.common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    # Every prompt keeps at least one token of its own.
    assert rendering.common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert rendering.common_prefix([]) == 0


def test_batched_matches_the_plain_loop(loaded):
    model, tokenizer = loaded
    queries = make_records(9) + make_records(3, fmt="code")
    batched = evaluate.generate_batched(model, tokenizer, queries, max_tokens=24, batch_size=4)
    loop = evaluate.generate_loop(model, tokenizer, queries, max_tokens=24)
    for ours, theirs, stopped in zip(batched.texts, loop.texts, batched.stopped_broken, strict=True):
        assert theirs.startswith(ours) if stopped else ours == theirs  # see the broken-call test
    assert batched.prefix_tokens > 20  # the system prompt is shared and computed once
    assert all(0 < c <= 24 for c in batched.token_counts)
    assert batched.generation_tokens >= sum(batched.token_counts)
    assert batched.prompt_tps > 0 and batched.generation_tps > 0
    assert all(lat > 0 for lat in batched.latencies)


def emitting(tiny_model, queries, token: str):
    """The tiny model with its output layer changed so that it emits ``token`` where it would
    emit its most frequent other token on ``queries`` (two rows of the output weights swap)."""
    from collections import Counter

    from mlx_lm.generate import generate_step

    model, tokenizer = model_spec.load_model(str(tiny_model))
    eos, closer = evaluate._stop_tokens(tokenizer)
    target = tokenizer.convert_tokens_to_ids(token)
    emitted = Counter()
    for p in rendering.render_prompts(tokenizer, queries):
        emitted.update(list(t for t, _ in generate_step(mx.array(p), model, max_tokens=16))[1:])
    x = next(t for t, _ in emitted.most_common() if t not in eos | {closer, target})
    order = list(range(model.model.embed_tokens.weight.shape[0]))
    order[x], order[target] = target, x
    out = model.lm_head.weight if hasattr(model, "lm_head") else model.model.embed_tokens.weight
    model.lm_head = nn.Linear(out.shape[1], out.shape[0], bias=False)
    model.lm_head.weight = out[mx.array(order)]
    model.args.tie_word_embeddings = False
    return model, tokenizer


def test_batched_stops_at_the_closing_tag_where_the_loop_is_cut(tiny_model):
    """An untrained model never closes a tool call, so make it emit ``</tool_call>`` often. The
    batched path must stop right there (a stop token, nothing detokenized) and still give the
    plain loop's answers, which run on and are cut by ``finish_text``."""
    queries = make_records(8)
    model, tokenizer = emitting(tiny_model, queries, "</tool_call>")
    batched = evaluate.generate_batched(model, tokenizer, queries, max_tokens=16, batch_size=3)
    loop = evaluate.generate_loop(model, tokenizer, queries, max_tokens=16)
    assert batched.texts == loop.texts
    closed = [i for i, t in enumerate(batched.texts) if t.endswith("</tool_call>")]
    assert closed  # the relabelled token was emitted, so some answers closed a call
    assert all(batched.token_counts[i] < loop.token_counts[i] for i in closed)


def test_code_mode_completion_is_checked_only_after_a_backtick(loaded):
    _, tokenizer = loaded
    has_backtick = evaluate._backtick_checker(tokenizer)
    fence = tokenizer.encode("```", add_special_tokens=False)
    assert has_backtick(fence[-1]) and not has_backtick(tokenizer.encode("a", add_special_tokens=False)[0])
    body = tokenizer.encode('```python\ngrep("x")\n', add_special_tokens=False)
    assert not evaluate._complete(tokenizer, body, "code", closer=None, backtick=has_backtick)
    closed = body + fence
    assert evaluate._complete(tokenizer, closed, "code", closer=None, backtick=has_backtick)
    assert not evaluate._complete(tokenizer, closed, "tools", closer=None, backtick=has_backtick)
    call = tokenizer.encode('<tool_call>{"name": "read"}</tool_call>', add_special_tokens=False)
    assert evaluate._complete(tokenizer, call, "tools")  # no closer token: found in the text


def trajectories(n: int = 3) -> list[dict]:
    """Trajectory records (one and two calls, tool messages, grounded answers) in both formats."""
    from mlx_tune import records

    meta = {"category": "grep", "origin": "synthetic", "source": "repo:demo", "generator": "test/1"}
    out = []
    for i in range(n):
        grep = ("grep", {"pattern": f"class Thing{i}"}, f"demo/mod{i}.py:{i + 3}:class Thing{i}:")
        read = ("read", {"path": f"demo/mod{i}.py", "start_line": i + 3}, f"demo/mod{i}.py (lines 3-4 of 4)")
        steps = [grep] if i % 2 else [grep, read]
        answer = f"Thing{i} is defined in demo/mod{i}.py at line {i + 3}."
        for fmt in records.FORMATS:
            out.append(records.trajectory_record(f"Where is Thing{i}?", steps, answer, meta, fmt))
    return out


def test_perplexity_is_the_training_rendering_in_one_forward_pass(loaded):
    """Perplexity scores exactly what training trains (every assistant turn, as
    ``rendering.tokenize_record`` renders and masks it): equal to a plain full forward pass."""
    from mlx_tune.rendering import tokenize_record

    model, tokenizer = loaded
    queries = make_records(6) + make_records(3, fmt="code") + trajectories()
    ppl = evaluate.perplexity(model, tokenizer, queries)
    nll, n = 0.0, 0
    for r in queries:
        ex = tokenize_record(tokenizer, r, mask_prompt=True)
        logits = model(mx.array(ex.tokens[:-1])[None])[0]
        for s, e in ex.spans:
            target = mx.array(ex.tokens[s:e])
            nll += nn.losses.cross_entropy(logits[s - 1 : e - 1], target, reduction="sum").item()
            n += e - s
    assert ppl == pytest.approx(math.exp(nll / n), rel=1e-4)
    # A trajectory trains every assistant turn: its calls and its final answer.
    assert len(tokenize_record(tokenizer, trajectories(1)[0]).spans) == 3
    # An untrained model: near uniform over the vocabulary, certainly finite and > 1.
    assert 1 < ppl < 10 * len(tokenizer.get_vocab())
    assert evaluate.perplexity(model, tokenizer, []) is None


def test_prompts_end_before_the_first_assistant_turn(loaded):
    """A trajectory's prompt is its system and user messages, never its calls or final answer."""
    from mlx_tune import records

    _, tokenizer = loaded
    queries = trajectories(2)
    for r, ids in zip(queries, rendering.render_prompts(tokenizer, queries), strict=True):
        text = tokenizer.decode(ids)
        assert text.endswith("<|im_start|>assistant\n")
        assert r["messages"][1]["content"] in text
        assert "<tool_response>" not in text and records.answer_of(r)["content"] not in text
        assert text.count("Thing") == 1  # in the question only, not in a call or its output
        assert ids == rendering.render_messages(tokenizer, records.prompt_messages(r), r.get("tools"))


def test_eval_speed_script(tiny_model, tmp_path, capsys):
    import importlib.util
    import re
    from pathlib import Path

    from mlx_tune.fileio import write_jsonl

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "eval_speed.py"
    spec = importlib.util.spec_from_file_location("eval_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_jsonl(tmp_path / "q.jsonl", make_records(6))
    args = ["--model", str(tiny_model), "--queries", str(tmp_path / "q.jsonl"), "--max-tokens", "8"]
    assert module.main([*args, "--batch-size", "3"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"ratio: (\d+\.\d\d) agreement: (\d\.\d\d\d)", last)
    assert m and float(m.group(1)) > 0 and m.group(2) == "1.000"


class Scripted(nn.Module):
    """A model that runs ``model`` (so its KV cache is real) but then emits ``script[t]`` after
    any input token ``t`` in ``script``."""

    def __init__(self, model, script: dict[int, int]):
        super().__init__()
        self.inner = model
        vocab = model.model.embed_tokens.weight.shape[0]
        self.next_of = mx.array([script.get(t, -1) for t in range(vocab)])

    @property
    def layers(self):
        return self.inner.layers

    def __call__(self, inputs, cache=None, **kwargs):
        logits = self.inner(inputs, cache=cache, **kwargs)
        forced = self.next_of[inputs][..., None]
        return logits + 1e4 * (mx.arange(logits.shape[-1]) == forced)


def test_broken_tool_calls_stop_early_and_score_the_same(loaded, tmp_path):
    """A model that answers ``<tool_call>{::::...`` (a key is missing: broken at the first ``:``).
    Answers in the tools format stop there and are the start of the loop's answers; every per-query
    score is the same; code-mode answers run on."""
    from mlx_tune.eval import metrics

    model, tokenizer = loaded
    queries = make_records(9) + make_records(3, fmt="code")
    (brace,), (colon,) = (tokenizer.encode(c, add_special_tokens=False) for c in "{:")
    opener = tokenizer.convert_tokens_to_ids("<tool_call>")
    prompt_end = rendering.render_prompts(tokenizer, queries)[0][-1]
    model = Scripted(model, {prompt_end: opener, opener: brace, brace: colon, colon: colon})

    batched = evaluate.generate_batched(model, tokenizer, queries, max_tokens=24, batch_size=4)
    loop = evaluate.generate_loop(model, tokenizer, queries, max_tokens=24)
    stopped = [i for i, s in enumerate(batched.stopped_broken) if s]
    assert stopped == list(range(9))  # every tools-format answer, direct queries' too
    for i, (ours, theirs) in enumerate(zip(batched.texts, loop.texts, strict=True)):
        assert theirs.startswith("<tool_call>{::")
        if i in stopped:
            assert ours == "<tool_call>{:" and evaluate.broken_tool_call(ours)
        else:
            assert ours == theirs
    ours = metrics.score(queries, batched.texts, base=tmp_path)
    theirs = metrics.score(queries, loop.texts, base=tmp_path)
    assert ours["per_query"] == theirs["per_query"]
    kept = evaluate.generate_batched(
        model, tokenizer, queries, max_tokens=24, batch_size=4, stop_broken_calls=False
    )
    assert kept.texts == loop.texts and not any(kept.stopped_broken)
