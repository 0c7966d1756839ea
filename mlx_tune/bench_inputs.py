"""The benchmark's inputs: the held-out query file and the models to measure (defaults from the
project layout: the phase configs' base model, ``adapters/phaseN``, ``models/*-fused-*``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mlx_tune import UserError, fileio, records


def default_queries(root: str | os.PathLike = ".") -> Path:
    """``data/phase7/test.jsonl``, else the highest ``data/phaseN/test.jsonl``."""
    root = Path(root)
    preferred = root / "data/phase7/test.jsonl"
    if preferred.is_file():
        return preferred
    found = sorted(
        (int(m.group(1)), p)
        for p in root.glob("data/phase*/test.jsonl")
        if (m := re.fullmatch(r"phase(\d+)", p.parent.name))
    )
    if not found:
        raise UserError(
            "no held-out queries: data/phaseN/test.jsonl not found (run `mlx-tune data merge`) "
            "or pass --queries FILE"
        )
    return found[-1][1]


def load_queries(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Read and check a held-out query file (records); a bad line is a ``UserError`` naming it."""
    path = Path(path)
    out = []
    for lineno, record in read_jsonl_lines(path):
        problems = records.validate_record(record)
        if problems:
            raise UserError(f"{path}:{lineno}: {problems[0]}")
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{path}: no queries (the file is empty)")
    return out


def phase_base_model(root: Path) -> str | None:
    """``train.model`` of the highest-numbered phase config that names one."""
    import yaml

    best = None
    for p in sorted(root.glob("data/phases/phase*.yaml")):
        m = re.fullmatch(r"phase(\d+)\.yaml", p.name)
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        model = (cfg.get("train") or {}).get("model") if isinstance(cfg, dict) else None
        if m and isinstance(model, str) and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), model)
    return best[1] if best else None


def default_models(root: str | os.PathLike = ".") -> dict[str, str]:
    """What exists: the base named in the phase configs, each ``adapters/phaseN`` adapter (on the
    base its ``adapter_config.json`` names), each fused ``models/*-fused-*`` folder."""
    root = Path(root)
    base = phase_base_model(root)
    models: dict[str, str] = {}
    if base:
        models["base"] = base
    for d in sorted(root.glob("adapters/phase*"), key=lambda p: (len(p.name), p.name)):
        if (d / "adapters.safetensors").is_file():
            on = adapter_base_model(d) or base
            if on:
                models[d.name] = f"{on}@{_rel(d, root)}"
    for d in sorted(root.glob("models/*-fused-*")):
        if (d / "config.json").is_file():
            models[d.name] = _rel(d, root)
    return models


def adapter_base_model(adapter_dir: Path) -> str | None:
    """The ``model`` an adapter was trained on, from its ``adapter_config.json`` (or ``None``)."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    model = cfg.get("model")
    return model if isinstance(model, str) else None


def _rel(p: Path, root: Path) -> str:
    return str(p) if root == Path(".") else str(p.relative_to(root))


def parse_model_options(options: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``NAME=SPEC`` options (a bare ``SPEC`` is named after its last path part)."""
    models: dict[str, str] = {}
    for opt in options:
        name, sep, spec = opt.partition("=")
        if not sep:
            name, spec = Path(opt.split("@")[-1].rstrip("/")).name or opt, opt
        if not name or not spec:
            raise UserError(f"--model {opt!r}: expected NAME=SPEC (SPEC: MODEL or MODEL@ADAPTER_DIR)")
        if name in models:
            raise UserError(f"--model {opt!r}: the name {name!r} is used twice")
        models[name] = spec
    return models


def read_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSONL file; bad input (not UTF-8, bad
    or absurdly nested JSON, a non-object line) is a ``UserError`` naming ``file:line``."""
    return fileio.iter_jsonl(path)
