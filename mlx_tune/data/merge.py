"""Merge a phase's inputs into ``data/phaseN/{train,valid[,test]}.jsonl`` plus ``manifest.json``.

Steps: read and validate every record of every input (all problems reported at once), drop exact
and normalised duplicates (first occurrence wins), split by the file that defines each record's
symbol, hold some question templates out for test only, shuffle each split with the seed, write
atomically.

**Split.** A repository record's group is the file that *defines* its symbol
(``(repo, meta.defined_in or meta.path)``), so a usage or import record goes with the
definition, not with the file that uses it. Records without a file are grouped by ``meta.symbol``,
and failing that each is its own group (by its normalised text). Groups that share a
``(repo, symbol)`` (one name defined in several files, a negative case about a name) are joined
into one component (union-find). Each group hashes to a split (``sha256("seed:repo:file")``
mapped to [0, 1), compared with the test and valid shares); a component goes to the most
held-out split any of its groups hashes to (test > valid > train). A record that also cites
another file (``meta.path``, e.g. the file that uses the symbol) is kept only when that file's
own split (its group's, or its hash's when it defines nothing) is the record's split, and is
dropped otherwise (``cross_split_dropped``). So no symbol and no file of valid or test appears
in train, and the split is a function of the seed and the files and symbols only: phase N+1, a
superset of phase N's inputs with the same split settings, can only join components (moving a
record to a more held-out split) or drop a record, never move one that phase N held out into
train. (Joining through the using files too would chain most files of a repository into a few
components that then all land in test.)

**Unseen phrasing.** A share of question templates (``meta.template``; ``sha256("seed:template:id")``
below ``unseen_templates``) is test-only: their records are dropped from train and valid
(``unseen_template_dropped`` in the manifest) and marked ``meta.unseen_template: true`` in test,
so the benchmark can report that subset apart. Without a test split no template is held out.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from mlx_tune import UserError, fileio, layout, records
from mlx_tune.data.datacheck import Located, count_records, load_checked, problems_error
from mlx_tune.phases import DEFAULT_PHASES_DIR, DEFAULT_UNSEEN_TEMPLATES, load_phase, producer_hint

SPLITS = ("train", "valid", "test")
HELD_OUT = {"train": 0, "valid": 1, "test": 2}  # a component goes to its most held-out split

Key = tuple[str, str, str]


def _meta(record: dict) -> dict:
    meta = record.get("meta")
    return meta if isinstance(meta, dict) else {}


def _repo(meta: dict) -> str:
    return str(meta.get("repo") or meta.get("source") or "")


def group_key(record: dict) -> Key:
    """The defining-file group of a record: ``(repo, "path", defined_in or path)`` or a fallback
    (see module doc)."""
    meta = _meta(record)
    repo = _repo(meta)
    where = meta.get("defined_in") or meta.get("path")
    if where:
        return (repo, "path", str(where))
    if meta.get("symbol"):
        return (repo, "symbol", str(meta["symbol"]))
    digest = hashlib.sha256(records.normalized_key(record).encode("utf-8")).hexdigest()[:16]
    return (repo, "record", digest)


def link_keys(record: dict) -> list[Key]:
    """The ``(repo, symbol)`` and ``(repo, file)`` names a record touches (``meta.symbol``,
    ``meta.path``, ``meta.defined_in``): none of them may be in train and held out at once."""
    meta = _meta(record)
    repo = _repo(meta)
    out = [(repo, "symbol", str(meta["symbol"]))] if meta.get("symbol") else []
    out += [(repo, "path", str(meta[k])) for k in ("path", "defined_in") if meta.get(k)]
    return out


def cited_file(record: dict) -> Key | None:
    """The file a record cites besides its group's (``meta.path`` when ``meta.defined_in``
    differs), or ``None``."""
    meta = _meta(record)
    key = ("path", str(meta.get("path")))
    if meta.get("path") and group_key(record)[1:] != key:
        return (_repo(meta), *key)
    return None


def components(records_: list[dict]) -> dict[Key, Key]:
    """Map each group key to its component's representative (the smallest key in it): groups
    joined, by union-find, through every ``(repo, symbol)`` their records share."""
    parent: dict[Key, Key] = {}

    def find(k: Key) -> Key:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    groups = set()
    for r in records_:
        g = group_key(r)
        groups.add(g)
        meta = _meta(r)
        if meta.get("symbol"):
            a, b = find(g), find((_repo(meta), "symbol", str(meta["symbol"])))
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[Key, list[Key]] = defaultdict(list)
    for g in groups:
        members[find(g)].append(g)
    return {g: min(ms) for ms in members.values() for g in ms}


def unit_hash(seed: int, key: Key) -> float:
    """A uniform number in [0, 1) from the seed and a group key (stable across runs and phases)."""
    repo, kind, name = key
    text = f"{seed}:{repo}:{name}" if kind == "path" else f"{seed}:{repo}:{kind}:{name}"
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16) / 2**64


def hashed_split(seed: int, key: Key, valid: float, test: float) -> str:
    u = unit_hash(seed, key)
    return "test" if u < test else "valid" if u < test + valid else "train"


def unseen_template(seed: int, template: str, share: float) -> bool:
    """Whether question template ``template`` is held out for test only (a hash below ``share``)."""
    digest = hashlib.sha256(f"{seed}:template:{template}".encode()).hexdigest()[:16]
    return int(digest, 16) / 2**64 < share


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
    keys: list[Key],
    sizes: dict,
    valid: float,
    test: float,
    seed: int,
    component: dict[Key, Key] | None = None,
) -> tuple[dict[Key, str], list[dict]]:
    """Map each group key to a split: its component's most held-out hashed split (``component``
    maps a key to its representative; by default every key is its own component). Then, if
    hashing left a needed split empty, move the smallest components of the largest other split
    into it. Returns the mapping and the moves."""
    component = component or {k: k for k in keys}
    comps: dict[Key, list[Key]] = defaultdict(list)
    for k in sorted(keys):
        comps[component[k]].append(k)
    comp_split = {
        rep: max((hashed_split(seed, k, valid, test) for k in ks), key=HELD_OUT.__getitem__)
        for rep, ks in comps.items()
    }
    needed = ["train"] + (["valid"] if valid > 0 else []) + (["test"] if test > 0 else [])
    moves: list[dict] = []
    if len(comps) >= len(needed):
        for split in needed:
            members = {s: sorted(c for c in comps if comp_split[c] == s) for s in needed}
            if members[split]:
                continue
            donors = [s for s in needed if s != split and len(members[s]) >= 2]
            donor = max(donors, key=lambda s: (len(members[s]), s == "train"))
            size = {c: sum(sizes[k] for k in comps[c]) for c in members[donor]}
            rep = min(members[donor], key=lambda c: (size[c], unit_hash(seed, c), c))
            comp_split[rep] = split
            moves.append({"group": list(rep), "groups": len(comps[rep]), "from": donor, "to": split})
    return {k: comp_split[component[k]] for k in keys}, moves


def place(
    groups: dict[Key, list[Located]], where: dict[Key, str], valid: float, test: float, seed: int
) -> tuple[dict[str, list[dict]], int]:
    """Put each group's records in its split, dropping a record whose cited file
    (:func:`cited_file`) belongs to another split. Returns the splits and the number dropped."""
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    dropped = 0
    for key in sorted(groups):
        for item in groups[key]:
            cited = cited_file(item.record)
            if cited is not None:
                home = where[cited] if cited in where else hashed_split(seed, cited, valid, test)
                if home != where[key]:
                    dropped += 1
                    continue
            splits[where[key]].append(item.record)
    return splits, dropped


def held_out_warnings(splits: dict[str, list[dict]], share: float) -> list[str]:
    """A warning when valid and test hold far more than their configured share: large joined
    components (usually records without ``meta.defined_in`` that name a symbol used in many files)."""
    n = sum(map(len, splits.values()))
    held = len(splits["valid"]) + len(splits["test"])
    if n < 50 or held / n <= 2 * share + 0.05:
        return []
    return [
        f"valid and test hold {held / n:.0%} of the records (configured {share:.0%}): records that share "
        "a symbol join their files into large components; give usage and import records meta.defined_in"
    ]


def leaks(splits: dict[str, list[dict]]) -> dict[str, int]:
    """How many ``(repo, symbol)`` and ``(repo, file)`` of valid or test also appear in train."""

    def names(recs: list[dict], kind: str) -> set[Key]:
        return {k for r in recs for k in link_keys(r) if k[1] == kind}

    held = splits.get("valid", []) + splits.get("test", [])
    return {
        "symbols": len(names(splits["train"], "symbol") & names(held, "symbol")),
        "files": len(names(splits["train"], "path") & names(held, "path")),
    }


def hold_out_templates(splits: dict[str, list[dict]], seed: int, share: float) -> tuple[list[str], int]:
    """Drop records of unseen templates from train and valid, mark them in test (in place).
    Returns the unseen template ids found and how many records were dropped."""
    unseen: set[str] = set()
    dropped = 0
    for name in SPLITS:
        kept = []
        for r in splits[name]:
            template = _meta(r).get("template")
            if template and unseen_template(seed, str(template), share):
                unseen.add(str(template))
                if name != "test":
                    dropped += 1
                    continue
                r["meta"]["unseen_template"] = True
            kept.append(r)
        splits[name] = kept
    return sorted(unseen), dropped


def merge_files(
    inputs: list[Path | str],
    out: Path | str,
    valid: float = 0.1,
    test: float = 0.0,
    seed: int = 0,
    phase: int | None = None,
    unseen_templates: float = DEFAULT_UNSEEN_TEMPLATES,
) -> dict[str, Any]:
    """Merge ``inputs`` into ``out/`` and return the manifest (also written as manifest.json)."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UserError("no input files to merge")
    if not 0 <= unseen_templates < 1:
        raise UserError(f"unseen_templates: expected a share in [0, 1), got {unseen_templates!r}")
    missing = [f"{p}: does not exist ({producer_hint(p)})" for p in inputs if not p.is_file()]
    if missing:
        raise problems_error(missing)
    items, problems = load_checked(inputs)
    if problems:
        raise problems_error(problems, " in the inputs (nothing was written)")
    kept, n_exact, n_norm = dedupe(items)

    groups: dict[Key, list[Located]] = defaultdict(list)
    for item in kept:
        groups[group_key(item.record)].append(item)
    sizes = {k: len(v) for k, v in groups.items()}
    component = components([item.record for item in kept])
    where, moves = assign_splits(sorted(groups), sizes, valid, test, seed, component)

    splits, n_cross = place(groups, where, valid, test, seed)
    share = unseen_templates if test > 0 else 0.0  # without a test split there is nowhere to keep them
    unseen, n_unseen_dropped = hold_out_templates(splits, seed, share)
    for name, recs in splits.items():
        random.Random(f"{seed}:{name}").shuffle(recs)

    written = [s for s in SPLITS if s != "test" or test > 0]
    reps = {s: {component[k] for k in groups if where[k] == s} for s in written}
    manifest = {
        "phase": phase,
        "seed": seed,
        "split": {"valid": valid, "test": test, "unseen_templates": share},
        "inputs": [
            {
                "path": p.as_posix(),
                "sha256": fileio.sha256_file(p),
                "records": sum(1 for i in items if i.path == p),
            }
            for p in inputs
        ],
        "duplicates_dropped": {"exact": n_exact, "normalized": n_norm},
        "unique_records": len(kept),
        "records": sum(len(splits[s]) for s in written),
        "groups": {s: sum(1 for k in groups if where[k] == s) for s in written},
        "components": {s: len(reps[s]) for s in written},
        "moved_groups": moves,
        "cross_split_dropped": n_cross,
        "unseen_templates": unseen,
        "unseen_template_dropped": n_unseen_dropped,
        "unseen_template_test_records": sum(1 for r in splits["test"] if _meta(r).get("unseen_template")),
        "leaks": leaks(splits),
        "warnings": held_out_warnings(splits, valid + test),
        "counts": {s: count_records(splits[s]) for s in written},
    }
    # The folder is replaced whole: a failure (a full disk) leaves the old splits and manifest as
    # they were; an old test split not written again is dropped (mlx-lm would pick it up).
    owned = [*(f"{s}.jsonl" for s in SPLITS), "manifest.json"]
    with fileio.atomic_folder(out, owned) as stage:
        files = manifest["files"] = {}
        for name in written:
            path = stage / f"{name}.jsonl"
            fileio.write_jsonl(path, splits[name])
            files[path.name] = {"records": len(splits[name]), "sha256": fileio.sha256_file(path)}
        fileio.write_json(stage / "manifest.json", manifest)
    return manifest


def merge_phase(
    phase: int | str | Path, out: Path | str | None = None, phases_dir: Path | str | None = DEFAULT_PHASES_DIR
) -> dict[str, Any]:
    """Merge the inputs of a phase config into ``out`` (default ``data/phaseN``)."""
    cfg = load_phase(phase, phases_dir)
    if cfg.task != "tools":
        raise UserError(
            f"{cfg.path}: task: {cfg.task}: `data merge` builds tools data; build this phase's data with the "
            f"{cfg.task} task's command (chat: `mlx-tune data combine ... -o {layout.phase_data_dir(cfg.number)}`)"
        )
    cfg = load_phase(phase, phases_dir, check_inputs=True)
    out = Path(out) if out is not None else layout.phase_data_dir(cfg.number)
    return merge_files(
        cfg.inputs,
        out,
        valid=cfg.split["valid"],
        test=cfg.split["test"],
        seed=cfg.split["seed"],
        phase=cfg.number,
        unseen_templates=cfg.split.get("unseen_templates", DEFAULT_UNSEEN_TEMPLATES),
    )


def format_manifest(manifest: dict[str, Any], out: Path | str) -> str:
    """The manifest as a few lines for the terminal."""
    d = manifest["duplicates_dropped"]
    parts = ", ".join(
        f"{name.removesuffix('.jsonl')} {f['records']}" for name, f in manifest["files"].items()
    )
    lines = [
        f"phase {manifest['phase']}: {manifest['records']} records -> {out}/ ({parts})",
        f"  duplicates dropped: {d['exact']} exact, {d['normalized']} normalised",
    ]
    groups = ", ".join(
        f"{s} {n} in {manifest['components'][s]} components" for s, n in manifest["groups"].items()
    )
    lines.append(f"  groups (defining files; joined by shared names): {groups}")
    for m in manifest["moved_groups"]:
        lines.append(
            f"  moved group {m['group'][2]} (with {m['groups'] - 1} joined) from {m['from']} to {m['to']} "
            f"(hashing left {m['to']} empty)"
        )
    if manifest["cross_split_dropped"]:
        lines.append(
            f"  dropped {manifest['cross_split_dropped']} records citing a file of another split "
            "than their symbol's defining file"
        )
    if manifest["split"]["unseen_templates"]:
        lines.append(
            f"  unseen phrasing: {len(manifest['unseen_templates'])} question templates test-only "
            f"({manifest['unseen_template_test_records']} test records, "
            f"{manifest['unseen_template_dropped']} train/valid records dropped)"
        )
    lk = manifest["leaks"]
    lines.append(f"  leaks into train: {lk['symbols']} symbols, {lk['files']} files of valid/test")
    lines.extend(f"  warning: {w}" for w in manifest["warnings"])
    return "\n".join(lines)
