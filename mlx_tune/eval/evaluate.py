"""Fast, faithful evaluation on mlx-lm: batched greedy generation with a shared prompt prefix,
a plain per-query reference loop, and perplexity over the tokens training trains.

A query's prompt is the record's messages before its first assistant turn (the decision the
reference makes), rendered like training renders them; the agent loop (:mod:`mlx_tune.eval.agent`)
passes grown conversations as prompt token lists.

Every query of a held-out set starts with the same tokens (system prompt and tool schemas), so
:func:`generate_batched` runs that prefix through the model once, gives each query a copy of the
resulting KV cache, and decodes the queries together in mlx-lm's ``BatchGenerator`` (continuous
batching, greedy). A query stops as soon as its answer is complete: an end-of-sequence token
(``<|im_end|>``), a closing ``</tool_call>``, or in code mode a closed code block; or as soon as
it holds a tool call whose JSON is broken (:mod:`mlx_tune.eval.json_prefix`), which is scored
``invalid`` whatever follows, so the rest cannot change any score.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_tune.eval.json_prefix import JsonPrefix
from mlx_tune.eval.metrics import finish_text, record_format
from mlx_tune.rendering import common_prefix, render_prompts

PREFILL_STEP = 512
TOOL_CALL_OPEN = "<tool_call>"


@dataclass
class Generation:
    texts: list[str]
    token_counts: list[int]
    latencies: list[float]
    prompt_tokens: int = 0
    prompt_time: float = 0.0
    generation_tokens: int = 0
    generation_time: float = 0.0
    wall_time: float = 0.0
    prefix_tokens: int = 0
    stopped_broken: list[bool] = field(default_factory=list)  # stopped at a broken tool call

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_time if self.prompt_time else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generation_tokens / self.generation_time if self.generation_time else 0.0


def _complete(tokenizer, toks: list[int], fmt: str, closer: int | None = None, backtick=None) -> bool:
    """The answer so far is complete: it closed a tool call (checked here only when ``</tool_call>``
    is not one stop token), or in code mode a code block (decoded only after a token with a "`")."""
    if closer is None and "</tool_call>" in tokenizer.decode(toks[-12:]):
        return True
    if fmt != "code" or (backtick is not None and not backtick(toks[-1])):
        return False
    return tokenizer.decode(toks).count("```") >= 2


def _token_texts(tokenizer):
    """``f(token_id) -> str``: the token decoded on its own (memoised per id)."""
    seen: dict[int, str] = {}

    def text(t: int) -> str:
        if t not in seen:
            seen[t] = tokenizer.decode([t])
        return seen[t]

    return text


def _backtick_checker(tokenizer, token_text=None):
    """``f(token_id) -> bool``: the token's text contains a backtick."""
    token_text = token_text or _token_texts(tokenizer)
    return lambda t: "`" in token_text(t)


def broken_tool_call(text: str) -> bool:
    """``text`` opens a tool call whose JSON no continuation can repair (scored ``invalid``)."""
    text = finish_text(text)
    at = text.find(TOOL_CALL_OPEN)
    return at >= 0 and JsonPrefix().feed(text[at + len(TOOL_CALL_OPEN) :])


class _BrokenCallWatch:
    """Follows one answer token by token; :meth:`feed` turns true once the answer holds a tool
    call whose JSON is broken (a cheap first check on per-token texts, to be confirmed on the
    decoded answer with :func:`broken_tool_call`)."""

    def __init__(self) -> None:
        self.tail = ""
        self.json: JsonPrefix | None = None

    def feed(self, piece: str) -> bool:
        if self.json is None:
            self.tail += piece
            at = self.tail.find(TOOL_CALL_OPEN)
            if at < 0:
                self.tail = self.tail[-len(TOOL_CALL_OPEN) :]
                return False
            self.json = JsonPrefix()
            piece = self.tail[at + len(TOOL_CALL_OPEN) :]
        return self.json.feed(piece)


def _stop_tokens(tokenizer) -> tuple[set[int], int | None]:
    """End-of-sequence ids (``<|im_end|>`` included) and the id of ``</tool_call>`` when the
    tokenizer has it as one special token (Qwen's has), else ``None``."""
    vocab = tokenizer.get_vocab()
    eos = set(tokenizer.eos_token_ids)
    if "<|im_end|>" in vocab:
        eos.add(vocab["<|im_end|>"])
    closer = vocab.get("</tool_call>")
    if closer is not None and tokenizer.encode("</tool_call>", add_special_tokens=False) != [closer]:
        closer = None
    return eos, closer


def generate_batched(
    model,
    tokenizer,
    queries: Sequence[dict],
    *,
    max_tokens: int = 256,
    batch_size: int = 32,
    stop_broken_calls: bool = True,
    progress: bool = False,
    prompts: Sequence[Sequence[int]] | None = None,
) -> Generation:
    """Greedy answers for ``queries`` (records), batched, sharing the prompt prefix's KV cache.
    ``prompts`` (token ids, one per query) replaces :func:`render_prompts`: the agent loop passes
    conversations that have grown by tool turns; ``queries`` then only give each answer's format.

    Stop checks run on token ids inside the generator (end of sequence, and ``</tool_call>`` when it
    is one token), so nothing is detokenized per step. Finished queries are replaced in groups (a
    quarter of the batch at a time) because every join or leave copies the whole batch's KV cache.

    With ``stop_broken_calls``, a query in the tools format also stops once its answer holds a tool
    call whose JSON is broken: it is scored ``invalid`` (and ROUGE-L 0) whatever follows, so the
    rest cannot change a score. Its text is then the start of the answer a full decode would give.
    """
    from mlx_lm.generate import BatchGenerator
    from tqdm import tqdm

    t_start = time.perf_counter()
    prompts = [list(p) for p in prompts] if prompts is not None else render_prompts(tokenizer, queries)
    fmts = [record_format(r) for r in queries]
    n = len(prompts)
    eos, closer = _stop_tokens(tokenizer)
    stop_tokens = [[t] for t in sorted(eos | ({closer} if closer is not None else set()))]
    token_text = _token_texts(tokenizer)
    backtick = _backtick_checker(tokenizer, token_text)
    watches: dict[int, _BrokenCallWatch] = {}
    stopped_broken = [False] * n

    # The shared prefix, computed once; every query starts from (a copy of) its KV cache.
    k = common_prefix(prompts)
    tic = time.perf_counter()
    prefix_cache = prefill(model, prompts[0][:k])
    prefix_time = time.perf_counter() - tic

    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=stop_tokens,
        completion_batch_size=batch_size,
        prefill_batch_size=batch_size,
    )
    tokens: dict[int, list[int]] = {}
    uid_to_index: dict[int, int] = {}
    started: dict[int, float] = {}
    latencies = [0.0] * n
    texts = [""] * n
    counts = [0] * n
    next_query = 0
    refill_at = max(1, batch_size // 4)

    def insert(m: int) -> None:
        nonlocal next_query
        idx = list(range(next_query, min(n, next_query + m)))
        if not idx:
            return
        caches = [copy.deepcopy(prefix_cache) for _ in idx] if k else None
        uids = gen.insert([prompts[i][k:] for i in idx], caches=caches)
        now = time.perf_counter()
        for uid, i in zip(uids, idx, strict=True):
            uid_to_index[uid], tokens[uid], started[uid] = i, [], now
            if stop_broken_calls and fmts[i] == "tools":
                watches[uid] = _BrokenCallWatch()
        next_query += len(idx)

    def finish(uid: int) -> None:
        i = uid_to_index.pop(uid)
        toks = tokens.pop(uid)
        watches.pop(uid, None)
        latencies[i] = time.perf_counter() - started.pop(uid)
        counts[i] = len(toks)
        texts[i] = finish_text(tokenizer.decode(toks))

    insert(batch_size)
    bar = tqdm(total=n, desc="generate", unit="query", disable=not progress, leave=False)
    with gen.stats() as stats:
        while uid_to_index:
            responses = gen.next_generated()
            if not responses:
                break
            done, removed = [], []
            for r in responses:
                if r.uid not in tokens:
                    continue
                toks = tokens[r.uid]
                if r.token not in eos:
                    toks.append(r.token)
                fmt = fmts[uid_to_index[r.uid]]
                if r.finish_reason is not None:
                    done.append(r.uid)
                elif (closer is None or fmt == "code") and _complete(tokenizer, toks, fmt, closer, backtick):
                    removed.append(r.uid)
                elif r.uid in watches and watches[r.uid].feed(token_text(r.token)):
                    # confirmed on the decoded text, which is what gets scored
                    if broken_tool_call(tokenizer.decode(toks)):
                        removed.append(r.uid)
                        stopped_broken[uid_to_index[r.uid]] = True
                    del watches[r.uid]
            if removed:
                gen.remove(removed)
            for uid in done + removed:
                finish(uid)
            bar.update(len(done) + len(removed))
            free = batch_size - len(uid_to_index)
            if free >= refill_at:
                insert(free)
    bar.close()
    gen.close()
    return Generation(
        texts=texts,
        token_counts=counts,
        latencies=latencies,
        prompt_tokens=stats.prompt_tokens + k,
        prompt_time=stats.prompt_time + prefix_time,
        generation_tokens=stats.generation_tokens,
        generation_time=stats.generation_time,
        wall_time=time.perf_counter() - t_start,
        prefix_tokens=k,
        stopped_broken=stopped_broken,
    )


def generate_loop(
    model,
    tokenizer,
    queries: Sequence[dict],
    *,
    max_tokens: int = 256,
    progress: bool = False,
    prompts: Sequence[Sequence[int]] | None = None,
) -> Generation:
    """The reference: one plain ``mlx_lm.generate`` call per query (greedy, no shared prefix);
    ``prompts`` as in :func:`generate_batched`."""
    import mlx_lm
    from tqdm import tqdm

    t_start = time.perf_counter()
    prompts = [list(p) for p in prompts] if prompts is not None else render_prompts(tokenizer, queries)
    texts, counts, latencies = [], [], []
    for p in tqdm(prompts, desc="generate (loop)", unit="query", disable=not progress, leave=False):
        tic = time.perf_counter()
        text = mlx_lm.generate(model, tokenizer, p, max_tokens=max_tokens, verbose=False)
        latencies.append(time.perf_counter() - tic)
        texts.append(finish_text(text))
        counts.append(len(tokenizer.encode(text, add_special_tokens=False)))
    return Generation(texts, counts, latencies, wall_time=time.perf_counter() - t_start)


def prefill(model, tokens: Sequence[int], cache: list | None = None) -> list:
    """Run ``tokens`` through the model into ``cache`` (a new one if ``None``) and return it."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model) if cache is None else cache
    for s in range(0, len(tokens), PREFILL_STEP):
        model(mx.array(tokens[s : s + PREFILL_STEP])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def perplexity(model, tokenizer, queries: Sequence[dict], *, max_seq_length: int = 4096) -> float | None:
    """exp(mean negative log-likelihood) over the tokens training trains: every assistant turn of
    each record, rendered and masked by :func:`mlx_tune.rendering.tokenize_record` (the function
    training uses), cut at ``max_seq_length`` as training cuts. ``None`` if nothing is trained.

    The shared prefix (system prompt and tool schemas) is computed once; each record then runs
    only its own tokens, and the output projection is applied only at the trained positions."""
    import mlx.nn as nn

    from mlx_tune.rendering import output_head, tokenize_record

    items = []
    for r in queries:
        ex = tokenize_record(tokenizer, r, mask_prompt=True)
        tokens = ex.tokens[:max_seq_length]
        targets = [t for s, e in ex.spans for t in range(s, min(e, len(tokens)))]
        if targets:
            items.append((tokens, targets))
    if not items:
        return None
    # Logits are needed from position (first target - 1) on, so the prefix stops before it.
    k = common_prefix([t[: targets[0]] for t, targets in items])
    hidden, head, _ = output_head(model)
    prefix_cache = prefill(model, items[0][0][:k])
    total_nll, total_tokens = 0.0, 0
    for tokens, targets in items:
        cache = copy.deepcopy(prefix_cache)
        h = hidden(mx.array(tokens[k:-1])[None], cache=cache)[0]
        picked = h[mx.array([t - 1 - k for t in targets])]
        logits = head(picked).astype(mx.float32)
        nll = nn.losses.cross_entropy(logits, mx.array([tokens[t] for t in targets]), reduction="sum")
        total_nll += float(nll.item())
        total_tokens += len(targets)
    return math.exp(total_nll / total_tokens)
