"""``mlx-tune data combine``: chat JSONL files in the common shapes -> one deduplicated,
leakage-safe train/valid/test split for the ``chat`` task.

Shapes read (one per file; a file that mixes them is an error naming the first line that differs):

- ``messages``: OpenAI / ChatML, ``{"messages": [{"role": "user", "content": ...}, ...]}``;
- ``conversations``: ShareGPT, ``{"conversations": [{"from": "human", "value": ...}, ...]}``
  (``human``/``user``, ``gpt``/``assistant``/``chatgpt``/``bot``/``model``, ``system``);
- ``prompt``/``completion``: ``{"prompt": ..., "completion": ..., "system": optional}``.

Every record becomes ``{"messages": [...], "meta": {...}}`` with ``meta.origin`` ``real`` or
``synthetic``: from the file's flag (``--real FILE`` / ``--synthetic FILE``), which applies to the
whole file, else from the record's own ``origin`` or ``meta.origin``. Duplicates are dropped by the
question (the user turns, lower-cased, punctuation and extra spaces removed): exact ones, and near
ones whose similarity is at least ``near`` (0.8): the Jaccard similarity of the questions' words
and word pairs, each weighted by its rarity in the collection (:class:`Similarity`). Real records are kept
before synthetic ones, then in the order given. Questions still similar at ``group`` (0.5) are
joined with union-find and each group goes to one split by a seeded hash, so a question and its
paraphrase never straddle train and test. A bad input is a ``UserError`` naming ``file:line`` and
the field; nothing is written then (the folder is replaced as a whole, :func:`mlx_tune.fileio.atomic_folder`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mlx_tune import UserError, fileio, records

NEAR_DUPLICATE = 0.8  # Jaccard of question shingles at or above which a record is a near duplicate
GROUP_SIMILARITY = 0.5  # at or above which two questions stay in one split
SPLITS = ("train", "valid", "test")
GENERATOR = "data combine"
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}
SHAPES = {"messages": "OpenAI/ChatML `messages`", "conversations": "ShareGPT `conversations`",
          "prompt": "`prompt`/`completion`"}  # fmt: skip


@dataclass
class Item:
    """One normalized record and where it came from."""

    path: Path
    line: int
    record: dict
    question: str  # normalized question text (dedup and grouping key)


def shape_of(obj: dict) -> str | None:
    for key in SHAPES:
        if key in obj:
            return key
    return None


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = (
            "missing" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
        )
        raise UserError(f"{where}: expected non-empty text, got {got}")
    return value


def to_messages(obj: dict, shape: str, at: str) -> list[dict]:
    """The record's conversation as ``messages``; ``at`` is ``file:line`` for the errors."""
    if shape == "prompt":
        out = (
            [{"role": "system", "content": _text(obj["system"], f"{at}: system")}]
            if obj.get("system")
            else []
        )
        out.append({"role": "user", "content": _text(obj.get("prompt"), f"{at}: prompt")})
        if "completion" not in obj:
            raise UserError(f"{at}: completion: missing (the assistant's answer)")
        out.append({"role": "assistant", "content": _text(obj.get("completion"), f"{at}: completion")})
        return out
    turns = obj[shape]
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{at}: {shape}: expected a non-empty list of turns")
    out = []
    for i, turn in enumerate(turns):
        where = f"{at}: {shape}[{i}]"
        if not isinstance(turn, dict):
            raise UserError(f"{where}: expected an object, got {type(turn).__name__}")
        if shape == "messages":
            role, content = turn.get("role"), turn.get("content")
            if role not in ("system", "user", "assistant"):
                raise UserError(f"{where}.role: {role!r} is not system, user or assistant")
            out.append({"role": role, "content": _text(content, f"{where}.content")})
        else:
            speaker = turn.get("from")
            role = SHAREGPT_ROLES.get(str(speaker).lower()) if isinstance(speaker, str) else None
            if role is None:
                raise UserError(f"{where}.from: {speaker!r} is not human, gpt or system")
            out.append({"role": role, "content": _text(turn.get("value"), f"{where}.value")})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{at}: {shape}: no assistant turn (nothing to learn from)")
    if not any(m["role"] == "user" for m in out):
        raise UserError(f"{at}: {shape}: no user turn")
    if out[-1]["role"] != "assistant":
        raise UserError(
            f"{at}: {shape}[{len(out) - 1}]: the conversation must end with the assistant's answer"
        )
    return out


def _record_origin(obj: dict, at: str) -> str | None:
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    origin = obj.get("origin", meta.get("origin"))
    if origin is not None and origin not in records.ORIGINS:
        field = "origin" if "origin" in obj else "meta.origin"
        raise UserError(f"{at}: {field}: {origin!r} is not real or synthetic")
    return origin


def normalize_text(text: str) -> str:
    """Lower-case words only: punctuation, markup and extra spaces removed (the dedup key)."""
    return " ".join(re.findall(r"\w+", text.lower()))


def question_key(messages: list[dict]) -> str:
    return normalize_text(" ".join(m["content"] for m in messages if m["role"] == "user"))


def read_file(path: Path, origin: str | None) -> tuple[list[Item], str]:
    """The records of one input file and its shape; ``origin`` (the file's flag) overrides the records'."""
    items: list[Item] = []
    shape = first_line = None
    for lineno, obj in fileio.iter_jsonl(path):
        at = f"{path}:{lineno}"
        this = shape_of(obj)
        if this is None:
            keys = ", ".join(sorted(obj)[:6]) or "none"
            raise UserError(
                f"{at}: unknown shape: expected `messages`, `conversations` or `prompt`/`completion` (keys: {keys})"
            )
        if shape is None:
            shape, first_line = this, lineno
        elif this != shape:
            raise UserError(
                f"{at}: mixed shapes: this record is {SHAPES[this]} but line {first_line} is {SHAPES[shape]} "
                "(one shape per file)"
            )
        messages = to_messages(obj, this, at)
        record_origin = _record_origin(obj, at)  # checked even when the file's flag overrides it
        record_origin = origin or record_origin
        if record_origin is None:
            raise UserError(
                f"{at}: origin: not given (pass the file with --real or --synthetic, or give the record "
                "an `origin`)"
            )
        meta = dict(obj["meta"]) if isinstance(obj.get("meta"), dict) else {}
        meta.update(
            category="direct",
            task="chat",
            origin=record_origin,
            source=f"file:{path.name}",
            generator=GENERATOR,
            template=f"chat.{this}",
            style="direct",
            shape="direct",
        )
        record = {"messages": messages, "meta": meta}
        problems = records.validate_record(record)
        if problems:
            raise UserError(f"{at}: {problems[0]}")
        items.append(Item(path, lineno, record, question_key(messages)))
    if not items:
        raise UserError(f"{path}: empty file (no records)")
    return items, shape


def shingles(text: str) -> frozenset[str]:
    """The words and word bigrams of a normalized question."""
    words = text.split()
    return frozenset(words) | frozenset(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))


class Similarity:
    """Weighted Jaccard similarity of questions' shingles, each shingle weighted by its rarity in
    the collection (``log(1 + N / df)``). Shingles every templated question shares ("a class or a
    function") weigh little, the words a question is about weigh much: two instances of one
    template about different names are not near duplicates; a question and its rewording are."""

    def __init__(self, questions: list[str]):
        self.sets = [shingles(q) for q in questions]
        df = Counter(sh for s in self.sets for sh in s)
        n = len(self.sets)
        self.weight = {sh: math.log(1 + n / k) for sh, k in df.items()}
        # Candidates share a shingle that is not in most questions (those weigh too little to matter).
        self.common = {sh for sh, k in df.items() if k > max(100, n // 5)}

    def __call__(self, i: int, j: int) -> float:
        a, b = self.sets[i], self.sets[j]
        union = sum(self.weight[sh] for sh in a | b)
        return sum(self.weight[sh] for sh in a & b) / union if union else 1.0

    def pairs(self, threshold: float) -> list[tuple[int, int]]:
        """Index pairs ``(i, j)``, ``i < j``, in order of ``j``, with similarity >= ``threshold``."""
        index: dict[str, list[int]] = {}
        out = []
        for j in range(len(self.sets)):
            s = self.sets[j] - self.common
            candidates = sorted({i for sh in s for i in index.get(sh, ())})
            out += [(i, j) for i in candidates if self(i, j) >= threshold]
            for sh in s:
                index.setdefault(sh, []).append(j)
        return out


def dedupe(items: list[Item], near: float) -> tuple[list[Item], int, int]:
    """Drop exact then near duplicate questions, real before synthetic; return (kept, exact, near)."""
    ordered = sorted(items, key=lambda it: it.record["meta"]["origin"] != "real")  # stable
    kept, seen, n_exact = [], set(), 0
    for it in ordered:
        if it.question in seen:
            n_exact += 1
            continue
        seen.add(it.question)
        kept.append(it)
    dropped: set[int] = set()
    for i, j in Similarity([it.question for it in kept]).pairs(near):
        if i not in dropped:  # pairs come in order of j: every i < j is decided
            dropped.add(j)
    return [it for k, it in enumerate(kept) if k not in dropped], n_exact, len(dropped)


def _unit(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:chat:{key}".encode()).hexdigest()[:16], 16) / 2**64


def split_items(
    items: list[Item], seed: int, valid: float, test: float, group: float
) -> dict[str, list[Item]]:
    """Group similar questions (union-find), hash each group to a split, fill an empty held-out
    split from train's groups, and order each split by a seeded hash (a stable shuffle)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in Similarity([it.question for it in items]).pairs(group):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(len(items)):
        members.setdefault(find(i), []).append(i)
    key = {root: min(items[i].question for i in idx) for root, idx in members.items()}
    where = {}
    for root in members:
        u = _unit(seed, key[root])
        where[root] = "test" if u < test else "valid" if u < test + valid else "train"
    for name, share in (("valid", valid), ("test", test)):
        train_groups = sorted((r for r in members if where[r] == "train"), key=lambda r: _unit(seed, key[r]))
        if share > 0 and name not in where.values() and len(train_groups) > 1:
            where[train_groups[0]] = name
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for root, idx in members.items():
        out[where[root]] += [items[i] for i in idx]
    for name in SPLITS:
        out[name].sort(key=lambda it: (_unit(seed, records.normalized_key(it.record)), it.question))
    return out


def combine(
    inputs: list[tuple[Path, str | None]],
    out_dir: Path,
    *,
    seed: int = 0,
    valid: float = 0.1,
    test: float = 0.1,
    near: float = NEAR_DUPLICATE,
    group: float = GROUP_SIMILARITY,
) -> dict:
    """Read ``inputs`` (path, origin flag or None), dedupe, split and write ``out_dir``
    (train/valid/test.jsonl, manifest.json); return the manifest."""
    from mlx_tune.data.datacheck import SYNTHETIC_WARN_SHARE, tier

    if not inputs:
        raise UserError("data combine: no input files (pass FILE..., --real FILE or --synthetic FILE)")
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise UserError(f"--valid {valid}, --test {test}: shares in [0, 1) that leave some for train")
    if not (0 < group <= near <= 1):
        raise UserError(f"--near {near}, --group {group}: expected 0 < group <= near <= 1")
    items, files = [], []
    for path, origin in inputs:
        got, shape = read_file(Path(path), origin)
        items += got
        files.append({"path": str(path), "sha256": fileio.sha256_file(path), "shape": shape,
                      "origin": origin or "from records", "records": len(got)})  # fmt: skip
    kept, n_exact, n_near = dedupe(items, near)
    splits = split_items(kept, seed, valid, test, group)
    n = len(kept)
    synthetic = sum(it.record["meta"]["origin"] == "synthetic" for it in kept)
    warnings = []
    if n and synthetic / n > SYNTHETIC_WARN_SHARE:
        warnings.append(
            f"{synthetic / n:.0%} of records are synthetic (above {SYNTHETIC_WARN_SHARE:.0%}); add real examples"
        )
    manifest = {
        "task": "chat",
        "inputs": files,
        "settings": {"seed": seed, "valid": valid, "test": test, "near": near, "group": group},
        "read": len(items),
        "dropped": {"exact_duplicates": n_exact, "near_duplicates": n_near},
        "records": n,
        "origin": dict(sorted(Counter(it.record["meta"]["origin"] for it in kept).items())),
        "synthetic_share": round(synthetic / n, 4) if n else 0.0,
        "tier": tier(n),
        "warnings": warnings,
        "files": {},
    }
    with fileio.atomic_folder(out_dir, owned=(*(f"{s}.jsonl" for s in SPLITS), "manifest.json")) as stage:
        for name in SPLITS:
            fileio.write_jsonl(stage / f"{name}.jsonl", [it.record for it in splits[name]])
            origins = Counter(it.record["meta"]["origin"] for it in splits[name])
            manifest["files"][f"{name}.jsonl"] = {
                "records": len(splits[name]),
                "origin": dict(sorted(origins.items())),
                "sha256": fileio.sha256_file(stage / f"{name}.jsonl"),
            }
        fileio.write_json(stage / "manifest.json", manifest)
    return manifest


def format_manifest(m: dict, out_dir: Path) -> str:
    files = ", ".join(f"{k.removesuffix('.jsonl')} {v['records']}" for k, v in m["files"].items())
    lines = [
        f"{out_dir}: {m['records']} records of {m['read']} read ({files}); tier: {m['tier']}",
        f"  dropped: {m['dropped']['exact_duplicates']} exact, {m['dropped']['near_duplicates']} near "
        f"duplicates (question similarity >= {m['settings']['near']})",
        "  origin: "
        + ", ".join(f"{k} {v}" for k, v in m["origin"].items())
        + f" ({m['synthetic_share']:.0%} synthetic)",
    ]
    return "\n".join(lines + [f"  warning: {w}" for w in m["warnings"]])


@click.command("combine")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--real", "real", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A file whose records are all real (human-written) examples (repeatable).")  # fmt: skip
@click.option("--synthetic", "synthetic", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A file whose records are all synthetic (generated) examples (repeatable).")  # fmt: skip
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: train.jsonl, valid.jsonl, test.jsonl, manifest.json.")  # fmt: skip
@click.option(
    "--valid", default=0.1, show_default=True, type=float, help="Share of question groups for valid."
)
@click.option("--test", default=0.1, show_default=True, type=float, help="Share of question groups for test.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and the shuffle.")
@click.option("--near", default=NEAR_DUPLICATE, show_default=True, type=float,
              help="Question similarity (Jaccard of words and word pairs, weighted by rarity) at which a record "
                   "is a near duplicate and dropped.")  # fmt: skip
@click.option("--group", default=GROUP_SIMILARITY, show_default=True, type=float,
              help="Question similarity at which two records are kept in the same split.")  # fmt: skip
def combine_command(files, real, synthetic, out_dir, valid, test, seed, near, group) -> None:
    """Combine chat JSONL files (OpenAI/ChatML `messages`, ShareGPT `conversations`, or
    `prompt`/`completion`) into a deduplicated, leakage-safe train/valid/test split for the chat task.

    FILE... take each record's origin from its own `origin` or `meta.origin` field; --real FILE and
    --synthetic FILE tag a whole file. Example:

    \b
      mlx-tune data combine --real curated.jsonl --synthetic generated.jsonl -o data/chat
    """
    inputs = [(p, None) for p in files] + [(p, "real") for p in real] + [(p, "synthetic") for p in synthetic]
    manifest = combine(inputs, out_dir, seed=seed, valid=valid, test=test, near=near, group=group)
    click.echo(format_manifest(manifest, out_dir))
