"""The ``chat`` task: question answering fine-tuned on mixed real and synthetic chat data.

Records are plain conversations (``messages``: optional system, user, assistant; no tools), with
``meta.origin`` ``real`` or ``synthetic`` and ``meta.task`` ``chat``; ``mlx-tune data combine``
(:mod:`mlx_tune.tasks.chat_combine`) builds them from the common chat JSONL shapes. A query's
prompt is everything before the first assistant turn and its reference is that turn.

Metrics (:func:`score`), each with a 95% interval and also per origin (``rouge_l/real``,
``rouge_l/synthetic``...), real and synthetic questions reported apart:

- ``exact_match``: the answer equals the reference after normalization (lower case, words only:
  punctuation, markup and extra spaces removed); Wilson interval over all queries.
- ``short_answer``: accuracy on queries whose reference is short: a choice letter (``A``-``D``,
  also written ``(B)``, ``B.`` or ``B)``) or at most :data:`SHORT_WORDS` words. The answer's first
  choice counts: for a letter, the letter it opens with when punctuation or nothing follows it
  (``B``, ``(B) typer``, ``B. typer``; not ``A function ...``) or the one after "answer is"/"answer:"; for a short answer, its first line up to the first sentence
  end, normalized, equal to the reference's normalization. ``n/a`` when no query is short.
- ``rouge_l``: mean ROUGE-L F1 (:func:`mlx_tune.eval.metrics.rouge_l`), bootstrap interval.
- perplexity over the answer tokens, overall and per origin, with a bootstrap interval over
  queries, when a model is loaded (:func:`perplexity_by_origin`).

Baselines (:func:`baselines`): a constant answer, and the training answer of the training
question with the most words in common (a retrieval baseline a fine-tune must beat).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from mlx_tune import records
from mlx_tune.eval import intervals
from mlx_tune.tasks.chat_combine import normalize_text

NAME = "chat"
SUMMARY = "question answering from mixed real and synthetic chat data (ROUGE-L, exact match, accuracy)"
SHORT_WORDS = 4
METRICS = ("exact_match", "short_answer", "rouge_l")
ORIGINS = ("real", "synthetic")
COLUMNS = tuple(
    (f"{label}{'' if o is None else ' ' + o}", m if o is None else f"{m}/{o}")
    for o in (None, *ORIGINS)
    for m, label in zip(METRICS, ("exact", "short acc", "rouge-L"), strict=True)
)
# Filled only where a model is loaded (mlx-tune bench --task chat, the demo): n/a for baselines.
COLUMNS += (("ppl real", "perplexity/real"), ("ppl synthetic", "perplexity/synthetic"))
CHART_KEYS = ("exact_match", "short_answer", "rouge_l", "rouge_l/real", "rouge_l/synthetic")
CONSTANT_ANSWER = "I don't know."
_LETTER = re.compile(r"^\s*[\(\[]?([A-Da-d])(?:[\)\]\.:,]|\s*$)")
_ANSWER_IS = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*[\(\[]?([A-Da-d])\b", re.IGNORECASE)


def reference_of(record: dict) -> str:
    """The answer the benchmark's prompt (the messages before the first assistant turn) asks for:
    the first assistant turn (in a multi-turn conversation, later turns answer later questions)."""
    return record["messages"][records.first_turn_index(record)].get("content") or ""


def origin_of(record: dict) -> str:
    return (record.get("meta") or {}).get("origin") or "unknown"


def choice_letter(text: str) -> str | None:
    """The choice letter a text opens with (``B``, ``(B)``, ``B.``, ``B) ...``) or gives after
    "answer is"; ``None`` if neither."""
    m = _LETTER.match(text) or _ANSWER_IS.search(text)
    return m.group(1).upper() if m else None


def is_short(reference: str) -> bool:
    """A choice letter or at most :data:`SHORT_WORDS` words."""
    return (
        choice_letter(reference) is not None
        and len(reference.strip()) <= 3
        or (0 < len(normalize_text(reference).split()) <= SHORT_WORDS)
    )


def first_answer(text: str) -> str:
    """The first line of ``text`` up to its first sentence end, normalized."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return normalize_text(re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0])


def short_correct(prediction: str, reference: str) -> bool:
    ref_letter = choice_letter(reference) if len(reference.strip()) <= 3 else None
    if ref_letter is not None:
        return choice_letter(prediction) == ref_letter
    return first_answer(prediction) == normalize_text(reference)


def score_row(prediction: str, reference: str) -> dict:
    """One query's figures (``short_answer`` is ``None`` when the reference is not short)."""
    from mlx_tune.eval.metrics import rouge_l

    return {
        "exact_match": normalize_text(prediction) == normalize_text(reference),
        "short_answer": short_correct(prediction, reference) if is_short(reference) else None,
        "rouge_l": rouge_l(prediction, reference) if prediction.strip() else 0.0,
    }


def aggregate(rows: list[dict]) -> tuple[dict, dict]:
    """``(accuracy, ci)`` of ``rows``: shares with Wilson intervals, mean ROUGE-L with a bootstrap one."""
    accuracy, ci = {}, {}
    for key in ("exact_match", "short_answer"):
        flags = [r[key] for r in rows if r[key] is not None]
        accuracy[key] = sum(flags) / len(flags) if flags else None
        ci[key] = intervals.wilson(sum(flags), len(flags))
    rouge = [r["rouge_l"] for r in rows]
    accuracy["rouge_l"] = sum(rouge) / len(rouge) if rouge else None
    ci["rouge_l"] = intervals.mean_interval(rouge)
    return accuracy, ci


def score(queries: list[dict], texts: list[str], **_ignored) -> dict:
    """Score ``texts`` (one answer per query): ``{"accuracy", "ci", "counts", "rows", "per_query"}``
    with every metric overall and per origin (``metric/real``, ``metric/synthetic``)."""
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries but {len(texts)} answers")
    rows = [
        {"origin": origin_of(q), **score_row(t, reference_of(q))} for q, t in zip(queries, texts, strict=True)
    ]
    accuracy, ci = aggregate(rows)
    counts = {"n": len(rows), "short": sum(r["short_answer"] is not None for r in rows)}
    for origin in ORIGINS:
        part = [r for r in rows if r["origin"] == origin]
        acc, part_ci = aggregate(part)
        accuracy.update({f"{k}/{origin}": v for k, v in acc.items()})
        ci.update({f"{k}/{origin}": v for k, v in part_ci.items()})
        counts[origin] = len(part)
    return {"accuracy": accuracy, "ci": ci, "counts": counts, "rows": rows, "per_query": rows}


def question_of(record: dict) -> str:
    return " ".join(
        m.get("content") or "" for m in records.prompt_messages(record) if m.get("role") == "user"
    )


def nearest_answers(queries: list[dict], train: list[dict]) -> list[str]:
    """For each query, the answer of the training question sharing the most words with it
    (weighted by rarity, ties to the earlier training record); the constant answer without training data."""
    if not train:
        return [CONSTANT_ANSWER] * len(queries)
    bags = [set(normalize_text(question_of(r)).split()) for r in train]
    df = Counter(w for b in bags for w in b)
    out = []
    for q in queries:
        words = set(normalize_text(question_of(q)).split())
        best = max(range(len(train)), key=lambda i: (sum(1 / df[w] for w in words & bags[i]), -i))
        out.append(reference_of(train[best]))
    return out


def baselines(queries: list[dict], train: list[dict] | None = None) -> dict[str, list[str]]:
    """``constant`` (always :data:`CONSTANT_ANSWER`) and ``nearest-train`` (:func:`nearest_answers`)."""
    return {
        "constant": [CONSTANT_ANSWER] * len(queries),
        "nearest-train": nearest_answers(queries, train or []),
    }


def answer_nll(model, tokenizer, queries: list[dict], max_seq_length: int = 2048) -> list[tuple[float, int]]:
    """``(negative log-likelihood, tokens)`` of each query's answer tokens, from
    :func:`mlx_tune.eval.evaluate.perplexity` on that query alone (the tokens training trains)."""
    from mlx_tune.eval.evaluate import perplexity
    from mlx_tune.rendering import tokenize_record

    out = []
    for q in queries:
        ex = tokenize_record(tokenizer, q, mask_prompt=True)
        n = sum(max(0, min(e, len(ex.tokens), max_seq_length) - s) for s, e in ex.spans)
        ppl = perplexity(model, tokenizer, [q], max_seq_length=max_seq_length) if n else None
        out.append((math.log(ppl) * n, n) if ppl else (0.0, 0))
    return out


def pooled_perplexity(nll: list[tuple[float, int]]) -> tuple[float | None, list[float] | None]:
    """exp(total NLL / total tokens) and its bootstrap interval over queries."""
    import numpy as np

    losses, counts = (np.array([x[k] for x in nll], dtype=float) for k in (0, 1))
    if counts.sum() == 0:
        return None, None

    def stat(idx):
        tokens = counts[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tokens > 0, np.exp(losses[idx].sum(axis=1) / tokens), np.nan)

    return float(math.exp(losses.sum() / counts.sum())), intervals.bootstrap(stat, len(nll))


def perplexity_by_origin(model, tokenizer, queries: list[dict], max_seq_length: int = 2048) -> dict:
    """Perplexity of the answer tokens with a 95% bootstrap interval, overall (``all``) and per
    origin: ``{"all": (value, ci), "real": ..., "synthetic": ...}``."""
    nll = answer_nll(model, tokenizer, queries, max_seq_length)
    out = {"all": pooled_perplexity(nll)}
    for origin in ORIGINS:
        part = [x for x, q in zip(nll, queries, strict=True) if origin_of(q) == origin]
        out[origin] = pooled_perplexity(part) if part else (None, None)
    return out


def build_demo_data(out_dir: Path, seed: int = 0) -> dict:
    """The demo's offline Q&A set (:mod:`mlx_tune.tasks.chat_demo`), combined into ``out_dir``."""
    from mlx_tune.tasks.chat_demo import build_demo_data as build

    return build(Path(out_dir), seed)
