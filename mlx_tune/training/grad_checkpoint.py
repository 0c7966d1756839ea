"""Gradient checkpointing by wrapping each transformer layer (as LoRA wraps a linear layer).

:func:`checkpointed_layers` puts a :class:`Checkpointed` module in place of each entry of
``model.layers`` for the duration of a ``with`` block and puts the originals back after. The wrapper
holds the layer's own child modules, so parameter names (``layers.3.self_attn.q_proj.lora_a``),
freezing and saved adapters are unchanged; its call recomputes the layer's activations in the
backward pass (``mx.checkpoint``). No class is modified, so other models in the process are untouched.

A layer called with a shared-prefix cache (:mod:`mlx_tune.training.prefix`) gets the cached keys and values
as explicit inputs of the checkpointed function and returns the updated ones as outputs, so the
prefix's keys and values keep their gradient (a cache mutated inside ``mx.checkpoint`` would lose it:
mlx-lm's own ``grad_checkpoint`` gives wrong updates on that path).
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn

from mlx_tune.training.prefix import cache_class


class Checkpointed(nn.Module):
    """A transformer layer whose activations are recomputed in the backward pass."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        for key, child in layer.items():  # the same child objects: same parameters, same freezing
            self[key] = child
        # Plain attributes, outside the parameter tree (nn.Module would store a module as a child).
        object.__setattr__(self, "layer", layer)
        self._kv = cache_class()

    def __call__(self, *args, **kwargs):
        layer = self.layer
        if layer.training != self.training:
            layer.train(self.training)
        where = [("a", i) for i, a in enumerate(args) if isinstance(a, self._kv)]
        where += [("k", k) for k, v in kwargs.items() if isinstance(v, self._kv)]
        if not where:

            def inner(params, *a, **kw):
                layer.update(params)
                return layer(*a, **kw)

            return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

        kind, slot = where[0]
        cache = args[slot] if kind == "a" else kwargs[slot]
        kv = [] if cache.keys is None else [cache.keys, cache.values]

        def inner_kv(params, x, *kv):
            layer.update(params)
            c = self._kv()
            if kv:
                c.state = tuple(kv)
            a, kw = [x, *args[1:]], dict(kwargs)
            if kind == "a":
                a[slot] = c
            else:
                kw[slot] = c
            return layer(*a, **kw), c.keys, c.values

        out, cache.keys, cache.values = mx.checkpoint(inner_kv)(self.trainable_parameters(), args[0], *kv)
        cache.offset = cache.keys.shape[-2]
        return out


def _wrappable(layer) -> bool:
    # A layer holding arrays directly (not in child modules) would need its freezing state copied.
    return isinstance(layer, nn.Module) and not any(isinstance(v, mx.array) for v in layer.values())


def _lists_holding(tree, targets: set[int]) -> list[list]:
    """The lists in a module tree that hold any of the objects whose ids are ``targets``
    (``model.layers`` may be a copy, e.g. a pipeline slice of ``model.model.layers``)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        values = node.values() if isinstance(node, dict) else node
        if isinstance(node, list) and any(id(v) in targets for v in node):
            found.append(node)
        stack.extend(v for v in values if isinstance(v, (dict, list)) and id(v) not in targets)
    return found


@contextlib.contextmanager
def checkpointed_layers(model, on: bool = True):
    """Within the block, every layer of ``model.layers`` is :class:`Checkpointed` (if ``on``)."""
    if not on:
        yield model
        return
    layers = [layer for layer in model.layers if _wrappable(layer)]
    swapped: list[tuple[list, int, nn.Module]] = []
    for holder in _lists_holding(model, {id(layer) for layer in layers}):
        for i, layer in enumerate(holder):
            if any(layer is x for x in layers):
                wrapped = Checkpointed(layer)
                wrapped.train(layer.training)
                holder[i] = wrapped
                swapped.append((holder, i, layer))
    try:
        yield model
    finally:
        for holder, i, layer in swapped:
            holder[i] = layer
