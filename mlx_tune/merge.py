"""Merge a phase's inputs into ``data/phaseN/{train,valid[,test]}.jsonl`` plus ``manifest.json``.

Steps: read and validate every record of every input (all problems reported at once), drop exact
and normalised duplicates (first occurrence wins), split grouped by source file, shuffle each
split with the seed, write atomically.

The split of a record is a function of its source file and the seed only: ``sha256("seed:repo:path")``
mapped to [0, 1) and compared with the test and valid shares. So phase N+1, a superset of phase
N's inputs with the same split settings, puts every record of phase N in the same split and never
trains on what phase N held out. Records without ``meta.path`` are grouped by ``meta.symbol``,
and failing that each is its own group (by its normalised text).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from mlx_tune import UserError, fileio, records
from mlx_tune.datacheck import Located, count_records, load_checked, problems_error
from mlx_tune.phases import DEFAULT_PHASES_DIR, load_phase, producer_hint

SPLITS = ("train", "valid", "test")


def group_key(record: dict) -> tuple[str, str, str]:
    """The source-file group of a record: ``(repo, "path", path)`` or a fallback (see module doc)."""
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    repo = str(meta.get("repo") or meta.get("source") or "")
    if meta.get("path"):
        return (repo, "path", str(meta["path"]))
    if meta.get("symbol"):
        return (repo, "symbol", str(meta["symbol"]))
    digest = hashlib.sha256(records.normalized_key(record).encode("utf-8")).hexdigest()[:16]
    return (repo, "record", digest)


def unit_hash(seed: int, key: tuple[str, str, str]) -> float:
    """A uniform number in [0, 1) from the seed and a group key (stable across runs and phases)."""
    repo, kind, name = key
    text = f"{seed}:{repo}:{name}" if kind == "path" else f"{seed}:{repo}:{kind}:{name}"
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16) / 2**64


def exact_key(record: dict) -> str:
    """What the model sees (messages and tools), canonically serialised; ``meta`` is ignored."""
    return json.dumps({"messages": record.get("messages"), "tools": record.get("tools")}, sort_keys=True)


def dedupe(items: list[Located]) -> tuple[list[Located], int, int]:
    """Keep the first of each duplicate; return ``(kept, exact_dropped, normalised_dropped)``."""
    seen_exact: set[str] = set()
    seen_norm: set[str] = set()
    kept: list[Located] = []
    exact = norm = 0
    for item in items:
        ek = exact_key(item.record)
        nk = records.normalized_key(item.record)
        if ek in seen_exact:
            exact += 1
        elif nk in seen_norm:
            norm += 1
        else:
            kept.append(item)
        seen_exact.add(ek)
        seen_norm.add(nk)
    return kept, exact, norm


def assign_splits(
    keys: list[tuple[str, str, str]], sizes: dict, valid: float, test: float, seed: int
) -> tuple[dict[tuple, str], list[dict]]:
    """Map each group key to a split; then, if hashing left a needed split empty, move the
    smallest groups of the largest other split into it. Returns the mapping and the moves."""
    where: dict[tuple, str] = {}
    for key in keys:
        u = unit_hash(seed, key)
        where[key] = "test" if u < test else "valid" if u < test + valid else "train"
    needed = ["train"] + (["valid"] if valid > 0 else []) + (["test"] if test > 0 else [])
    moves: list[dict] = []
    if len(keys) < len(needed):
        return where, moves
    for split in needed:
        members = {s: sorted(k for k in keys if where[k] == s) for s in needed}
        if members[split]:
            continue
        donors = [s for s in needed if s != split and len(members[s]) >= 2]
        donor = max(donors, key=lambda s: (len(members[s]), s == "train"))
        key = min(members[donor], key=lambda k: (sizes[k], unit_hash(seed, k), k))
        where[key] = split
        moves.append({"group": list(key), "from": donor, "to": split})
    return where, moves


def merge_files(
    inputs: list[Path | str],
    out: Path | str,
    valid: float = 0.1,
    test: float = 0.0,
    seed: int = 0,
    phase: int | None = None,
) -> dict[str, Any]:
    """Merge ``inputs`` into ``out/`` and return the manifest (also written as manifest.json)."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UserError("no input files to merge")
    missing = [f"{p}: does not exist ({producer_hint(p)})" for p in inputs if not p.is_file()]
    if missing:
        raise problems_error(missing)
    items, problems = load_checked(inputs)
    if problems:
        raise problems_error(problems, " in the inputs (nothing was written)")
    kept, n_exact, n_norm = dedupe(items)

    groups: dict[tuple, list[Located]] = defaultdict(list)
    for item in kept:
        groups[group_key(item.record)].append(item)
    sizes = {k: len(v) for k, v in groups.items()}
    where, moves = assign_splits(sorted(groups), sizes, valid, test, seed)

    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for key in sorted(groups):
        splits[where[key]].extend(item.record for item in groups[key])
    for name, recs in splits.items():
        random.Random(f"{seed}:{name}").shuffle(recs)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [s for s in SPLITS if s != "test" or test > 0]
    files = {}
    for name in written:
        path = out / f"{name}.jsonl"
        fileio.write_jsonl(path, splits[name])
        files[path.name] = {"records": len(splits[name]), "sha256": fileio.sha256_file(path)}
    stale = out / "test.jsonl"
    if "test" not in written and stale.exists():
        stale.unlink()  # an old test split would otherwise be picked up by mlx-lm

    manifest = {
        "phase": phase,
        "seed": seed,
        "split": {"valid": valid, "test": test},
        "inputs": [
            {
                "path": p.as_posix(),
                "sha256": fileio.sha256_file(p),
                "records": sum(1 for i in items if i.path == p),
            }
            for p in inputs
        ],
        "duplicates_dropped": {"exact": n_exact, "normalized": n_norm},
        "records": len(kept),
        "groups": {s: sum(1 for k in groups if where[k] == s) for s in written},
        "moved_groups": moves,
        "counts": {s: count_records(splits[s]) for s in written},
        "files": files,
    }
    fileio.write_json(out / "manifest.json", manifest)
    return manifest


def merge_phase(
    phase: int | str | Path, out: Path | str | None = None, phases_dir: Path | str = DEFAULT_PHASES_DIR
) -> dict[str, Any]:
    """Merge the inputs of a phase config into ``out`` (default ``data/phaseN``)."""
    cfg = load_phase(phase, phases_dir, check_inputs=True)
    out = Path(out) if out is not None else Path("data") / f"phase{cfg.number}"
    return merge_files(
        cfg.inputs,
        out,
        valid=cfg.split["valid"],
        test=cfg.split["test"],
        seed=cfg.split["seed"],
        phase=cfg.number,
    )


def format_manifest(manifest: dict[str, Any], out: Path | str) -> str:
    d = manifest["duplicates_dropped"]
    parts = ", ".join(
        f"{name.removesuffix('.jsonl')} {f['records']}" for name, f in manifest["files"].items()
    )
    lines = [
        f"phase {manifest['phase']}: {manifest['records']} records -> {out}/ ({parts})",
        f"  duplicates dropped: {d['exact']} exact, {d['normalized']} normalised",
    ]
    for m in manifest["moved_groups"]:
        lines.append(
            f"  moved group {m['group'][2]} from {m['from']} to {m['to']} (hashing left {m['to']} empty)"
        )
    return "\n".join(lines)
