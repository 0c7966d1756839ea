"""Data for training: tokenize records, batch them by length, and the loss.

- per-token masks, so every assistant turn of a multi-turn conversation is trained;
- length bucketing by real token length (mlx-lm sorts by ``CacheDataset.itemlen``, which is the
  record's key count, so its batches mix lengths and pad a lot);
- answer-only logits: the output projection runs only on the positions that are trained (a
  batch carries their positions, a static shape), so the masked prompt never reaches the
  vocabulary projection - the largest matmul and activation of a small model;
- a step-exact data order (:class:`BatchStream`), so a resumed run sees the same batches.

Nothing here imports :mod:`mlx_tune.training.prefix`; it builds on this module.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from mlx_tune import UserError, fileio, records, tasks
from mlx_tune.rendering import Example, output_head, tokenize_record
from mlx_tune.training.train_config import TrainSettings, _joined

PAD_MULTIPLE = 8


@dataclass
class TokenizedData:
    examples: list[Example]
    dropped: int = 0
    truncated: int = 0
    too_long: int = 0
    longest: int = 0
    fingerprint: str = ""


def load_records(path: Path, task: str | None = None) -> list[dict]:
    """Read and validate a JSONL file; every invalid line in one ``UserError`` (file:line: field).
    With ``task``, a record of another task (:func:`record_task`) is a problem too."""
    out, problems = [], []
    for lineno, record in fileio.iter_jsonl(path):
        for problem in records.validate_record(record):
            problems.append(f"{path}:{lineno}: {problem}")
        found = tasks.record_task(record)
        if task is not None and found != task:
            problems.append(
                f"{path}:{lineno}: a {found} record, but the task is {task} "
                f"(--task {found}, or `task: {found}` in the phase config)"
            )
        out.append(record)
    if problems:
        raise UserError(_joined(f"{path}", problems))
    return out


def tokenize_split(
    tokenizer, recs: list[dict], settings: TrainSettings, decision_weight: float = 1.0
) -> TokenizedData:
    """Tokenize ``recs`` for training (``decision_weight``: the weight of each assistant turn's first
    token, :attr:`TrainSettings.decision_weight`; validation keeps 1)."""
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
        if decision_weight != 1:
            ex.weights = [decision_weight if i == s else 1.0 for s, e in ex.spans for i in range(s, e)]
        out.examples.append(ex)
    out.fingerprint = h.hexdigest()
    return out


# ---------------------------------------------------------------- batches and loss


def trained_weights(e: Example):
    """The loss weight of each of ``e``'s trained tokens, in span order (a float32 array)."""
    import numpy as np

    if e.weights is None:
        return np.ones(e.n_trained, np.float32)
    return np.asarray(e.weights, np.float32)


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
        weights[i, : len(idx)] = trained_weights(e)
    real = sum(len(e.tokens) for e in examples)
    return (mx.array(inputs), mx.array(pos), mx.array(targets), mx.array(weights)), real, b * (length + 1)


def batch_groups(examples: list[Example], batch_size: int) -> list[list[int]]:
    """Batches of examples of similar real token length (sorted, then cut into runs)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].tokens), i))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


class BatchStream:
    """The training data order: an epoch is a seeded permutation of ``groups`` (batches of example
    indices, e.g. from :func:`batch_groups` or :func:`mlx_tune.training.prefix.prefix_batch_groups`).

    Micro-batch ``t`` is a pure function of (seed, t), so a resumed run sees the same batches.
    ``build`` turns a list of examples into ``(arrays, real tokens, padded tokens)``
    (:func:`make_batch` or :func:`mlx_tune.training.prefix.make_prefix_batch`)."""

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
