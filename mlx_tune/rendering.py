"""How a record becomes tokens, and where a model's output head is: what training and evaluation
both use, so neither imports the other.

- :func:`tokenize_record`: a conversation's tokens and its trained spans (every assistant turn), as
  training trains them and as evaluation measures perplexity;
- :func:`render_messages` / :func:`render_prompts`: a conversation so far plus the generation prompt,
  what a model is asked to answer (evaluation's prompts, fusing's model-card check);
- :func:`common_length` / :func:`common_prefix`: shared token prefixes (training's shared-prefix
  batches, evaluation's shared KV cache);
- :func:`output_head`: a model split into its transformer and its output projection, so a loss or
  a perplexity projects only the positions it needs.

Every rendering goes through the tokenizer's chat template with tool-call arguments as objects
(:func:`mlx_tune.records.templated_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlx_tune import records


@dataclass
class Example:
    """One tokenized conversation: its tokens and the token ranges training trains."""

    tokens: list[int]
    spans: list[tuple[int, int]]
    """Trained token ranges ``[start, end)`` (targets), one per assistant turn."""
    weights: list[float] | None = None
    """Loss weight of each trained token, in span order (``None``: all 1)."""

    @property
    def n_trained(self) -> int:
        return sum(e - s for s, e in self.spans)


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


def render_messages(tokenizer, messages: Sequence[dict], tools: list | None = None) -> list[int]:
    """Token ids of a conversation so far plus the generation prompt: what the model answers.
    Tool-call arguments are rendered as objects, as training renders them
    (:func:`mlx_tune.records.templated_messages`)."""
    messages = records.templated_messages({"messages": list(messages)})
    ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, return_dict=False)
    return list(ids)


def render_prompts(tokenizer, queries: Sequence[dict]) -> list[list[int]]:
    """Token ids of each query's prompt: the messages before its first assistant turn (the
    decision the reference makes, :func:`mlx_tune.records.prompt_messages`), plus the generation
    prompt. A trajectory's later turns (tool output, final answer) are not part of it."""
    return [render_messages(tokenizer, records.prompt_messages(r), r.get("tools")) for r in queries]


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest shared prefix, leaving every prompt at least one token of its own."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = min(n, common_length(prompts[0], p))
    return max(n, 0)


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
