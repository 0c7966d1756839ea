"""The benchmark's inputs: the held-out query file and the models to measure (defaults from the
project layout, :mod:`mlx_tune.layout`: the phase configs' base model, ``adapters/phaseN``,
``models/*-fused-*``). :func:`project_models` is the one place the benchmark's model list is
built (``mlx-tune bench``, the demo and ``scripts/benchmark_all_phases.py`` use it)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mlx_tune import UserError, fileio, layout, records


def default_queries(root: str | os.PathLike = ".") -> Path:
    """``data/phase7/test.jsonl``, else the highest ``data/phaseN/test.jsonl``."""
    root = Path(root)
    preferred = root / layout.query_file()
    if preferred.is_file():
        return preferred
    found = sorted(
        (int(m.group(1)), p)
        for p in root.glob(str(layout.query_file("*")))
        if (m := re.fullmatch(r"phase(\d+)", p.parent.name))
    )
    if not found:
        raise UserError(
            f"no held-out queries: {layout.query_file('N')} not found (run `mlx-tune data merge`) "
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


def phase_base_model(phases_dir: str | os.PathLike | None = None) -> str | None:
    """``train.model`` of the highest-numbered phase config that names one (with what it
    inherits): the shipped configs, or those in ``phases_dir``; a config that does not load is
    skipped."""
    from mlx_tune.phases import available_phases, load_phase

    for n in reversed(available_phases(phases_dir)):
        try:
            model = load_phase(n, phases_dir or layout.PHASES_DIR).train.get("model")
        except UserError:
            continue
        if isinstance(model, str) and model:
            return model
    return None


def project_models(
    base: str | None, root: str | os.PathLike = ".", *, qlora: bool | None = None
) -> dict[str, str]:
    """The benchmark's model list for the project layout, in table order: ``base``, then for
    each phase (``layout.PHASES``) its adapter and, for ``layout.FUSED_PHASES``, its fused model,
    then the QLoRA adapter and its fused model (with ``qlora``; ``None``: when the QLoRA adapter's
    folder exists). An adapter runs on the base its ``adapter_config.json`` names, else on
    ``base`` (skipped when neither names one). Specs are relative to ``root``."""
    root = Path(root)
    models: dict[str, str] = {"base": base} if base else {}

    def add_adapter(d: Path) -> None:
        on = adapter_base_model(root / d) or base
        if on:
            models[d.name] = f"{on}@{d}"

    for n in layout.PHASES:
        add_adapter(layout.adapter_dir(n))
        if n in layout.FUSED_PHASES:
            models[layout.fused_model_dir(n).name] = str(layout.fused_model_dir(n))
    qlora_adapter = layout.adapter_dir(layout.QLORA_PHASE, "qlora")
    if qlora or (qlora is None and (root / qlora_adapter).is_dir()):
        add_adapter(qlora_adapter)
        fused = layout.fused_model_dir(layout.QLORA_PHASE, "qlora")
        models[fused.name] = str(fused)
    return models


def default_models(
    root: str | os.PathLike = ".", phases_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """What exists: the entries of :func:`project_models` (on the base the phase configs name,
    :func:`phase_base_model`) whose folders hold a model, then any other ``adapters/phase*``
    adapter and fused ``models/*-fused-*`` folder."""
    root = Path(root)
    models = {
        name: spec
        for name, spec in project_models(phase_base_model(phases_dir), root).items()
        if name == "base" or _holds_model(root / spec.rpartition("@")[2])
    }
    extra = sorted(root.glob(f"{layout.ADAPTERS_DIR}/phase*"), key=lambda p: (len(p.name), p.name))
    for d in [*extra, *sorted(root.glob(f"{layout.MODELS_DIR}/*-fused-*"))]:
        on = adapter_base_model(d) or models.get("base")
        if d.name in models or not _holds_model(d) or (d.parent.name == layout.ADAPTERS_DIR.name and not on):
            continue
        models[d.name] = (
            f"{on}@{_rel(d, root)}" if d.parent.name == layout.ADAPTERS_DIR.name else _rel(d, root)
        )
    return models


def _holds_model(d: Path) -> bool:
    """A folder with adapter weights (``adapters.safetensors``) or a model (``config.json``)."""
    return (d / "adapters.safetensors").is_file() or (d / "config.json").is_file()


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
