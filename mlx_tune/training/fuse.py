"""Fuse an adapter into its base model and save an 8-bit mlx-lm model (``mlx-tune fuse``).

A quantized base is dequantized, the LoRA/DoRA deltas are added in full precision, and the result
is quantized to ``bits`` (8 by default). Fusing straight back into 4-bit weights rounds the small
deltas away (mlx-lm issue 1172); 8 bits keeps them. The saved directory is a standard mlx-lm model
(``mlx_lm.load`` / ``mlx_lm generate --model OUT``), ready for local use and for the Hub: after
saving, greedy outputs of the fused model are compared with base + adapter on validation prompts,
and ``OUT/README.md`` (a model card with Hugging Face metadata, see :mod:`mlx_tune.training.model_card`),
``OUT/tools.json`` (the system prompt and tool schemas it was trained with) and ``OUT/fuse.json``
(the report) are written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlx_tune import UserError, fileio, layout
from mlx_tune.models import model_spec
from mlx_tune.training import model_card

DEFAULT_MAX_TOKENS = 24


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _pick_group_size(model, preferred: int) -> int:
    """The largest of (preferred, 64, 32) dividing every quantizable layer's input size."""
    import mlx.nn as nn

    dims = [m.weight.shape[-1] for _, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    for g in dict.fromkeys((preferred, 64, 32)):
        if all(d % g == 0 for d in dims):
            return g
    return 32  # layers that 32 does not divide stay in float (mlx-lm skips them)


def resolve(
    model: str | None, adapter_path: str | None, save_path: str | None, phase: int | None, bits: int
) -> tuple[str, Path, Path, dict]:
    problems = []
    if phase is not None:
        adapter_path = adapter_path or str(layout.adapter_dir(phase))
        save_path = save_path or str(layout.fused_model_dir(phase, bits=bits))
    if not adapter_path:
        problems.append("--adapter-path: required (or --phase N)")
    if not save_path:
        problems.append("--save-path: required (or --phase N)")
    if problems:
        raise UserError("; ".join(problems))
    adapter = Path(adapter_path)
    train_hint = "mlx-tune train" if phase is None else f"mlx-tune train --phase {phase}"
    model_spec.check_adapter(adapter_path, "--adapter-path", train_hint)
    cfg_file = adapter / "adapter_config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file}: not valid JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise UserError(f"{cfg_file}: not UTF-8") from None
    except RecursionError:
        raise UserError(f"{cfg_file}: not valid JSON: nested too deeply") from None
    except OSError as e:
        raise UserError(f"{cfg_file}: cannot read: {e.strerror or e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    # --model may differ from the base the adapter names (a moved base): the shapes are checked
    # when the adapter is loaded.
    model = model or cfg.get("model")
    if not model or not isinstance(model, str):
        raise UserError(f"--model: required ({cfg_file} does not name its base model)")
    model_spec.check_base(model, "--model")
    out = Path(save_path)
    check_save_path(
        out,
        {"--model": Path(model), "--adapter-path": adapter},
        {"the training data": _data_dir(cfg), "the current folder": Path.cwd()},
    )
    return model, adapter, out, cfg


def _data_dir(cfg: dict) -> Path | None:
    data = cfg.get("data")
    return Path(data) if isinstance(data, str) and data else None


def check_save_path(out: Path, inputs: dict[str, Path | None], keep: dict[str, Path | None]) -> None:
    """Refuse a save path that is, contains or lies inside one of ``inputs``, or that is or
    contains one of ``keep`` (folders that must survive, e.g. the training data).

    Replacing ``out`` (``--force``) deletes what is there, so such a path would destroy what
    the fuse reads; refused whether or not ``--force`` is given. Paths are compared after
    resolving symlinks; an input that is not a local path (a Hub id) cannot collide."""
    target = out.resolve()
    checks = [(name, p, True) for name, p in inputs.items()] + [(name, p, False) for name, p in keep.items()]
    for name, given, inside_too in checks:
        if given is None or not given.exists():
            continue
        source = given.resolve()
        if target == source:
            how = "is"
        elif target in source.parents:
            how = "contains"
        elif inside_too and source in target.parents:
            how = "lies inside"
        else:
            continue
        raise UserError(
            f"--save-path: {out} {how} {name} {given}; choose a path apart from what the fuse reads"
        )


def validation_prompts(cfg: dict, n: int) -> list[dict]:
    """Up to ``n`` validation records (conversation minus the last answer) from the adapter's data."""
    data = cfg.get("data")
    path = Path(data) / "valid.jsonl" if data else None
    if not path or not path.is_file() or n <= 0:
        return []
    return fileio.read_jsonl(path)[:n]


def _prompt_ids(tokenizer, record: dict) -> list[int]:
    from mlx_tune.records import templated_messages
    from mlx_tune.rendering import _template

    messages = templated_messages(record)[:-1]
    return _template(tokenizer, messages, record.get("tools"), add_generation_prompt=True)


def _greedy(model, tokenizer, prompts: list[list[int]], max_tokens: int) -> list[str]:
    from mlx_lm import generate

    return [generate(model, tokenizer, prompt=p, max_tokens=max_tokens, verbose=False) for p in prompts]


def fuse(
    *,
    model: str | None = None,
    adapter_path: str | None = None,
    save_path: str | None = None,
    phase: int | None = None,
    bits: int = 8,
    group_size: int = 64,
    verify_prompts: int = 8,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    force: bool = False,
    license: str | None = None,
) -> dict:
    """Fuse, quantize, save, verify; return the report (also in ``OUT/README.md`` and ``OUT/fuse.json``).

    ``license`` goes into the model card's metadata (default: the base's card's license, else
    ``other``)."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, quantize_model, save

    if bits not in (4, 8, 16):
        raise UserError(f"--bits: {bits} is not 4, 8 or 16")
    base, adapter, out, cfg = resolve(model, adapter_path, save_path, phase, bits)
    if out.exists() and not force:
        raise UserError(f"--save-path: {out} exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--save-path: {out} is a file, not a model folder; remove it or choose another path")
    t0 = time.perf_counter()

    def load_with_adapter():
        spec = model_spec.ModelSpec(base, str(adapter))
        return model_spec.load_model(spec, labels=("--model", "--adapter-path"), return_config=True)

    fused, tokenizer, config = load_with_adapter()
    base_bits = (config.get("quantization") or {}).get("bits")
    layers = [(n, m.fuse(dequantize=True)) for n, m in fused.named_modules() if hasattr(m, "fuse")]
    if layers:
        fused.update_modules(tree_unflatten(layers))
    fused = dequantize_model(fused)
    config = dict(config)
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    used_group = None
    if bits in (4, 8):
        used_group = _pick_group_size(fused, group_size)
        fused, config = quantize_model(fused, config, used_group, bits)
    mx.eval(fused.parameters())

    with fileio.atomic_path(out) as tmp:
        save(tmp, base, fused, tokenizer, config, donate_model=False)
        fuse_seconds = time.perf_counter() - t0
        records = validation_prompts(cfg, verify_prompts)
        agreement = None
        samples = []
        if records:
            ref_model, ref_tok, _ = load_with_adapter()
            check_model, check_tok = model_spec.load_model(str(tmp), labels=("the fused model", "adapter"))
            prompts = [_prompt_ids(ref_tok, r) for r in records]
            want = _greedy(ref_model, ref_tok, prompts, max_tokens)
            got = _greedy(check_model, check_tok, prompts, max_tokens)
            same = [a == b for a, b in zip(want, got, strict=True)]
            agreement = sum(same) / len(same)
            samples = [{"adapter": a, "fused": b, "same": s} for a, b, s in zip(want, got, same, strict=True)]
        report = {
            "base": base,
            "base_bits": base_bits,
            "adapter_path": str(adapter),
            "save_path": str(out),
            "phase": phase,
            "bits": bits,
            "group_size": used_group,
            "fine_tune_type": cfg.get("fine_tune_type", "lora"),
            "verify_prompts": len(records),
            "greedy_agreement": agreement,
            "max_tokens": max_tokens,
            "fuse_seconds": round(fuse_seconds, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "fused_bytes": _dir_bytes(tmp),
            "base_bytes": _dir_bytes(Path(base)) if Path(base).is_dir() else None,
            "adapter_bytes": (adapter / "adapters.safetensors").stat().st_size,
            "training": _read_json(adapter / "summary.json"),
            "data": _data_counts(cfg),
            "samples": samples,
        }
        (tmp / "fuse.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        spec = model_card.tools_spec(cfg.get("data"))
        model_card.write_tools_json(tmp, spec)
        # After mlx-lm's save, which writes a card of its own without our metadata.
        (tmp / "README.md").write_text(model_card.model_card(report, spec, license))
    return report


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or not UTF-8
        return None


def _data_counts(cfg: dict) -> dict:
    data = cfg.get("data")
    counts = {}
    for split in ("train", "valid", "test"):
        p = Path(data) / f"{split}.jsonl" if data else None
        if p and p.is_file():
            with open(p, encoding="utf-8", errors="replace") as f:  # only lines are counted
                counts[split] = sum(1 for line in f if line.strip())
    return counts


def describe(r: dict) -> str:
    agree = "-" if r["greedy_agreement"] is None else f"{r['greedy_agreement']:.0%} of {r['verify_prompts']}"
    return (
        f"fused {r['adapter_path']} into {r['base']} -> {r['save_path']} ({r['bits']} bits)\n"
        f"greedy agreement with base + adapter: {agree}; size {r['fused_bytes']:,} bytes; "
        f"{r['total_seconds']} s"
    )
