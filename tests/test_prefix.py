"""Shared-prefix training and answer-only logits are exact: same loss, gradients and updates as the
plain full-sequence, full-logits computation."""

from __future__ import annotations

import pytest

from mlx_tune.training import prefix, train
from tests.conftest import assert_close, loss_and_grads, make_records

mx = pytest.importorskip("mlx.core")


@pytest.fixture(scope="module")
def lora(tiny_model):
    """The tiny model with rank-4 LoRA on every layer, B matrices made non-zero (so every adapter
    weight gets a gradient), its tokenizer, and the initial adapter weights."""
    import mlx_lm
    from mlx.utils import tree_flatten, tree_map

    model, tokenizer = mlx_lm.load(str(tiny_model))
    mx.random.seed(0)
    train.setup_model(model, train.TrainSettings(model="-", data="-", iters=1, num_layers=-1, rank=4))
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    mx.eval(model.parameters())
    return model, tokenizer, dict(tree_flatten(model.trainable_parameters()))


def examples(tokenizer, mask_prompt: bool, n_tools: int = 9, n_code: int = 3):
    recs = make_records(n_tools) + make_records(n_code, fmt="code")
    return [train.tokenize_record(tokenizer, r, mask_prompt) for r in recs]


@pytest.mark.parametrize("mask_prompt", [True, False])
@pytest.mark.parametrize(
    "rows", [[0], [0, 1], [0, 1, 2, 3, 4], [6, 7, 8, 9, 10]], ids=["b1", "b2", "b5", "mixed"]
)
def test_loss_and_every_gradient_equal_the_plain_path(lora, mask_prompt, rows):
    model, tokenizer, _ = lora
    exs = [examples(tokenizer, mask_prompt)[i] for i in rows]
    subs, real, padded = prefix.make_prefix_batch(exs)
    plain_arrays, plain_real, plain_padded = train.make_batch(exs)
    assert real == plain_real and real <= padded <= plain_padded  # same real tokens, padding share
    computed = prefix.computed_positions(subs)
    shared = [s[0].shape[1] for s in subs]
    if len(rows) == 1:
        assert shared == [0]  # a lone row has nothing to share
    elif rows[0] == 6:  # three tool-format rows and two code-format rows: two prefixes, each shared
        assert len(shared) == 2 and all(c >= prefix.MIN_SHARED for c in shared)
    else:
        assert len(shared) == 1 and shared[0] >= 64
        assert computed < real - len(rows)  # fewer positions than the plain path's real inputs
    want = loss_and_grads(model, train.make_loss(model), plain_arrays)
    got = loss_and_grads(model, prefix.make_prefix_loss(model), subs)
    assert got[1] == want[1] == sum(e.n_trained for e in exs)
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert_close(want[2], got[2])


def run_trainer(model, weights, exs, shared: bool, checkpoint: bool):
    """Four SGD steps of the compiled training step (two updates, grad accumulation 2); the adapter."""
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_tune.training.grad_checkpoint import checkpointed_layers
    from mlx_tune.training.loop import make_step

    model.update(tree_unflatten(list(weights.items())))
    make = prefix.make_prefix_batch if shared else train.make_batch
    batches = [make([exs[i] for i in g])[0] for g in ([0, 1, 2], [9, 10, 3], [4, 5, 6], [11, 7, 8])]
    loss = prefix.make_prefix_loss(model) if shared else train.make_loss(model)
    with checkpointed_layers(model, checkpoint):
        step, state = make_step(model, optim.SGD(learning_rate=0.5), loss, accum=2, workers=1)
        grads = None
        for i, batch in enumerate(batches, 1):
            _, grads = step(batch, grads, i % 2 == 0)
            mx.eval(state, grads)
        wrapped = type(model.layers[0]).__name__
    out = dict(tree_flatten(model.trainable_parameters()))
    model.update(tree_unflatten(list(weights.items())))
    return out, wrapped


def test_compiled_step_updates_match_with_and_without_checkpointing(lora):
    from mlx_lm.models.qwen2 import TransformerBlock

    model, tokenizer, weights = lora
    call = TransformerBlock.__call__
    exs = examples(tokenizer, True)
    plain, _ = run_trainer(model, weights, exs, shared=False, checkpoint=False)
    moved = {k: plain[k] - weights[k] for k in plain}
    shared, _ = run_trainer(model, weights, exs, shared=True, checkpoint=False)
    assert_close(moved, {k: shared[k] - weights[k] for k in plain}, 1e-4)
    ckpt, wrapped = run_trainer(model, weights, exs, shared=True, checkpoint=True)
    assert wrapped == "Checkpointed"
    assert_close(moved, {k: ckpt[k] - weights[k] for k in plain}, 1e-4)
    # The wrapping ends with the block; no class was changed.
    assert type(model.layers[0]) is TransformerBlock and TransformerBlock.__call__ is call


def test_checkpointed_layers_keep_parameter_names(lora):
    from mlx.utils import tree_flatten

    from mlx_tune.training.grad_checkpoint import checkpointed_layers

    model, _, _ = lora
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    with checkpointed_layers(model):
        assert [k for k, _ in tree_flatten(model.trainable_parameters())] == names
    assert [k for k, _ in tree_flatten(model.trainable_parameters())] == names


def test_validation_loss_is_the_same_through_evaluate(lora):
    from mlx_tune.training.loop import evaluate

    model, tokenizer, _ = lora
    exs = examples(tokenizer, True)
    want = evaluate(model, train.make_loss(model), train.eval_batches(exs, 4)())
    got = evaluate(model, prefix.make_prefix_loss(model), prefix.prefix_eval_batches(exs, 4)())
    assert got == pytest.approx(want, rel=1e-5)


def test_batches_group_by_prefix_then_length(lora):
    _, tokenizer, _ = lora
    exs = examples(tokenizer, True, n_tools=10, n_code=8)
    groups = prefix.prefix_groups(exs)
    assert sorted(map(sorted, groups)) == [list(range(10)), list(range(10, 18))]
    for g in groups:
        assert [len(exs[i].tokens) for i in g] == sorted(len(exs[i].tokens) for i in g)
    batches = prefix.prefix_batch_groups(exs, 3)
    assert len(batches) == len(train.batch_groups(exs, 3)) == 6
    assert all(len(b) == 3 for b in batches)
    assert len({i for b in batches for i in b}) == 18
    # Full batches per group first (3 tools, 2 code); the leftovers (1 tools, 2 code rows) are pooled.
    assert [all(i < 10 for i in b) or all(i >= 10 for i in b) for b in batches] == [True] * 5 + [False]
    assert prefix.prefix_batch_groups(exs, 3) == batches  # deterministic
    # The pooled batch: sharing what all three rows share (the template and part of the system
    # prompt) computes fewer positions than the two code rows sharing theirs; either beats plain.
    pooled = [exs[i] for i in batches[-1]]
    subs = prefix.make_prefix_batch(pooled)[0]
    assert [s[4].shape[0] for s in subs] == [3] and subs[0][0].shape[1] >= prefix.MIN_SHARED
    assert prefix.computed_positions(subs) < train.make_batch(pooled)[0][0].size


def test_shared_length_rounds_down_and_keeps_one_shared_target():
    assert prefix.shared_length(250) == 248
    assert prefix.shared_length(249) == 248
    assert prefix.shared_length(248) == 240
    assert prefix.shared_length(prefix.MIN_SHARED) == 0


def test_support_check(lora):
    from mlx_lm.models.cache import RotatingKVCache

    model, _, _ = lora
    assert prefix.shared_prefix_support(model) is None

    class SlidingWindow:
        layers = model.layers

        def make_cache(self):
            return [RotatingKVCache(max_size=8) for _ in self.layers]

    assert "not a plain KVCache (RotatingKVCache)" in prefix.shared_prefix_support(SlidingWindow())

    class IgnoresCache:  # fills the cache, then attends only to the new tokens of a batch
        layers = model.layers
        model_type = "other"

        def __call__(self, x, cache=None):
            out = model(x, cache=cache)
            return model(x) if cache is not None and x.shape[0] > 1 else out

    assert "differ from the plain path" in prefix.shared_prefix_support(IgnoresCache())


def full_logits_loss(model, inputs, pos, targets, weights):
    """The reference: logits at every position (``model(inputs)``), then the trained ones."""
    import mlx.nn as nn

    logits = mx.take_along_axis(model(inputs), pos[..., None], axis=1)
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * weights
    return ce.sum() / weights.sum(), weights.sum()


@pytest.mark.parametrize("mask_prompt", [True, False])
def test_answer_only_logits_equal_full_logits(lora, mask_prompt):
    model, tokenizer, _ = lora
    hidden, head, reason = train.output_head(model)
    assert reason is None  # the tiny Qwen2 model (tied embeddings) projects only trained positions
    batch = train.make_batch(examples(tokenizer, mask_prompt)[:5])[0]
    want = loss_and_grads(model, full_logits_loss, batch)
    got = loss_and_grads(model, train.make_loss(model), batch)
    assert got[1] == want[1]
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert_close(want[2], got[2])
    if mask_prompt:  # far fewer projected positions than the batch has
        assert batch[1].size * 3 < batch[0].size


def test_models_without_a_separable_head_fall_back_to_full_logits(lora, capsys, monkeypatch):
    from mlx_tune.training import batching

    model, tokenizer, _ = lora
    monkeypatch.setattr(batching, "_said", set())

    class Capped:  # a model whose logits are not lm_head(model.model(x)): soft-capped
        def __init__(self):
            self.model, self.args, self.layers = model.model, model.args, model.layers
            self.training = False

        def __call__(self, x, cache=None):
            return 30 * mx.tanh(model(x, cache=cache) / 30)

        def __contains__(self, key):
            return False

        def eval(self):
            pass

        def train(self, mode=True):
            pass

    capped = Capped()
    assert "not lm_head(model.model(x))" in train.output_head(capped)[2]
    exs = examples(tokenizer, True)[:3]
    batch = train.make_batch(exs)[0]
    want = full_logits_loss(capped, *batch)[0].item()
    assert train.make_loss(capped)(capped, *batch)[0].item() == pytest.approx(want, rel=1e-5)
    subs = prefix.make_prefix_batch(exs)[0]
    assert prefix.make_prefix_loss(capped)(capped, *subs)[0].item() == pytest.approx(want, rel=1e-5)
    assert capsys.readouterr().err.count("answer-only logits: off") == 1  # said once, not per loss
