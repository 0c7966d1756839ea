"""Check and describe training data: ``mlx-tune data validate`` and ``mlx-tune data stats``.

Validation collects every problem as ``file:line: field: what is wrong`` (schema checks from
:mod:`mlx_tune.records`, paths in ``meta`` that escape the repository, plus token lengths when a
tokenizer is given). Stats count records by category, origin and source, token-length
percentiles, a readiness tier of the size, and the quality measures of
:mod:`mlx_tune.data.data_quality` (multi-turn share, templates, near-duplicates, literal patterns,
names given away in questions, tool/direct balance per split).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_tune import UserError, fileio, records
from mlx_tune.data.data_quality import balance as split_balance
from mlx_tune.data.data_quality import (  # noqa: F401  (re-exported: generators measure with these)
    literal_pattern_share,
    multi_turn_share,
    name_in_question_share,
    near_duplicate_share,
    quality,
)
from mlx_tune.records import templated_messages
from mlx_tune.tools import is_safe_relative_path

MAX_LISTED_PROBLEMS = 200
SYNTHETIC_WARN_SHARE = 0.20
SPLITS = ("train", "valid", "test")

# (upper bound exclusive, label): the readiness of a dataset of that many records.
TIERS = (
    (50, "too small"),
    (100, "infrastructure testing only"),
    (200, "small: infrastructure testing"),
    (500, "minimal viable"),
    (1000, "research prototype"),
    (None, "publication scale"),
)


@dataclass
class Located:
    path: Path
    line: int
    record: dict


# ---------------------------------------------------------------- reading with located problems


def load_checked(paths: list[Path | str]) -> tuple[list[Located], list[str]]:
    """Read JSONL files, validating every record. Returns the valid records and every problem
    (not UTF-8, bad or absurdly nested JSON, non-objects, schema problems) as
    ``file:line: field: what is wrong``; a bad line never stops the reading of the others."""
    good: list[Located] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        n = 0
        try:
            for lineno, record, bad in fileio.iter_json_lines(path):
                n += 1
                if bad:
                    problems.append(f"{path}:{lineno}: record: {bad}")
                    continue
                found = records.validate_record(record) + meta_path_problems(record)
                if found:
                    problems.extend(f"{path}:{lineno}: {p}" for p in found)
                else:
                    good.append(Located(path, lineno, record))
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e}")
            continue
        if n == 0:
            problems.append(f"{path}: empty: no records")
    return good, problems


def meta_path_problems(record) -> list[str]:
    """Problems of ``meta`` paths that :func:`records.validate_record` does not check
    (``meta.defined_in``): each must be relative to the repository root, without ``..``."""
    meta = record.get("meta") if isinstance(record, dict) else None
    if not isinstance(meta, dict) or meta.get("defined_in") is None:
        return []
    value = meta["defined_in"]
    if isinstance(value, str) and is_safe_relative_path(value):
        return []
    return [f"meta.defined_in: {value!r} must be relative to the repository root, without '..'"]


def problems_error(problems: list[str], what: str = "") -> UserError:
    """One ``UserError`` listing every problem (the first ``MAX_LISTED_PROBLEMS`` of them)."""
    if len(problems) == 1:
        return UserError(problems[0])
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    return UserError(f"{len(problems)} problems{what}:\n  " + "\n  ".join(shown) + tail)


# ---------------------------------------------------------------- tokens


def load_tokenizer(model: str | Path):
    """A Hugging Face tokenizer from a local model or tokenizer folder, or from a Hub id
    (``owner/name``) already in the local cache; nothing is downloaded. A spec that exists here, or
    is not of the form ``owner/name`` (it starts with ``.``, ``/`` or ``~``, has no ``/`` or more
    than one, or characters a Hub id cannot have), is a folder."""
    spec = str(model)
    folder = Path(spec).expanduser()
    hub_id = not folder.exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", spec) is not None
    if not hub_id and not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise UserError(
            f"--model: cannot load a tokenizer from {spec}: {what} (pass a local model or tokenizer "
            "folder, or a Hugging Face id owner/name in the local cache)"
        )
    if hub_id and not _in_hub_cache(spec):
        raise UserError(
            f"--model: {spec}: not in the local Hugging Face cache (nothing is downloaded here): "
            f"fetch it first (`huggingface-cli download {spec}`) or pass a local folder"
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec if hub_id else str(folder), local_files_only=True)
    except Exception as e:  # transformers raises many types for a bad folder
        raise UserError(
            f"--model: cannot load a tokenizer from {spec} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "pass a local model or tokenizer folder"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--model: the tokenizer in {spec} has no chat template")
    return tokenizer


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds files of model ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    names = ("tokenizer_config.json", "tokenizer.json", "config.json")
    try:
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)
    except Exception:  # an id the hub library refuses (bad characters): not in the cache either
        return False


def token_length(tokenizer, record: dict) -> int:
    ids = tokenizer.apply_chat_template(templated_messages(record), tools=record.get("tools"), tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


# ---------------------------------------------------------------- validate


def validate_files(
    paths: list[Path | str],
    model: str | Path | None = None,
    max_seq_length: int | None = None,
    task: str | None = None,
) -> int:
    """Validate JSONL files; return the number of records, or raise one ``UserError`` listing
    every problem. With ``model``, records longer than ``max_seq_length`` tokens are problems;
    with ``task``, records of another task (:func:`mlx_tune.tasks.record_task`) are."""
    if not paths:
        raise UserError("give at least one JSONL file to validate")
    if max_seq_length is not None and model is None:
        raise UserError("--max-seq-length needs --model (a tokenizer to count tokens with)")
    good, problems = load_checked(paths)
    if task is not None:
        from mlx_tune.tasks import record_task

        for item in good:
            if (found := record_task(item.record)) != task:
                problems.append(f"{item.path}:{item.line}: a {found} record, but --task is {task}")
    if model is not None:
        tokenizer = load_tokenizer(model)
        for item in _progress(good, "tokens"):
            n = token_length(tokenizer, item.record)
            if max_seq_length is not None and n > max_seq_length:
                problems.append(
                    f"{item.path}:{item.line}: messages: {n} tokens, "
                    f"longer than --max-seq-length {max_seq_length}"
                )
    if problems:
        raise problems_error(problems)
    return len(good)


def _progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, disable=len(items) < 200)


# ---------------------------------------------------------------- stats


def tier(n: int) -> str:
    for bound, label in TIERS:
        if bound is None or n < bound:
            return label
    raise AssertionError("unreachable")


def _files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        found = {s: path / f"{s}.jsonl" for s in SPLITS if (path / f"{s}.jsonl").is_file()}
        if not found:
            raise UserError(
                f"{path}: no train.jsonl, valid.jsonl or test.jsonl (run `mlx-tune data merge` first)"
            )
        return found
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    return {path.stem: path}


def _meta_of(record: dict) -> dict:
    meta = record.get("meta")
    return meta if isinstance(meta, dict) else {}


def count_records(recs: list[dict]) -> dict[str, Any]:
    """Counts by category, origin and source (``meta``; the category read from the answer when
    ``meta`` lacks it)."""
    cat = Counter()
    origin = Counter()
    source = Counter()
    for r in recs:
        meta = _meta_of(r)
        cat[meta.get("category") or records.record_category(r)] += 1
        origin[meta.get("origin") or "unknown"] += 1
        source[meta.get("source") or "unknown"] += 1
    return {
        "records": len(recs),
        "category": dict(sorted(cat.items())),
        "origin": dict(sorted(origin.items())),
        "source": dict(sorted(source.items())),
    }


def split_stats(recs: list[dict]) -> dict[str, Any]:
    """One split's counts, its tool/direct balance and how many records are marked as asked in
    an unseen phrasing (``meta.unseen_template``, test only)."""
    unseen = sum(1 for r in recs if _meta_of(r).get("unseen_template") is True)
    return {**count_records(recs), **split_balance(recs), "unseen_template": unseen}


def percentiles(values: list[int]) -> dict[str, int]:
    """p50/p90/p99/max by the nearest-rank method (0s for no values)."""
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    s = sorted(values)

    def rank(q: float) -> int:
        # round() first so 0.9 * 10 is 9, not 9.000000000000002 (which would ceil to 10)
        return s[max(0, math.ceil(round(q * len(s), 9)) - 1)]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": s[-1]}


def dataset_stats(path: str | Path, model: str | Path | None = None, tokenizer=None) -> dict[str, Any]:
    """Describe a JSONL file or a phase directory (its train/valid/test files).

    Returns a JSON-ready dict: totals and counts by category/origin/source, per split for a
    directory, tool vs direct share, synthetic share with a warning above 20%, the readiness tier,
    and token-length percentiles when ``model`` (a local tokenizer path) or ``tokenizer`` is given.
    """
    path = Path(path)
    files = _files(path)
    by_split: dict[str, list[dict]] = {}
    for name, f in files.items():
        good, problems = load_checked([f])
        if problems:
            raise problems_error(problems, f" in {f} (run `mlx-tune data validate {f}` for details)")
        by_split[name] = [g.record for g in good]
    all_recs = [r for recs in by_split.values() for r in recs]
    stats: dict[str, Any] = {"path": str(path), **count_records(all_recs)}
    if path.is_dir():
        stats["splits"] = {name: split_stats(recs) for name, recs in by_split.items()}
    n = len(all_recs)
    tool = sum(v for k, v in stats["category"].items() if k in records.TOOL_CATEGORIES)
    synthetic = stats["origin"].get("synthetic", 0)
    stats["tool_share"] = round(tool / n, 4) if n else 0.0
    stats["direct_share"] = round(stats["category"].get("direct", 0) / n, 4) if n else 0.0
    stats["synthetic_share"] = round(synthetic / n, 4) if n else 0.0
    stats["warnings"] = []
    if n and synthetic / n > SYNTHETIC_WARN_SHARE:
        stats["warnings"].append(
            f"{synthetic / n:.0%} of records are synthetic (above {SYNTHETIC_WARN_SHARE:.0%}); "
            "add real, grounded examples"
        )
    stats["tier"] = tier(n)
    stats["quality"] = quality(all_recs)
    if model is not None and tokenizer is None:
        tokenizer = load_tokenizer(model)
    if tokenizer is not None:
        stats["tokens"] = percentiles([token_length(tokenizer, r) for r in _progress(all_recs, "tokens")])
    return stats


def folded_sources(counts: dict[str, int], most: int = 4) -> dict[str, int]:
    """Source counts for the terminal: a kind with more than ``most`` sources (``stdlib:json``,
    ``stdlib:re``, ...) becomes one entry (``stdlib:* (40)``)."""
    kinds = Counter(k.split(":", 1)[0] for k in counts if ":" in k)
    out: dict[str, int] = {}
    for k, v in counts.items():
        kind = k.split(":", 1)[0]
        if ":" in k and kinds[kind] > most:
            k = f"{kind}:* ({kinds[kind]})"
        out[k] = out.get(k, 0) + v
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """The stats as a short human-readable report."""
    n = stats["records"]
    lines = [f"{stats['path']}: {n} records, tier: {stats['tier']}"]

    def share(k: int) -> str:
        return f"{k} ({k / n:.0%})" if n else str(k)

    for key in ("category", "origin", "source"):
        counts = folded_sources(stats[key]) if key == "source" else stats[key]
        lines.append(f"  {key + ':':10}" + ", ".join(f"{k} {share(v)}" for k, v in counts.items()))
    lines.append(f"  tool calls {stats['tool_share']:.0%}, direct answers {stats['direct_share']:.0%}")
    for name, s in stats.get("splits", {}).items():
        cats = ", ".join(f"{k} {v}" for k, v in s["category"].items())
        unseen = f", {s['unseen_template']} in unseen phrasings" if s.get("unseen_template") else ""
        lines.append(
            f"  {name + ':':7}{s['records']} records ({cats}; tool {s['tool_share']:.0%}, "
            f"direct {s['direct_share']:.0%}{unseen})"
        )
    q = stats.get("quality")
    if q:
        lines.append(
            f"  quality: {q['multi_turn_share']:.0%} multi-turn ({q['tool_trajectory_share']:.0%} of tool "
            f"records), {q['templates']} question templates, {q['near_duplicate_share']:.0%} "
            "near-duplicates (names and paths masked)"
        )
        lines.append(
            f"  grep: {q['literal_pattern_share']:.0%} of {q['grep_calls']} patterns are a literal "
            f"class/def name; {q['name_in_question_share']:.0%} of grep/read questions contain the name"
        )
        for key in ("shape", "style"):
            lines.append(f"  {key + ':':10}" + ", ".join(f"{k} {v}" for k, v in q[key].items()))
    if "tokens" in stats:
        t = stats["tokens"]
        lines.append(f"  tokens: p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}")
    lines.extend(f"  warning: {w}" for w in stats["warnings"])
    return "\n".join(lines)
