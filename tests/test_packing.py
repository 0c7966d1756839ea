"""Exact sequence packing: a packed batch gives the same loss and gradients as the same examples in
rows of their own (positions continue across examples; the block-diagonal mask keeps them apart)."""

from __future__ import annotations

import json

import pytest

from mlx_tune import UserError, fileio
from mlx_tune.training import packing, train
from tests.conftest import assert_close, loss_and_grads, train_settings

mx = pytest.importorskip("mlx.core")

WORDS = "the parser reads each line and returns a list of tokens for the caller to use later".split()


def chat_records(n: int, seed: int = 0) -> list[dict]:
    """Plain Q&A records (no tools) whose answers vary from a few words to a few hundred."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choice([3, 8, 20, 60, 150])
        answer = " ".join(rng.choice(WORDS) for _ in range(words)) + f" ({i})"
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"What does function_{i} do?"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return out


@pytest.fixture(scope="module")
def lora(tiny_model):
    """The tiny float32 model with rank-4 LoRA everywhere (B non-zero), its tokenizer, the weights."""
    import mlx_lm
    from mlx.utils import tree_flatten, tree_map

    model, tokenizer = mlx_lm.load(str(tiny_model))
    mx.random.seed(0)
    train.setup_model(model, train.TrainSettings(model="-", data="-", iters=1, num_layers=-1, rank=4))
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    mx.eval(model.parameters())
    return model, tokenizer, dict(tree_flatten(model.trainable_parameters()))


def examples(tokenizer, n: int = 12, mask_prompt: bool = True):
    return [train.tokenize_record(tokenizer, r, mask_prompt) for r in chat_records(n)]


def test_block_mask_is_causal_within_each_example_only():
    segments = mx.array([[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, 0, 0]], dtype=mx.int32)
    m = packing.block_mask(segments)
    assert m.shape == (2, 1, 6, 6)
    got = [[[int(v) for v in row] for row in m[b, 0].tolist()] for b in range(2)]
    assert got[0] == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],  # the second example starts fresh: it sees none of the first
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself (never an all-masked row)
    ]
    assert got[1] == [[int(j <= i) for j in range(6)] for i in range(6)]  # one example: plain causal


def test_pack_rows_best_fit_decreasing():
    rows = packing.pack_rows([5, 9, 3, 7, 2, 4], 10)
    assert rows == [[1], [3, 2], [0, 5], [4]]  # 9 | 7+3 | 5+4 | 2: longest first, fullest fit
    assert packing.pack_rows([5, 9, 3, 7, 2, 4], 10) == rows  # deterministic
    assert packing.pack_rows([12, 1], 10) == [[0], [1]]  # too long for any row: a row of its own
    assert sorted(i for r in packing.pack_rows(list(range(1, 30)), 32) for i in r) == list(range(29))


@pytest.mark.parametrize("mask_prompt", [True, False])
@pytest.mark.parametrize("capacity", [None, 120, 4096], ids=["rows-of-longest", "short-rows", "one-row"])
def test_packed_loss_and_every_gradient_equal_unpacked(lora, mask_prompt, capacity):
    model, tokenizer, _ = lora
    exs = examples(tokenizer, 8, mask_prompt)
    cap = capacity or max(len(e.tokens) - 1 for e in exs)
    arrays, real, padded = packing.make_packed_batch(exs, cap)
    inputs, segments = arrays[0], arrays[1]
    assert inputs.shape[0] < len(exs)  # several examples share a row
    assert (segments.max(axis=1) >= 1).any().item()
    plain_arrays, plain_real, plain_padded = train.make_batch(exs)
    assert real == plain_real and real <= padded < plain_padded  # same tokens, less padding
    want = loss_and_grads(model, train.make_loss(model), plain_arrays)
    got = loss_and_grads(model, packing.make_packed_loss(model), arrays)
    assert got[1] == want[1] == sum(e.n_trained for e in exs)
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert_close(want[2], got[2])


def test_each_example_alone_equals_its_place_in_the_row(lora):
    """Per example: its loss in a packed row (a shifted absolute position) equals its loss alone."""
    model, tokenizer, _ = lora
    exs = examples(tokenizer, 6)
    loss = packing.make_packed_loss(model)
    arrays, _, _ = packing.make_packed_batch(exs, packing.plan(exs, 4).capacity)
    inputs, segments, pos, targets, weights = arrays
    h = packing.packed_hidden(model, inputs, segments)
    import mlx.nn as nn

    head = packing._parts(model)[0][2]
    ce = nn.losses.cross_entropy(head(mx.take_along_axis(h, pos[..., None], axis=1)), targets) * weights
    seg_of = mx.take_along_axis(segments, pos, axis=1)
    shifted = 0
    for r in range(inputs.shape[0]):
        members = sorted({int(s) for s, w in zip(seg_of[r].tolist(), weights[r].tolist(), strict=True) if w})
        for j in members:
            got = (ce[r] * (seg_of[r] == j)).sum() / ((seg_of[r] == j) * weights[r]).sum()
            # The example placed j-th in row r: find it by its tokens.
            start = int(mx.argmax(segments[r] == j).item())
            length = int((segments[r] == j).sum().item())
            toks = inputs[r, start : start + length].tolist()
            e = next(e for e in exs if e.tokens[:-1] == toks)
            alone, _ = loss(model, *packing.make_packed_batch([e], 1024)[0])
            shifted += start > 0
            assert got.item() == pytest.approx(alone.item(), rel=1e-5)
    assert shifted >= 2  # some examples really sat at a later absolute position


def test_plan_groups_every_example_once_and_fills_rows(lora):
    _, tokenizer, _ = lora
    exs = examples(tokenizer, 40)
    p = packing.plan(exs, 4)
    longest = packing._round_up(max(len(e.tokens) - 1 for e in exs))
    rows_of_longest = packing.Plan(longest, p.rows if p.capacity == longest else 1)
    assert p.capacity <= longest and p.rows >= 1
    assert packing.packed_cost(exs, p)[0] <= packing.packed_cost(exs, rows_of_longest)[0]
    # Where attention costs as much as the rest at 100 keys, shorter rows win over padding less.
    short = packing.plan(exs, 4, span=100)
    assert short.capacity < longest
    assert packing.packed_cost(exs, short, 100)[0] < packing.packed_cost(exs, rows_of_longest, 100)[0]
    groups = p.groups(exs)
    assert sorted(i for g in groups for i in g) == list(range(40))
    assert p.groups(exs) == groups  # deterministic
    run, real = packing.packed_cost(exs, p)
    plain_run, plain_real = packing.plain_cost(exs, 4)
    assert real == sum(len(e.tokens) - 1 for e in exs)
    assert run / real < plain_run / plain_real  # packing pads less than length bucketing here


def test_validation_through_evaluate_is_the_same_packed(lora):
    from mlx_tune.training.loop import evaluate

    model, tokenizer, _ = lora
    exs = examples(tokenizer, 14)
    want = evaluate(model, train.make_loss(model), train.eval_batches(exs, 4)())
    p = packing.plan(exs, 4)
    got = evaluate(model, packing.make_packed_loss(model), p.eval_batches(exs)())
    assert got == pytest.approx(want, rel=1e-5)


def test_compiled_steps_with_checkpointing_match_unpacked(lora):
    """Four compiled steps (grad accumulation 2) on the same example sets: the same adapter update,
    packed (with and without gradient checkpointing) and unpacked.

    The learning rate is moderate: RoPE angles at a shifted absolute position are rounded
    differently in float32 (about 1e-7 relative per angle), which large updates (SGD at 0.5 here
    sharpens attention until q/k gradients differ by 1e-3) amplify; the exact-math claim is the
    one tested at 1e-5 above."""
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_tune.training.grad_checkpoint import checkpointed_layers
    from mlx_tune.training.loop import make_step

    model, tokenizer, weights = lora
    exs = examples(tokenizer, 12)
    sets = [[exs[i] for i in g] for g in ([0, 1, 2], [9, 10, 3], [4, 5, 6], [11, 7, 8])]

    def run(packed: bool, checkpoint: bool):
        model.update(tree_unflatten(list(weights.items())))
        loss = packing.make_packed_loss(model) if packed else train.make_loss(model)
        batches = [(packing.make_packed_batch(s, 256) if packed else train.make_batch(s))[0] for s in sets]
        with checkpointed_layers(model, checkpoint):
            step, state = make_step(model, optim.SGD(learning_rate=0.05), loss, accum=2, workers=1)
            grads = None
            for i, batch in enumerate(batches, 1):
                _, grads = step(batch, grads, i % 2 == 0)
                mx.eval(state, grads)
        out = dict(tree_flatten(model.trainable_parameters()))
        model.update(tree_unflatten(list(weights.items())))
        return {k: out[k] - weights[k] for k in out}

    plain = run(False, False)
    assert_close(plain, run(True, False), 1e-4)
    assert_close(plain, run(True, True), 1e-4)


def tiny_arch(name: str, **extra):
    """A random float32 mlx-lm model of architecture ``name``, built in-process (no tokenizer)."""
    import importlib

    module = importlib.import_module(f"mlx_lm.models.{name}")
    size = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4)
    size.update(num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=128, model_type=name)
    mx.random.seed(1)
    model = module.Model(module.ModelArgs.from_dict({**size, **extra}))
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize(
    "name, extra",
    [
        ("llama", {"tie_word_embeddings": False}),
        (
            "qwen3",
            {"head_dim": 8, "max_position_embeddings": 512, "tie_word_embeddings": True, "rope_theta": 1e4},
        ),
        ("phi3", {}),
    ],
)
def test_other_architectures_pack_exactly(name, extra):
    """Full fine-tune gradients (every weight) of a packed batch equal the unpacked ones."""
    import numpy as np

    from mlx_tune.rendering import Example

    model = tiny_arch(name, **extra)
    assert packing.packing_support(model) is None
    rng = np.random.default_rng(0)
    exs = []
    for n in (40, 9, 23, 14, 31):
        exs.append(Example(rng.integers(0, 128, n).tolist(), [(n // 3, n)]))
    arrays, _, _ = packing.make_packed_batch(exs, 48)
    assert arrays[0].shape[0] < len(exs)
    want = loss_and_grads(model, train.make_loss(model), train.make_batch(exs)[0])
    got = loss_and_grads(model, packing.make_packed_loss(model), arrays)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[1] == want[1]
    assert_close(want[2], got[2])


def test_gemma_is_refused_with_its_reason():
    model = tiny_arch("gemma", head_dim=8)
    assert "lm_head(model.model(x))" in packing.packing_support(model)
    with pytest.raises(UserError, match=r"packing: this model cannot train packed \(.*\); use --packing off"):
        packing.make_packed_loss(model)


def test_models_that_cannot_pack_are_refused(lora):
    model, _, _ = lora
    assert packing.packing_support(model) is None

    class NoMask:  # layers that ignore the mask: the probe sees the examples leak into each other
        def __init__(self):
            self.model, self.args, self.layers = (
                model.model,
                model.args,
                [self.Layer(x) for x in model.layers],
            )

        class Layer:
            def __init__(self, layer):
                self.layer = layer

            def __call__(self, h, mask, cache):
                return self.layer(h, "causal", cache)

        training = False

        def __call__(self, x, cache=None):
            return model(x, cache=cache)

        def __contains__(self, key):
            return key in model

        def eval(self):
            return self

        def train(self, mode=True):
            return self

    reason = packing.packing_support(NoMask())
    assert "differ from separate rows" in reason
    with pytest.raises(UserError, match="packing: this model cannot train packed"):
        packing.make_packed_loss(NoMask())
    assert "is not model.model.embed_tokens" in packing.packing_support(object())


def test_auto_packs_chat_records_but_not_tool_records(lora):
    from tests.conftest import make_records

    model, tokenizer, _ = lora
    chat = examples(tokenizer, 40)
    tools = [train.tokenize_record(tokenizer, r) for r in make_records(40)]
    span = packing.attention_span(model)
    assert span == 2 * 64 + 1.5 * 128  # the test model's hidden and intermediate sizes
    p, note = packing.decide("auto", model, chat, 4, shared=True, workers=1)
    assert p == packing.plan(chat, 4, span) and note is None
    # Tool records share a long system prompt and schema: the shared-prefix path costs far less.
    run, real = packing.packed_cost(tools, packing.plan(tools, 4, span), span)
    prefix_run, prefix_real = packing.prefix_cost(tools, 4, span)
    assert prefix_run / prefix_real < packing.PREFIX_GAIN * run / real
    assert packing.decide("auto", model, tools, 4, shared=True, workers=1) == (None, None)
    assert packing.decide("off", model, chat, 4, shared=False, workers=1) == (None, None)
    p, note = packing.decide("auto", model, chat, 4, shared=True, workers=2)
    assert p is None and "several workers" in note
    with pytest.raises(UserError, match="packing: on is for one worker"):
        packing.decide("on", model, chat, 4, shared=True, workers=2)
    assert packing.decide("on", model, tools, 4, shared=True, workers=1)[0] is not None


# ---------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    recs = chat_records(28, seed=1)
    fileio.write_jsonl(d / "train.jsonl", recs[:24])
    fileio.write_jsonl(d / "valid.jsonl", recs[24:])
    return d


def test_auto_packs_chat_data_and_resume_is_exact(tiny_model, chat_dir, tmp_path):
    # Batches of 8: the shared-prefix path would save nothing over packing here (auto packs).
    kw = dict(iters=6, save_every=2, grad_accumulation_steps=2, batch_size=8, dropout=0.1)
    full = train.train(train_settings(tiny_model, chat_dir, tmp_path / "full", **kw), progress=False)
    assert full["status"] == "completed" and full["packing"] is True and full["shared_prefix"] is False
    config = json.loads((tmp_path / "full" / "adapter_config.json").read_text())
    assert config["packing_used"] is True and config["packing"] == "auto"
    cut = train.train(
        train_settings(tiny_model, chat_dir, tmp_path / "cut", **kw), progress=False, interrupt_at_step=3
    )
    assert cut["status"] == "interrupted" and cut["step"] == 4
    resumed = train.train(
        train_settings(tiny_model, chat_dir, tmp_path / "cut", **kw), progress=False, resume=True
    )
    assert resumed["step"] == 6
    a = mx.load(str(tmp_path / "full" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "cut" / "adapters.safetensors"))
    for k in a:
        assert mx.allclose(a[k], b[k], atol=1e-5).item(), k
    off = train.train(
        train_settings(tiny_model, chat_dir, tmp_path / "off", **kw, packing="off"), progress=False
    )
    assert off["packing"] is False and off["padding_share"] > full["padding_share"]
    # Validation does not depend on the batching: the base model's loss is the same either way.
    assert off["val_loss_first"] == pytest.approx(full["val_loss_first"], rel=1e-5)
    with pytest.raises(UserError, match="made with other data or settings"):
        train.train(
            train_settings(tiny_model, chat_dir, tmp_path / "cut", **{**kw, "iters": 8}, packing="off"),
            progress=False,
            resume=True,
        )


def test_packing_option_on_the_command_line(tiny_model, chat_dir, tmp_path):
    from click.testing import CliRunner

    from mlx_tune.cli import main

    args = [
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(chat_dir),
        "--iters",
        "1",
        "--num-layers",
        "-1",
    ]
    args += ["--quiet"]
    r = CliRunner().invoke(main, [*args, "--adapter-path", str(tmp_path / "a"), "--packing", "on"])
    assert r.exit_code == 0, r.output
    assert "packed" in r.output
    r = CliRunner().invoke(main, [*args, "--packing", "always"])
    assert r.exit_code == 2 and "'always' is not one of 'auto', 'on', 'off'" in r.output
