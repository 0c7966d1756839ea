"""Every record shape rendered through Qwen2.5's real chat template (the tiny model carries it
unmodified), and mlx-lm's own dataset code against mlx-tune's tokenizing of the same records."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from mlx_tune import fileio, records
from mlx_tune.models.tiny import render_chat
from mlx_tune.rendering import tokenize_record

META = {"category": "grep", "origin": "synthetic", "source": "repo:demo", "generator": "test/1"}
GREP_ARGS = {"pattern": r"class Café\b", "path": "pkg"}
READ_ARGS = {"path": "pkg/café.py", "start_line": 3, "end_line": 9}
GREP_OUT = "pkg/café.py:3:class Café:"
READ_OUT = "pkg/café.py (lines 3-9 of 20)\n   3| class Café:\n   4|     pass"


def _shapes(fmt: str) -> dict[str, dict]:
    q = "Where is Café defined?"
    return {
        "call-only": records.tool_call_record(q, "grep", GREP_ARGS, META, fmt),
        "grep-answer": records.trajectory_record(
            q, [("grep", GREP_ARGS, GREP_OUT)], "In pkg/café.py, line 3.", META, fmt
        ),
        "grep-read-answer": records.trajectory_record(
            q,
            [("grep", GREP_ARGS, GREP_OUT), ("read", READ_ARGS, READ_OUT)],
            "Café is an empty class in pkg/café.py, line 3.",
            META,
            fmt,
        ),
        "direct": records.direct_record("What is a café?", "A small restaurant.", META, fmt),
    }


ALL_SHAPES = [(fmt, name) for fmt in records.FORMATS for name in _shapes(fmt)]


@pytest.fixture(scope="module")
def tokenizers(tiny_model):
    from mlx_lm.utils import load_tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model)), load_tokenizer(tiny_model)


def _render(tok, record: dict, messages: list[dict] | None = None) -> str:
    msgs = record["messages"] if messages is None else messages
    return tok.apply_chat_template(msgs, tools=record.get("tools"), tokenize=False)


@pytest.mark.parametrize("fmt, shape", ALL_SHAPES)
def test_every_shape_renders_arguments_once_as_json(tokenizers, fmt, shape):
    hf, mlx_tok = tokenizers
    record = _shapes(fmt)[shape]
    text = _render(hf, record)
    assert _render(mlx_tok, record) == text == render_chat(record["messages"], record.get("tools"))
    assert '"arguments": "' not in text  # never a JSON string inside the call
    calls = records.record_calls(record)
    if fmt == "tools":
        for tool, args in calls:
            # Qwen2.5's tojson: ensure_ascii off, default separators.
            call = '{"name": "' + tool + '", "arguments": ' + json.dumps(args, ensure_ascii=False) + "}"
            assert f"<tool_call>\n{call}\n</tool_call>" in text
        assert text.count('<tool_call>\n{"name": "') == len(calls)  # the header shows <function-name>
    else:
        assert "<tool_call>" not in text and "# Tools" not in text
        for tool, args in calls:
            assert records.render_code_call(tool, args) in text
    for m in record["messages"]:
        if m["role"] == "tool":
            assert f"<tool_response>\n{m['content']}\n</tool_response>" in text
    assert text.endswith("<|im_end|>\n")


@pytest.mark.parametrize("shape", ["call-only", "grep-read-answer"])
def test_json_string_arguments_render_like_objects_after_templated_messages(tokenizers, shape):
    hf, _ = tokenizers
    record = _shapes("tools")[shape]
    as_strings = json.loads(json.dumps(record))
    for m in as_strings["messages"]:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])  # mlx-lm's docs
    # Raw, the real template encodes them twice: what training on such records would teach.
    assert '"arguments": "{' in _render(hf, as_strings)
    assert _render(hf, as_strings, records.templated_messages(as_strings)) == _render(hf, record)


def _mlx_lm_trained_tokens(batch, lengths) -> set[int]:
    """Token indices mlx-lm's ``default_loss`` trains on: the rows of d(loss)/d(logits) that are
    non-zero (a stand-in model returns the logits directly, so the mask is read off its gradient)."""
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    logits = mx.zeros((batch.shape[0], batch.shape[1] - 1, int(batch.max().item()) + 1))
    grad = mx.grad(lambda x: default_loss(lambda _: x, batch, lengths)[0])(logits)
    rows = np.nonzero(np.abs(np.array(grad[0])).sum(-1))[0]
    return {int(j) + 1 for j in rows}  # logits row j predicts token j + 1


def test_mlx_lm_dataset_code_gives_the_same_tokens_and_documented_trained_positions(tiny_model, tmp_path):
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import iterate_batches
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_model)
    recs = [r for fmt in records.FORMATS for r in _shapes(fmt).values()]
    fileio.write_jsonl(tmp_path / "train.jsonl", recs)
    args = types.SimpleNamespace(data=str(tmp_path), mask_prompt=True, train=True, test=False)
    train_set, _, _ = load_dataset(args, tok)  # what `mlx_lm lora --train --mask-prompt` reads
    theirs = CacheDataset(train_set)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    multi_turn = 0
    for i, record in enumerate(recs):
        tokens, offset = theirs[i]
        ours = tokenize_record(tok, record)
        assert ours.tokens == list(tokens)
        batch, lengths = next(iterate_batches([theirs[i]], 1, 4096))
        mlx_trained = _mlx_lm_trained_tokens(batch, lengths)
        our_trained = {t for s, e in ours.spans for t in range(s, e)}
        n = len(tokens)
        last_start, last_end = ours.spans[-1]
        # Both train the last assistant message from its first token through "<|im_end|>\n".
        # mlx-lm's mask runs to `length` inclusive, so it also trains one position past the end
        # (predicting the padding id 0 after the final newline); mlx-tune does not.
        assert (last_start, last_end) == (offset, n) and tokens[-2] == im_end
        assert mlx_trained == set(range(offset, n + 1))
        assert mlx_trained - our_trained == {n} and batch[0, n].item() == 0
        # mlx-tune trains every assistant turn; earlier calls of a trajectory only here.
        earlier = our_trained - mlx_trained
        n_assistant = sum(m["role"] == "assistant" for m in record["messages"])
        assert len(ours.spans) == n_assistant
        assert bool(earlier) == (n_assistant > 1)
        multi_turn += n_assistant > 1
    assert multi_turn == 4  # the two trajectory shapes, in both formats
