"""``decision_weight``: the first token of every assistant turn weighs more in the training loss.

Checked against a reference computation (full logits, per-token cross-entropy in numpy), and the
shared-prefix and packed paths against the plain one, with the weights on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlx_tune import UserError, records
from mlx_tune.training import packing, prefix, train
from mlx_tune.training.batching import tokenize_split, trained_weights
from mlx_tune.training.train_config import TrainSettings, validate_settings
from tests.conftest import assert_close, loss_and_grads, make_records, train_settings, write_data

mx = pytest.importorskip("mlx.core")

W = 7.0


@pytest.fixture(scope="module")
def lora(tiny_model):
    import mlx_lm
    from mlx.utils import tree_map

    model, tokenizer = mlx_lm.load(str(tiny_model))
    mx.random.seed(0)
    train.setup_model(model, TrainSettings(model="-", data="-", iters=1, num_layers=-1, rank=4))
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    mx.eval(model.parameters())
    return model, tokenizer


def trajectory(i: int) -> dict:
    """A two-turn record: a grep call, its output, then the answer (two assistant turns)."""
    meta = {"category": "grep", "origin": "synthetic", "source": "repo:demo", "generator": "test/1"}
    return records.trajectory_record(
        f"Where is Thing{i} defined?",
        [("grep", {"pattern": f"class Thing{i}"}, f"demo/mod{i}.py:3:class Thing{i}:")],
        f"Thing{i} is defined in demo/mod{i}.py.",
        meta,
    )


def weighted(tokenizer, n: int = 6) -> list:
    s = TrainSettings(model="-", data="-", iters=1, max_seq_length=4096)
    recs = make_records(n) + [trajectory(i) for i in range(2)]
    return tokenize_split(tokenizer, recs, s, decision_weight=W).examples


def test_the_first_token_of_every_assistant_turn_is_weighted(lora):
    _, tokenizer = lora
    exs = weighted(tokenizer)
    call_id = tokenizer.convert_tokens_to_ids("<tool_call>")
    for e in exs:
        w = trained_weights(e)
        assert len(w) == e.n_trained and len(e.spans) >= 1
        starts = np.cumsum([0] + [t - s for s, t in e.spans[:-1]])
        assert sorted(np.flatnonzero(w != 1).tolist()) == starts.tolist()
        assert (w[starts] == W).all()
    # A call's first token is <tool_call>; the trajectories weigh their call and their answer.
    firsts = [e.tokens[e.spans[0][0]] for e in exs]
    assert firsts.count(call_id) == 4 + 2  # make_records(6): 2 grep + 2 read; 2 trajectories
    assert [len(e.spans) for e in exs[-2:]] == [2, 2]
    # The default (and validation) keeps every weight at 1: no weights stored at all.
    plain = tokenize_split(tokenizer, make_records(3), TrainSettings(model="-", data="-", iters=1))
    assert all(e.weights is None for e in plain.examples)


def test_truncated_examples_keep_one_weight_per_trained_token(lora):
    _, tokenizer = lora
    s = TrainSettings(model="-", data="-", iters=1, max_seq_length=40, long_sequences="truncate")
    data = tokenize_split(tokenizer, [trajectory(0), trajectory(1)], s, decision_weight=W)
    assert data.truncated == 2
    for e in data.examples:
        assert len(e.tokens) == 40 and len(e.weights) == e.n_trained


def reference_loss(model, exs) -> float:
    """sum(w * CE) / sum(w) over every trained token, from full logits of each example alone."""
    total = wsum = 0.0
    for e in exs:
        logits = model(mx.array([e.tokens[:-1]]))[0].astype(mx.float32)
        logp = np.asarray(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        idx = np.concatenate([np.arange(s, t) for s, t in e.spans])
        ce = -logp[idx - 1, np.asarray(e.tokens)[idx]]
        w = trained_weights(e)
        total += float((ce * w).sum())
        wsum += float(w.sum())
    return total / wsum


def test_weighted_loss_equals_the_reference(lora):
    model, tokenizer = lora
    exs = weighted(tokenizer)
    model.eval()
    value, ntoks = train.make_loss(model)(model, *train.make_batch(exs)[0])
    assert ntoks.item() == pytest.approx(sum(float(trained_weights(e).sum()) for e in exs))
    assert value.item() == pytest.approx(reference_loss(model, exs), rel=1e-5)
    unweighted = [
        train.tokenize_record(tokenizer, r) for r in make_records(6) + [trajectory(0), trajectory(1)]
    ]
    plain = train.make_loss(model)(model, *train.make_batch(unweighted)[0])[0].item()
    assert plain != pytest.approx(value.item(), rel=1e-3)  # the weights change the loss
    model.train()


@pytest.mark.parametrize("path", ["prefix", "packing"])
def test_shared_prefix_and_packed_paths_weigh_the_same(lora, path):
    model, tokenizer = lora
    exs = weighted(tokenizer)
    want = loss_and_grads(model, train.make_loss(model), train.make_batch(exs)[0])
    if path == "prefix":
        got = loss_and_grads(model, prefix.make_prefix_loss(model), prefix.make_prefix_batch(exs)[0])
    else:
        cap = max(len(e.tokens) - 1 for e in exs)
        got = loss_and_grads(model, packing.make_packed_loss(model), packing.make_packed_batch(exs, cap)[0])
    assert got[1] == pytest.approx(want[1])
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert_close(want[2], got[2])


def test_settings_checks():
    base = dict(model="m", data="d", iters=1)
    assert validate_settings(TrainSettings(**base, decision_weight=5)) == []
    assert any(
        p.startswith("decision_weight:") for p in validate_settings(TrainSettings(**base, decision_weight=0))
    )
    problems = validate_settings(TrainSettings(**base, decision_weight=5, mask_prompt=False))
    assert problems == [
        "decision_weight: needs mask_prompt (without it there are no assistant turns to find)"
    ]


def test_training_records_it_and_a_resume_must_match(tiny_model, tmp_path):
    data = write_data(tmp_path / "data")
    out = tmp_path / "ad"
    cut = train.train(
        train_settings(tiny_model, data, out, decision_weight=4.0), progress=False, interrupt_at_step=2
    )
    assert cut["status"] == "interrupted"
    assert json.loads((out / "adapter_config.json").read_text())["decision_weight"] == 4.0
    with pytest.raises(UserError, match="made with other data or settings"):
        train.train(train_settings(tiny_model, data, out), progress=False, resume=True)
    done = train.train(
        train_settings(tiny_model, data, out, decision_weight=4.0), progress=False, resume=True
    )
    assert done["status"] == "completed"
