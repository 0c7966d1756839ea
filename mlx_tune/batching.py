"""Data for training: tokenize records, batch them by length, and the loss.

- per-token masks, so every assistant turn of a multi-turn conversation is trained;
- length bucketing by real token length (mlx-lm sorts by ``CacheDataset.itemlen``, which is the
  record's key count, so its batches mix lengths and pad a lot);
- answer-only logits: the output projection runs only on the positions that are trained (a
  batch carries their positions, a static shape), so the masked prompt never reaches the
  vocabulary projection - the largest matmul and activation of a small model;
- a step-exact data order (:class:`BatchStream`), so a resumed run sees the same batches.

Nothing here imports :mod:`mlx_tune.prefix`; it builds on this module.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlx_tune import UserError, fileio, records
from mlx_tune.train_config import TrainSettings, _joined

PAD_MULTIPLE = 8


@dataclass
class Example:
    tokens: list[int]
    spans: list[tuple[int, int]]
    """Trained token ranges ``[start, end)`` (targets), one per assistant turn."""

    @property
    def n_trained(self) -> int:
        return sum(e - s for s, e in self.spans)


@dataclass
class TokenizedData:
    examples: list[Example]
    dropped: int = 0
    truncated: int = 0
    too_long: int = 0
    longest: int = 0
    fingerprint: str = ""


def load_records(path: Path) -> list[dict]:
    """Read and validate a JSONL file; every invalid line in one ``UserError`` (file:line: field)."""
    out, problems = [], []
    for lineno, record in fileio.iter_jsonl(path):
        for problem in records.validate_record(record):
            problems.append(f"{path}:{lineno}: {problem}")
        out.append(record)
    if problems:
        raise UserError(_joined(f"{path}", problems))
    return out


def _template(tokenizer, messages, tools, add_generation_prompt=False) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    return list(ids)


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tokenize_record(tokenizer, record: dict, mask_prompt: bool = True) -> Example:
    """Tokens of one conversation and the trained spans: every assistant turn (its text and the
    end-of-turn token), found by rendering each prefix of the conversation."""
    messages = records.templated_messages(record)
    tools = record.get("tools")
    tokens = _template(tokenizer, messages, tools)
    if not mask_prompt:
        return Example(tokens, [(1, len(tokens))])
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before = _template(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else []
        upto = _template(tokenizer, messages[: i + 1], tools)
        start = common_length(before, tokens)
        end = common_length(upto, tokens)
        # The rendered turn ends with the end-of-turn token and a newline; train through the former.
        while end > start and end < len(tokens) and end < len(upto) and upto[end - 1] != tokens[end - 1]:
            end -= 1
        if end > start:
            spans.append((max(start, 1), end))
    return Example(tokens, spans)


def tokenize_split(tokenizer, recs: list[dict], settings: TrainSettings) -> TokenizedData:
    from tqdm import tqdm

    out = TokenizedData([])
    h = hashlib.sha256()
    for record in tqdm(recs, desc="tokenize", unit="ex", leave=False, disable=len(recs) < 200):
        ex = tokenize_record(tokenizer, record, settings.mask_prompt)
        h.update(json.dumps([ex.tokens, ex.spans]).encode())
        out.longest = max(out.longest, len(ex.tokens))
        if len(ex.tokens) > settings.max_seq_length:
            out.too_long += 1
            if settings.long_sequences == "drop":
                out.dropped += 1
                continue
            cut = settings.max_seq_length
            ex = Example(ex.tokens[:cut], [(s, min(e, cut)) for s, e in ex.spans if s < cut])
            out.truncated += 1
        if ex.n_trained == 0:
            out.dropped += 1
            continue
        out.examples.append(ex)
    out.fingerprint = h.hexdigest()
    return out


# ---------------------------------------------------------------- batches and loss


def _round_up(n: int, m: int = PAD_MULTIPLE) -> int:
    return max(m, m * ((n + m - 1) // m))


def make_batch(examples: list[Example]):
    """Arrays for :func:`make_loss`: inputs (B, L), trained positions, targets and weights (B, K)."""
    import mlx.core as mx
    import numpy as np

    length = _round_up(max(len(e.tokens) for e in examples) - 1)
    k = _round_up(max(e.n_trained for e in examples))
    b = len(examples)
    inputs = np.zeros((b, length), np.int32)
    pos = np.zeros((b, k), np.int32)
    targets = np.zeros((b, k), np.int32)
    weights = np.zeros((b, k), np.float32)
    for i, e in enumerate(examples):
        inputs[i, : len(e.tokens) - 1] = e.tokens[:-1]
        # A target at token index t is predicted from position t - 1.
        idx = np.concatenate([np.arange(s, t) for s, t in e.spans])
        pos[i, : len(idx)] = idx - 1
        targets[i, : len(idx)] = np.asarray(e.tokens, np.int32)[idx]
        weights[i, : len(idx)] = 1.0
    real = sum(len(e.tokens) for e in examples)
    return (mx.array(inputs), mx.array(pos), mx.array(targets), mx.array(weights)), real, b * (length + 1)


def batch_groups(examples: list[Example], batch_size: int) -> list[list[int]]:
    """Batches of examples of similar real token length (sorted, then cut into runs)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].tokens), i))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


class BatchStream:
    """The training data order: an epoch is a seeded permutation of ``groups`` (batches of example
    indices, e.g. from :func:`batch_groups` or :func:`mlx_tune.prefix.prefix_batch_groups`).

    Micro-batch ``t`` is a pure function of (seed, t), so a resumed run sees the same batches.
    ``build`` turns a list of examples into ``(arrays, real tokens, padded tokens)``
    (:func:`make_batch` or :func:`mlx_tune.prefix.make_prefix_batch`)."""

    def __init__(self, examples: list[Example], groups: list[list[int]], build, seed: int):
        self.examples = examples
        self.groups = groups
        self.build = build
        self.seed = seed

    def group_at(self, t: int) -> list[int]:
        import numpy as np

        n = len(self.groups)
        epoch, i = divmod(t, n)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        return self.groups[perm[i]]

    def iterate(self, start: int, rank: int = 0, size: int = 1):
        """Micro-batches ``start, start + 1, ...`` as ``(arrays, real, padded)``: this worker's rows
        (every ``size``-th from ``rank``), the real tokens of the whole batch, its padded size."""
        t = start
        while True:
            group = self.group_at(t)
            arrays, _, padded = self.build([self.examples[j] for j in group[rank::size]])
            yield arrays, sum(len(self.examples[j].tokens) for j in group), padded * size
            t += 1


def ordered_batches(examples, order: list[int], batch_size: int, build=make_batch):
    """A function ``(rank=0, size=1) -> iterator`` of ``build``'s arrays for consecutive
    ``batch_size`` slices of ``order``: every example once (the last batch may be short), each
    worker taking every ``size``-th row from ``rank``."""

    def batches(rank: int = 0, size: int = 1):
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size][rank::size]
            if idx:
                yield build([examples[j] for j in idx])[0]

    return batches


def eval_batches(examples: list[Example], batch_size: int):
    """:func:`ordered_batches` for validation: length-sorted, every example once."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].tokens), i))
    return ordered_batches(examples, order, batch_size)


_said: set[str] = set()


def say_once(message: str) -> None:
    """Print a note to stderr once per process (fallbacks are announced, not repeated per run)."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr)


def output_head(model):
    """``(hidden, head, reason)`` with ``model(x, cache) == head(hidden(x, cache))``.

    For mlx-lm models built as ``lm_head(model.model(x))`` (or ``embed_tokens.as_linear`` with tied
    embeddings: Qwen, Llama, Mistral and most others) ``hidden`` is the transformer and ``head`` the
    output projection, so the loss projects only the trained positions; ``reason`` is ``None``.
    Otherwise (no such structure, or a probe forward pass disagrees, e.g. a model that scales or
    caps its logits) ``hidden`` is the whole model, ``head`` the identity and ``reason`` says why."""
    import mlx.core as mx

    inner = getattr(model, "model", None)
    args = getattr(model, "args", None)
    head = None
    if inner is not None and callable(inner):
        if "lm_head" in model and callable(model["lm_head"]):

            def head(h):
                return model.lm_head(h)

        elif getattr(args, "tie_word_embeddings", False) and hasattr(
            getattr(inner, "embed_tokens", None), "as_linear"
        ):

            def head(h):
                return model.model.embed_tokens.as_linear(h)

    def full(x, cache=None):
        return model(x, cache=cache)

    if head is None:
        return full, (lambda h: h), "it is not lm_head(model.model(x))"

    def hidden(x, cache=None):
        return model.model(x, cache=cache)

    vocab = int(getattr(args, "vocab_size", 16) or 16)
    x = mx.array([[(7 * i + 3) % min(vocab, 256) for i in range(8)]], dtype=mx.int32)
    training = model.training
    model.eval()  # no dropout draws: the probe leaves the RNG alone
    try:
        want = model(x).astype(mx.float32)
        got = head(hidden(x)).astype(mx.float32)
        err = mx.abs(got - want).max().item()
        scale = mx.abs(want).max().item()
    except Exception as e:  # an architecture whose parts do not compose this way
        return full, (lambda h: h), f"its head apart failed ({type(e).__name__}: {e})"
    finally:
        model.train(training)
    tol = 1e-4 if want.dtype == mx.float32 and got.dtype == mx.float32 else 1e-2
    if not err <= tol * max(scale, 1.0):
        return full, (lambda h: h), f"its logits are not lm_head(model.model(x)) (difference {err:.3g})"
    return hidden, head, None


def loss_head(model):
    """:func:`output_head`'s ``(hidden, head)``; a model without a separable head is said once."""
    hidden, head, reason = output_head(model)
    if reason:
        say_once(f"answer-only logits: off for this model ({reason}); computing logits at every position")
    return hidden, head


def make_loss(model):
    """mlx-lm ``loss(model, *batch) -> (mean loss, tokens)`` over the trained positions only.

    The output projection runs only on the trained positions (``pos``, a static shape) when the
    model allows (:func:`output_head`); otherwise on every position (said once)."""
    import mlx.core as mx
    import mlx.nn as nn

    hidden, head = loss_head(model)

    def loss(model, inputs, pos, targets, weights):
        h = mx.take_along_axis(hidden(inputs), pos[..., None], axis=1)
        ce = nn.losses.cross_entropy(head(h).astype(mx.float32), targets) * weights
        ntoks = weights.sum()
        return ce.sum() / ntoks, ntoks

    return loss
