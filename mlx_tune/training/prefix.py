"""Shared-prefix training: run a batch's common token prefix once and its suffixes against it.

Every tool-use record starts with the same system prompt and tool schema. In a batch whose rows
share a prefix, the prefix runs once (batch 1) through the model with a KV cache, the cache is
broadcast to the rows, and the right-padded suffixes run against it. This is exact: autograd sums
the prefix's gradient over the rows (the gradient of the broadcast), and a trained target inside
the prefix (``mask_prompt`` off) is weighted by the number of rows that train it.

The pieces mirror :mod:`mlx_tune.training.batching`'s conventions so wiring is a swap:

- :func:`prefix_batch_groups` for ``batch_groups`` (examples grouped by shared prefix, then
  bucketed by length; leftovers of each group pooled);
- :func:`make_prefix_batch` for ``make_batch`` (same ``(arrays, real, computed)`` return);
- :func:`make_prefix_loss` for ``make_loss`` (same ``loss(model, *batch) -> (mean, ntoks)``);
- :func:`prefix_eval_batches` for ``eval_batches``;
- :func:`shared_prefix_support` says whether a model can take this path (any mlx-lm model whose
  prompt cache is plain ``KVCache`` layers and whose outputs match the plain path on a probe).

A batch is a tuple of sub-batches, one per distinct prefix among its rows (rows without a partner
form one plain sub-batch), each ``(prefix, prefix_pos, prefix_targets, prefix_weights, suffix,
suffix_pos, suffix_targets, suffix_weights)``; every shape is static, so the loss traces under
``mx.compile`` (a new shape retraces, as in the plain path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mlx_tune.rendering import Example
from mlx_tune.training.batching import PAD_MULTIPLE, _round_up, loss_head, ordered_batches, trained_weights

MIN_SHARED = 16
"""A sub-batch shares its prefix only if it is at least this many tokens (else it runs plain)."""
MIN_GAIN = 32
"""Split a data set group into sub-groups only if rows gain this many shared tokens on average."""


# ---------------------------------------------------------------- grouping


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def shared_length(common: int) -> int:
    """Prefix tokens actually cached for rows with ``common`` common tokens: one token less (the
    last cached position must predict a token every row shares), rounded down to a multiple of 8
    (fewer distinct shapes to compile), and 0 below :data:`MIN_SHARED`."""
    c = (common - 1) // PAD_MULTIPLE * PAD_MULTIPLE
    return c if c >= MIN_SHARED else 0


def _tree_split(seqs: list[np.ndarray], accept: Callable) -> list[list[int]]:
    """Split indices of ``seqs`` into prefix groups, recursively at the smallest common prefix.

    The sequences are sorted lexicographically; a range's common prefix is then the minimum of its
    adjacent common prefixes, and cutting where that minimum is reached gives sub-ranges that
    each share more. ``accept(m, children)`` (``children`` as ``(size, common or None)``) decides
    whether a cut is worth it. Returns groups of original indices, in sorted order."""
    order = sorted(range(len(seqs)), key=lambda i: (seqs[i].tolist(), i))
    adj = np.zeros(len(order), np.int64)
    for j in range(1, len(order)):
        adj[j] = _lcp(seqs[order[j - 1]], seqs[order[j]])

    def common(lo: int, hi: int) -> int | None:
        return int(adj[lo + 1 : hi].min()) if hi - lo > 1 else None

    out: list[tuple[int, int]] = []
    stack = [(0, len(order))] if order else []
    while stack:
        lo, hi = stack.pop()
        m = common(lo, hi)
        if m is None:
            out.append((lo, hi))
            continue
        cuts = [j for j in range(lo + 1, hi) if adj[j] == m]
        bounds = [lo, *cuts, hi]
        children = list(zip(bounds[:-1], bounds[1:], strict=True))
        if accept(m, [(b - a, common(a, b)) for a, b in children]):
            stack.extend(children)
        else:
            out.append((lo, hi))
    out.sort()
    return [order[a:b] for a, b in out]


def _accept_for_data(m: int, children: list[tuple[int, int | None]]) -> bool:
    n = sum(size for size, _ in children)
    gain = sum(size * (c - m) for size, c in children if c is not None)
    return gain >= MIN_GAIN * n


def _accept_for_batch(m: int, children: list[tuple[int, int | None]]) -> bool:
    # Computed positions: a sub-batch of b rows sharing C tokens costs sum(len) - (b - 1) * C.
    n = sum(size for size, _ in children)
    split = sum((size - 1) * shared_length(c) for size, c in children if c is not None)
    return split > (n - 1) * shared_length(m)


def prefix_groups(examples: Sequence[Example]) -> list[list[int]]:
    """Example indices grouped by shared token prefix (normally one group per system prompt and
    tool set), each group sorted by length."""
    seqs = [np.asarray(e.tokens, np.int64) for e in examples]
    groups = _tree_split(seqs, _accept_for_data)
    return [sorted(g, key=lambda i: (len(examples[i].tokens), i)) for g in groups]


def prefix_batch_groups(examples: Sequence[Example], batch_size: int) -> list[list[int]]:
    """Like ``train.batch_groups``: full batches of example indices, the remainder dropped, but
    grouped by shared prefix first, then bucketed by length inside each group. Each group's
    leftover rows (fewer than a batch) are pooled and cut into batches too."""
    batches: list[list[int]] = []
    pool: list[int] = []
    for group in prefix_groups(examples):
        full = len(group) // batch_size * batch_size
        batches.extend(group[i : i + batch_size] for i in range(0, full, batch_size))
        pool.extend(group[full:])
    batches.extend(pool[i : i + batch_size] for i in range(0, len(pool) - batch_size + 1, batch_size))
    return batches


def prefix_eval_batches(examples: Sequence[Example], batch_size: int):
    """Like ``train.eval_batches``: every example once (the last batch may be short), ordered by
    prefix group, then length."""
    order = [i for g in prefix_groups(examples) for i in g]
    return ordered_batches(examples, order, batch_size, make_prefix_batch)


# ---------------------------------------------------------------- batches


def _sub_batch(rows: list[Example], shared: int):
    """Arrays of one sub-batch whose rows share their first ``shared + 1`` tokens (0: plain)."""
    import mlx.core as mx

    c = shared
    b = len(rows)
    length = _round_up(max(len(e.tokens) - 1 - c for e in rows))
    prefix_w = np.zeros(c, np.float32)
    sfx = []
    sfx_w = []
    for e in rows:
        idx = np.concatenate([np.arange(s, t) for s, t in e.spans]) - 1  # positions predicting targets
        w = trained_weights(e)
        np.add.at(prefix_w, idx[idx < c], w[idx < c])
        sfx.append(idx[idx >= c] - c)
        sfx_w.append(w[idx >= c])
    k = _round_up(max(len(p) for p in sfx))
    inputs = np.zeros((b, length), np.int32)
    pos = np.zeros((b, k), np.int32)
    targets = np.zeros((b, k), np.int32)
    weights = np.zeros((b, k), np.float32)
    for i, (e, p, w) in enumerate(zip(rows, sfx, sfx_w, strict=True)):
        tokens = np.asarray(e.tokens, np.int32)
        inputs[i, : len(tokens) - 1 - c] = tokens[c:-1]
        pos[i, : len(p)] = p
        targets[i, : len(p)] = tokens[p + c + 1]
        weights[i, : len(p)] = w
    ppos = np.flatnonzero(prefix_w).astype(np.int32)
    kp = _round_up(len(ppos)) if len(ppos) else 0
    p_pos = np.zeros(kp, np.int32)
    p_tgt = np.zeros(kp, np.int32)
    p_w = np.zeros(kp, np.float32)
    p_pos[: len(ppos)] = ppos
    p_tgt[: len(ppos)] = np.asarray(rows[0].tokens, np.int32)[ppos + 1]
    p_w[: len(ppos)] = prefix_w[ppos]
    prefix = np.asarray(rows[0].tokens[:c], np.int32)[None]
    arrays = (prefix, p_pos, p_tgt, p_w, inputs, pos, targets, weights)
    pad = b * length - sum(len(e.tokens) - 1 - c for e in rows)
    return tuple(mx.array(a) for a in arrays), pad


def make_prefix_batch(examples: list[Example]):
    """Like ``train.make_batch``: ``(arrays, real tokens, real tokens + padding positions)``, where
    arrays is a tuple of sub-batches (see the module docstring) for :func:`make_prefix_loss`. As in
    the plain path, ``1 - real / padded`` is the share of padding; the saving of the shared prefix
    shows in tokens/s (and in :func:`computed_positions`)."""
    seqs = [np.asarray(e.tokens, np.int64) for e in examples]
    subs, plain = [], []
    for group in _tree_split(seqs, _accept_for_batch):
        rows = sorted(group)
        c = shared_length(min(_lcp(seqs[rows[0]], seqs[i]) for i in rows[1:])) if len(rows) > 1 else 0
        if c:
            subs.append((rows[0], [examples[i] for i in rows], c))
        else:
            plain.extend(rows)
    if plain:
        plain.sort()
        subs.append((plain[0], [examples[i] for i in plain], 0))
    subs.sort(key=lambda s: s[0])
    arrays, pad = [], 0
    for _, rows, c in subs:
        a, n = _sub_batch(rows, c)
        arrays.append(a)
        pad += n
    real = sum(len(e.tokens) for e in examples)
    return tuple(arrays), real, real + pad


def computed_positions(subs) -> int:
    """Positions a batch from :func:`make_prefix_batch` runs through the model (prefix once, padded
    suffixes per row); the plain path runs ``rows * padded length``."""
    return sum(s[0].shape[1] + s[4].shape[0] * s[4].shape[1] for s in subs)


# ---------------------------------------------------------------- model support and loss


def cache_class():
    """The cache a shared prefix is run into (its keys and values are then broadcast to the rows)."""
    from mlx_lm.models.cache import ConcatenateKVCache

    return ConcatenateKVCache


def make_prefix_loss(model):
    """Like ``train.make_loss``: ``loss(model, *subs) -> (mean loss, trained tokens)`` over batches
    from :func:`make_prefix_batch`; equal (to float rounding) to the plain loss of the same rows."""
    import mlx.core as mx
    import mlx.nn as nn

    hidden, head = loss_head(model)
    n_layers = len(model.layers)
    kv_cache = cache_class()

    def ce_sum(h, pos, targets, weights):
        logits = head(mx.take_along_axis(h, pos[..., None], axis=-2))
        return (nn.losses.cross_entropy(logits.astype(mx.float32), targets) * weights).sum()

    def loss(model, *subs):
        total = mx.array(0.0)
        ntoks = mx.array(0.0)
        for prefix, p_pos, p_tgt, p_w, inputs, pos, targets, weights in subs:
            cache = None
            if prefix.shape[1]:
                cache = [kv_cache() for _ in range(n_layers)]
                hp = hidden(prefix, cache)
                if p_pos.shape[0]:
                    total = total + ce_sum(hp[0], p_pos, p_tgt, p_w)
                    ntoks = ntoks + p_w.sum()
                b = inputs.shape[0]
                for c in cache:  # the prefix's keys and values, shared by every row
                    c.keys = mx.broadcast_to(c.keys, (b, *c.keys.shape[1:]))
                    c.values = mx.broadcast_to(c.values, (b, *c.values.shape[1:]))
            hs = hidden(inputs, cache)
            total = total + ce_sum(hs, pos, targets, weights)
            ntoks = ntoks + weights.sum()
        return total / ntoks, ntoks

    return loss


def shared_prefix_support(model) -> str | None:
    """``None`` if the model can train on the shared-prefix path, else the reason it cannot.

    Needs a prompt cache of plain ``KVCache`` layers (no sliding-window, state-space or other
    special caches), and a probe (random tokens, forward only) whose shared-prefix outputs match
    the plain full-sequence outputs."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    try:
        caches = make_prompt_cache(model)
    except Exception as e:  # a model without layers or a cache of its own
        return f"no prompt cache ({type(e).__name__}: {e})"
    kinds = sorted({type(c).__name__ for c in caches if type(c) is not KVCache})
    if kinds or not caches:
        return f"its cache is not a plain KVCache ({', '.join(kinds) or 'none'})"

    def hidden(x, cache=None):
        return model(x, cache=cache)

    vocab = int(model.args.vocab_size) if hasattr(model, "args") and hasattr(model.args, "vocab_size") else 16
    rng = np.random.default_rng(0)
    c, s = 16, 8
    prefix = rng.integers(0, min(vocab, 256), c)
    suffix = rng.integers(0, min(vocab, 256), (2, s))
    full = mx.array(np.concatenate([np.stack([prefix, prefix]), suffix], axis=1).astype(np.int32))
    try:
        want = hidden(full)[:, c:]
        cache = [cache_class()() for _ in caches]
        hidden(mx.array(prefix[None].astype(np.int32)), cache)
        for kv in cache:
            kv.keys = mx.broadcast_to(kv.keys, (2, *kv.keys.shape[1:]))
            kv.values = mx.broadcast_to(kv.values, (2, *kv.values.shape[1:]))
        got = hidden(mx.array(suffix.astype(np.int32)), cache)
        err = mx.abs(got.astype(mx.float32) - want.astype(mx.float32)).max().item()
        scale = mx.abs(want.astype(mx.float32)).max().item()
    except Exception as e:  # an architecture whose __call__ takes no cache this way
        return f"a forward pass with a cache failed ({type(e).__name__}: {e})"
    tol = 1e-3 if want.dtype == mx.float32 else 3e-2
    if not err <= tol * max(scale, 1.0):
        return f"shared-prefix outputs differ from the plain path (max difference {err:.3g})"
    return None
