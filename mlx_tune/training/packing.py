"""Exact sequence packing: several examples per row, attention blocked between them.

For records without a long shared prefix (chat Q&A, code -> DOT pairs) the rows of a batch differ
in length, and padding them to the longest wastes compute. Packing places several examples one
after the other in a row and runs the model with a block-diagonal causal mask (a position attends
only to earlier positions of its own example), so every example sees exactly what it would see in
a row of its own:

- the mask goes through the model's own layers: embed -> ``layer(h, mask, None)`` -> norm -> head,
  all public attributes of mlx-lm models built as ``lm_head(model.model(x))``
  (:func:`packed_hidden`; :func:`packing_support` probes that a model composes this way);
- positions are not reset between examples: with rotary position embeddings, attention scores
  depend only on the distance between two positions, so shifting an example along the row leaves
  its attention, loss and gradients unchanged (``tests/test_packing.py`` checks this to 1e-5; in
  float32 the RoPE angles of a shifted position round differently, about 1e-7 relative);
- the loss is the mean over the trained tokens of the batch, as in :func:`mlx_tune.training.batching.make_loss`.

Batches (:func:`plan`): rows of a fixed capacity filled best-fit decreasing; a micro-batch holds
about ``batch_size`` examples' worth of tokens (``rows`` rows, at least one). The mask does not make
attention cheaper, so a row attends over all its positions: the capacity is chosen by an estimated
cost that weighs padding against attention length for the model's size (:func:`attention_span`).
The layout is deterministic; the epoch order of the micro-batches is the seeded
:class:`mlx_tune.training.batching.BatchStream` permutation, as for the other paths.

:func:`decide` is the ``packing`` setting's rule: ``auto`` packs unless the shared-prefix path
(when on) costs at most :data:`PREFIX_GAIN` of packing per epoch; without it, when packing costs at
most :data:`PACK_GAIN` of the length-bucketed plain path (costs: :func:`row_cost`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlx_tune import UserError
from mlx_tune.rendering import Example, output_head
from mlx_tune.training.batching import _round_up, batch_groups, trained_weights

PACK_GAIN = 0.9
"""``auto`` packs instead of the plain path when packing costs at most this share of it."""
PREFIX_GAIN = 0.8
"""``auto`` keeps the shared-prefix path when it costs at most this share of packing: a packed batch
is one set of rows where a shared-prefix batch is sub-batches with broadcast caches (on the chat
benchmark data, where the estimated costs are close, the two measured 0.90-1.14x of each other on a
loaded machine), so the prefix path must save more than a default system prompt does; on tool
records (a long system prompt and tool schema) it costs about half."""


# ---------------------------------------------------------------- layout


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` placed in rows of ``capacity`` (best-fit decreasing, deterministic):
    longest first, each into the fullest row it still fits in. An item longer than ``capacity``
    gets a row of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, row), sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            space, r = free.pop(at)
            rows[r].append(i)
            bisect.insort(free, (space - n, r))
        else:
            rows.append([i])
            bisect.insort(free, (max(capacity - n, 0), len(rows) - 1))
    return rows


def _inputs(e: Example) -> int:
    return len(e.tokens) - 1  # the last token is only a target


@dataclass(frozen=True)
class Plan:
    """How a data set is packed: rows of ``capacity`` input positions, ``rows`` rows per micro-batch."""

    capacity: int
    rows: int

    def groups(self, examples: Sequence[Example]) -> list[list[int]]:
        """Micro-batches as lists of example indices: ``rows`` consecutive packed rows each."""
        packed = pack_rows([_inputs(e) for e in examples], self.capacity)
        return [
            [i for row in packed[j : j + self.rows] for i in row] for j in range(0, len(packed), self.rows)
        ]

    def build(self, examples: list[Example]):
        """:func:`make_packed_batch` with this plan's row capacity (a ``BatchStream`` ``build``)."""
        return make_packed_batch(examples, self.capacity)

    def eval_batches(self, examples: list[Example]):
        """Validation batches, ``(rank=0, size=1) -> iterator`` as :func:`mlx_tune.training.batching.eval_batches`:
        every example once, each worker taking every ``size``-th micro-batch."""
        groups = self.groups(examples)

        def batches(rank: int = 0, size: int = 1):
            for group in groups[rank::size]:
                yield self.build([examples[i] for i in group])[0]

        return batches


CAPACITY_FACTORS = (1.25, 1.5, 2, 3, 4)
"""Row capacities tried by :func:`plan`, as multiples of the mean example length (and the longest)."""


def attention_span(model) -> float:
    """The row length at which a layer's attention costs as much as its linear layers, from the
    model's ``hidden_size`` and ``intermediate_size`` (per position: attention ~ 4 L H flops,
    projections and MLP ~ 8 H^2 + 6 H I): about 400 for the tiny model, 9,000 for Qwen2.5-0.5B.
    Infinite (attention ignored) when the model does not say."""
    args = getattr(model, "args", None)
    h, i = getattr(args, "hidden_size", None), getattr(args, "intermediate_size", None)
    return 2 * h + 1.5 * i if isinstance(h, int) and isinstance(i, int) else math.inf


def row_cost(rows: int, length: int, attended: int | None = None, span: float = math.inf) -> float:
    """Cost of running ``rows`` rows of ``length`` positions, each attending over ``attended``
    (default ``length``) keys: positions, each weighted by ``1 + attended / span``."""
    return rows * length * (1 + (length if attended is None else attended) / span)


def plan(examples: Sequence[Example], batch_size: int, span: float = math.inf) -> Plan:
    """The cheapest layout (:func:`packed_cost`) among rows as long as the longest example and rows
    of :data:`CAPACITY_FACTORS` times the mean length (an example longer than its row gets a row of
    its own), each with as many rows per micro-batch as hold ``batch_size`` examples of mean length
    (at least one). Longer rows pad less but attend over more keys: with a finite ``span``
    (:func:`attention_span`) a small model prefers shorter rows."""
    lengths = [_inputs(e) for e in examples]
    mean = sum(lengths) / len(lengths)
    longest = _round_up(max(lengths))
    capacities = sorted(
        {longest} | {_round_up(math.ceil(f * mean)) for f in CAPACITY_FACTORS if f * mean < longest}
    )
    best = None
    for capacity in reversed(capacities):  # ties go to the longer rows
        p = Plan(capacity, max(1, round(batch_size * mean / capacity)))
        cost = packed_cost(examples, p, span)[0]
        if best is None or cost < best[0]:
            best = (cost, p)
    return best[1]


def make_packed_batch(examples: list[Example], capacity: int):
    """Arrays for :func:`make_packed_loss` and ``(arrays, real tokens, padded tokens)`` as
    :func:`mlx_tune.training.batching.make_batch` returns them.

    Arrays: inputs and segments ``(R, L)`` (segment ``j`` is the row's ``j``-th example, -1 the
    padding at the end), then trained positions, targets and weights ``(R, K)``."""
    import mlx.core as mx

    rows = pack_rows([_inputs(e) for e in examples], capacity)
    fill = [sum(_inputs(examples[i]) for i in row) for row in rows]
    length = _round_up(max(fill))
    placed = [[examples[i] for i in sorted(row)] for row in rows]  # in data order within a row
    k = _round_up(max(sum(e.n_trained for e in row) for row in placed))
    r = len(rows)
    inputs = np.zeros((r, length), np.int32)
    segments = np.full((r, length), -1, np.int32)
    pos = np.zeros((r, k), np.int32)
    targets = np.zeros((r, k), np.int32)
    weights = np.zeros((r, k), np.float32)
    for i, row in enumerate(placed):
        at, n = 0, 0
        for j, e in enumerate(row):
            tokens = np.asarray(e.tokens, np.int32)
            inputs[i, at : at + len(tokens) - 1] = tokens[:-1]
            segments[i, at : at + len(tokens) - 1] = j
            idx = np.concatenate([np.arange(s, t) for s, t in e.spans])
            # A target at token index t is predicted from input position t - 1 of its example.
            pos[i, n : n + len(idx)] = at + idx - 1
            targets[i, n : n + len(idx)] = tokens[idx]
            weights[i, n : n + len(idx)] = trained_weights(e)
            at += len(tokens) - 1
            n += len(idx)
    real = sum(len(e.tokens) for e in examples)
    # As make_batch counts it: the positions run plus each example's last (target-only) token.
    padded = r * length + len(examples)
    arrays = (inputs, segments, pos, targets, weights)
    return tuple(mx.array(a) for a in arrays), real, padded


def packed_cost(examples: Sequence[Example], p: Plan, span: float = math.inf) -> tuple[float, int]:
    """``(cost, real input tokens)`` of one epoch of packed batches (:func:`row_cost`; with the
    default ``span``, the positions run)."""
    cost, real = 0.0, 0
    for group in p.groups(examples):
        lengths = [_inputs(examples[i]) for i in group]
        rows = pack_rows(lengths, p.capacity)
        cost += row_cost(len(rows), _round_up(max(sum(lengths[i] for i in row) for row in rows)), span=span)
        real += sum(lengths)
    return cost, real


def plain_cost(examples: Sequence[Example], batch_size: int, span: float = math.inf) -> tuple[float, int]:
    """``(cost, real input tokens)`` of one epoch of the length-bucketed plain path."""
    cost, real = 0.0, 0
    for group in batch_groups(list(examples), batch_size):
        lengths = [_inputs(examples[i]) for i in group]
        cost += row_cost(len(group), _round_up(max(lengths)), span=span)
        real += sum(lengths)
    return cost, real


def prefix_cost(examples: Sequence[Example], batch_size: int, span: float = math.inf) -> tuple[float, int]:
    """``(cost, real input tokens)`` of one epoch of the shared-prefix path, each batch sharing what
    all its rows share (an upper bound: the path may split a batch to share more)."""
    from mlx_tune.training import prefix

    cost, real = 0.0, 0
    for group in prefix.prefix_batch_groups(list(examples), batch_size):
        seqs = [np.asarray(examples[i].tokens, np.int64) for i in group]
        common = min((prefix._lcp(seqs[0], s) for s in seqs[1:]), default=0)
        c = prefix.shared_length(common) if len(seqs) > 1 else 0
        rest = _round_up(max(len(s) - 1 - c for s in seqs))
        cost += row_cost(1, c, span=span) + row_cost(len(seqs), rest, c + rest, span)
        real += sum(len(s) - 1 for s in seqs)
    return cost, real


# ---------------------------------------------------------------- the model


def _parts(model):
    """``(embed, norm, head)`` of a model built as ``head(norm(layers(embed(x))))``, or a reason."""
    inner = getattr(model, "model", None)
    embed, norm = getattr(inner, "embed_tokens", None), getattr(inner, "norm", None)
    layers = getattr(model, "layers", None)
    if not (callable(embed) and callable(norm) and isinstance(layers, list) and layers):
        return None, "it is not model.model.embed_tokens -> model.layers -> model.model.norm"
    _, head, reason = output_head(model)
    if reason:
        return None, reason
    return (embed, norm, head), None


def block_mask(segments):
    """``(R, 1, L, L)`` booleans: query ``i`` sees key ``j`` when ``j <= i`` in the same segment."""
    import mlx.core as mx

    idx = mx.arange(segments.shape[1])
    causal = idx[:, None] >= idx[None]
    same = segments[:, :, None] == segments[:, None, :]
    return (same & causal)[:, None]


def packed_hidden(model, inputs, segments, parts=None):
    """The final hidden states of packed rows: embed, every layer with :func:`block_mask`, norm.
    ``model.layers`` is read at each call (gradient checkpointing wraps its entries)."""
    embed, norm, _ = parts or _parts(model)[0]
    mask = block_mask(segments)
    h = embed(inputs)
    for layer in model.layers:
        h = layer(h, mask, None)
    return norm(h)


def packing_support(model) -> str | None:
    """``None`` if the model can train packed, else the reason it cannot.

    Needs the ``embed -> layers -> norm -> head`` structure, a prompt cache of plain ``KVCache``
    layers (no sliding windows or state-space layers, whose masks differ), and a probe (random
    tokens, forward only): two sequences packed in one row give the hidden states each gives alone."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    parts, reason = _parts(model)
    if reason:
        return reason
    try:
        caches = make_prompt_cache(model)
    except Exception as e:  # a model without a cache of its own
        return f"no prompt cache ({type(e).__name__}: {e})"
    kinds = sorted({type(c).__name__ for c in caches if type(c) is not KVCache})
    if kinds:
        return f"its cache is not a plain KVCache ({', '.join(kinds)})"
    vocab = int(getattr(getattr(model, "args", None), "vocab_size", 16) or 16)
    rng = np.random.default_rng(0)
    a, b = (mx.array(rng.integers(0, min(vocab, 256), (1, n)).astype(np.int32)) for n in (11, 13))
    training = model.training
    model.eval()  # no dropout draws
    try:
        want = mx.concatenate([model.model(a), model.model(b)], axis=1).astype(mx.float32)
        segments = mx.array([[0] * 11 + [1] * 13], dtype=mx.int32)
        got = packed_hidden(model, mx.concatenate([a, b], axis=1), segments, parts).astype(mx.float32)
        err = mx.abs(got - want).max().item()
        scale = mx.abs(want).max().item()
    except Exception as e:  # layers that take no (h, mask, cache) call
        return f"a packed forward pass failed ({type(e).__name__}: {e})"
    finally:
        model.train(training)
    tol = 1e-4 if want.dtype == mx.float32 and got.dtype == mx.float32 else 3e-2
    if not err <= tol * max(scale, 1.0):
        return f"packed outputs differ from separate rows (max difference {err:.3g})"
    return None


def make_packed_loss(model):
    """``loss(model, inputs, segments, pos, targets, weights) -> (mean loss, trained tokens)`` over
    batches from :func:`make_packed_batch`: the mean over trained tokens, as the plain path's.
    A model that cannot be packed (:func:`packing_support`) is a ``UserError``."""
    import mlx.core as mx
    import mlx.nn as nn

    reason = packing_support(model)
    if reason:
        raise UserError(f"packing: this model cannot train packed ({reason}); use --packing off")
    parts = _parts(model)[0]
    head = parts[2]

    def loss(model, inputs, segments, pos, targets, weights):
        h = mx.take_along_axis(packed_hidden(model, inputs, segments, parts), pos[..., None], axis=1)
        ce = nn.losses.cross_entropy(head(h).astype(mx.float32), targets) * weights
        ntoks = weights.sum()
        return ce.sum() / ntoks, ntoks

    return loss


# ---------------------------------------------------------------- the setting


def decide(setting: str, model, examples: Sequence[Example], batch_size: int, shared: bool, workers: int):
    """``(plan or None, note or None)`` for the ``packing`` setting (``auto``, ``on``, ``off``).

    ``auto`` packs, with one worker and a model that packs, when over one epoch the shared-prefix
    path (if ``shared``) costs more than :data:`PREFIX_GAIN` of packing, or the plain path (else)
    more than 1 / :data:`PACK_GAIN` of it (:func:`row_cost` with the model's
    :func:`attention_span`); the note says why it did not when the data would gain. ``on`` packs
    (the same :func:`plan`) or raises."""
    if setting == "off":
        return None, None
    span = attention_span(model)
    p = plan(examples, batch_size, span)
    if setting == "on":
        if workers > 1:
            raise UserError(f"packing: on is for one worker (this run has {workers}); use --packing auto")
        reason = packing_support(model)
        if reason:
            raise UserError(f"packing: this model cannot train packed ({reason}); use --packing off")
        return p, None
    run, real = packed_cost(examples, p, span)
    if shared:
        other_run, other_real = prefix_cost(examples, batch_size, span)
        gains = other_run / other_real > PREFIX_GAIN * run / real
    else:
        other_run, other_real = plain_cost(examples, batch_size, span)
        gains = run / real <= PACK_GAIN * other_run / other_real
    if not gains:
        return None, None
    if workers > 1:
        return None, "packing: off with several workers (each would need its own rows); using the other path"
    reason = packing_support(model)
    if reason:
        return None, f"packing: off for this model ({reason}); using the other path"
    return p, None
