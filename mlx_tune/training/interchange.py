"""mlx-lm interchange: read ``mlx_lm lora`` configs as training settings, and write the keys that
let ``mlx_lm lora -c adapter_config.json`` repeat our schedule.

Reading (``mlx-tune train -c FILE``): an mlx-lm lora YAML is accepted unchanged. Numbers such as
``1e-5`` are floats (PyYAML's YAML 1.1 reads them as strings; mlx-lm adds a float resolver, and so
do we); ``lora_parameters`` and ``lr_schedule``'s mapping (``{name: cosine_decay, warmup, warmup_init,
arguments: [init, decay_steps, end]}``) and ``optimizer_config`` become our settings; keys that mean
nothing here (``train``, ``test``, ``report_to`` ...) are ignored with a note; ``resume_adapter_file``
and ``hf_dataset`` are refused with a message saying what to do instead.

Writing: :func:`mlx_lm_training_keys` gives ``lr_schedule`` as mlx-lm's mapping and
``optimizer_config``, for ``adapter_config.json``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class MlxLmYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-5`` as a float, as ``mlx_lm lora`` does (mlx-lm patches
    the global SafeLoader; this subclass leaves it alone)."""


MlxLmYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

FLOAT_RE = re.compile(r"[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d+)(?:[eE][-+]?\d+)?")
FLOAT_SETTINGS = ("learning_rate", "min_learning_rate", "warmup", "weight_decay", "alpha", "scale")
FLOAT_SETTINGS += ("dropout", "epochs")

# mlx-lm lora keys that mean nothing for `mlx-tune train`, with why.
IGNORED: dict[str, str] = {
    "train": "mlx-tune train always trains",
    "test": "score a model with `mlx-tune bench`",
    "clear_cache_threshold": "mlx-tune leaves mlx's allocator cache alone",
    "report_to": "metrics go to ADAPTER_PATH/metrics.jsonl",
    "project_name": "metrics go to ADAPTER_PATH/metrics.jsonl",
    "wandb": "metrics go to ADAPTER_PATH/metrics.jsonl",
    "trust_remote_code": "mlx-tune never runs a model repository's code",
    "prompt_feature": "mlx-tune reads chat records ({messages, tools})",
    "completion_feature": "mlx-tune reads chat records ({messages, tools})",
    "chat_feature": "mlx-tune reads chat records ({messages, tools})",
    "text_feature": "mlx-tune reads chat records ({messages, tools})",
    "training_mode": "mlx-tune trains supervised (normal) only",
}
# Skipped silently: our own plumbing (presets, phase files, adapter_config.json) and test_batches
# (meaningless without test, which gets its note).
SILENT = ("preset", "config", "lora_scale", "shared_prefix_used", "packing_used", "test_batches")

SCHEDULE_NAMES = {"cosine_decay": "cosine"}
ADAMW_DEFAULT_DECAY = 0.01  # mlx.optimizers.AdamW's default
ALIASES = {"keys": "target_modules", "lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}
ALIASES["lr_schedule"] = "schedule"  # see TrainSettings.schedule


def read_yaml(path) -> Any:
    """Parse a YAML file the way ``mlx_lm lora -c`` does (``1e-5`` is a float)."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, MlxLmYamlLoader)  # noqa: S506 - a SafeLoader subclass


def from_mlx_lm(raw: dict, source: str, notes: list[str], problems: list[str]) -> dict:
    """Our settings keys for one config layer written with mlx-lm's keys (ours pass through).

    ``lora_parameters``/``lora`` are flattened, ``lr_schedule`` mappings and ``optimizer_config``
    translated (``optimizer: adamw`` without a weight decay gets AdamW's default 0.01, as in
    mlx-lm), numeric strings of float settings parsed; ignored keys add a line to ``notes``,
    refused ones to ``problems`` (each naming ``source`` and the key)."""
    out = dict(raw)
    for nested in ("lora_parameters", "lora"):
        lp = out.pop(nested, None)
        if isinstance(lp, dict):
            for k, v in lp.items():
                out.setdefault(k, v)
        elif lp is not None:
            problems.append(f"{source}: {nested}: expected a mapping (rank, scale, dropout, keys)")
    if "lr_schedule" in out and out["lr_schedule"] is None:
        del out["lr_schedule"]  # mlx-lm's "no schedule": keep the layers below
    if isinstance(out.get("lr_schedule"), dict):
        out.update(_schedule(out.pop("lr_schedule"), source, notes, problems))
    if "optimizer_config" in out:
        out.update(_optimizer_config(out.pop("optimizer_config"), out.get("optimizer"), source, notes))
    if out.get("optimizer") == "adamw" and "weight_decay" not in out:
        out["weight_decay"] = ADAMW_DEFAULT_DECAY  # what `mlx_lm lora` gets from mlx's AdamW
    if out.get("resume_adapter_file") is not None:
        problems.append(
            f"{source}: resume_adapter_file: not supported (mlx-tune resumes its own checkpoints: "
            "`mlx-tune train --resume` with the same adapter_path)"
        )
    out.pop("resume_adapter_file", None)
    if out.get("hf_dataset"):
        problems.append(
            f"{source}: hf_dataset: not supported (give data: a directory with train.jsonl and valid.jsonl)"
        )
    out.pop("hf_dataset", None)
    for key in [k for k in out if k in IGNORED or k in SILENT]:
        value = out.pop(key)
        if key in IGNORED and value not in (None, False):
            notes.append(f"{source}: {key}: ignored ({IGNORED[key]})")
    out = {ALIASES.get(k, k): v for k, v in out.items()}
    for key in FLOAT_SETTINGS:
        if isinstance(out.get(key), str) and FLOAT_RE.fullmatch(out[key].strip()):
            out[key] = float(out[key])
    return out


def _schedule(spec: dict, source: str, notes: list[str], problems: list[str]) -> dict:
    """mlx-lm's ``lr_schedule`` mapping as our ``schedule``/``learning_rate``/``warmup``/
    ``min_learning_rate``. Only ``cosine_decay`` has a match here."""
    name = spec.get("name")
    args = spec.get("arguments") or []
    if name == "linear_schedule" and len(args) >= 2 and args[0] == args[1]:
        out: dict[str, Any] = {"schedule": "constant", "learning_rate": args[0]}
    elif name in SCHEDULE_NAMES and 1 <= len(args) <= 3:
        out = {"schedule": SCHEDULE_NAMES[name], "learning_rate": args[0]}
        if len(args) == 3:
            out["min_learning_rate"] = args[2]
        if len(args) >= 2:
            notes.append(
                f"{source}: lr_schedule.arguments: decay steps {args[1]} ignored "
                "(the cosine decays over the run's optimizer updates after warmup)"
            )
    else:
        problems.append(
            f"{source}: lr_schedule: {name!r} with arguments {args!r} is not supported "
            "(use name: cosine_decay, arguments: [peak, decay_steps, end]; or lr_schedule: cosine|constant)"
        )
        return {}
    if spec.get("warmup"):
        out["warmup"] = spec["warmup"]
    if spec.get("warmup_init"):
        notes.append(f"{source}: lr_schedule.warmup_init: ignored (warmup starts from 0)")
    unknown = sorted(set(spec) - {"name", "arguments", "warmup", "warmup_init"})
    if unknown:
        problems.append(f"{source}: lr_schedule: unknown key(s) {', '.join(unknown)}")
    for key in ("learning_rate", "min_learning_rate", "warmup"):
        if isinstance(out.get(key), str) and FLOAT_RE.fullmatch(out[key].strip()):
            out[key] = float(out[key])
    return out


def _optimizer_config(spec: Any, optimizer: Any, source: str, notes: list[str]) -> dict:
    """``optimizer_config: {adamw: {weight_decay: x, ...}}``: the chosen optimizer's weight decay."""
    chosen = (spec or {}).get(optimizer or "adam") if isinstance(spec, dict) else None
    if not isinstance(chosen, dict):
        return {}
    rest = sorted(set(chosen) - {"weight_decay"})
    if rest:
        notes.append(f"{source}: optimizer_config.{optimizer}: {', '.join(rest)} ignored (mlx defaults)")
    return {"weight_decay": chosen["weight_decay"]} if "weight_decay" in chosen else {}


def mlx_lm_training_keys(settings, total_updates: int) -> dict:
    """``lr_schedule`` (mlx-lm's mapping) and ``optimizer_config`` for ``adapter_config.json``, so
    ``mlx_lm lora -c adapter_config.json`` trains with the same schedule and weight decay
    (mlx-lm joins warmup and decay one step later than we do)."""
    total = max(1, int(total_updates))
    s = settings
    warmup = int(round(s.warmup * total)) if s.warmup < 1 else int(s.warmup)
    warmup = min(warmup, max(total - 1, 0))
    if s.lr_schedule == "cosine":
        schedule: dict = {
            "name": "cosine_decay",
            "arguments": [s.learning_rate, max(total - warmup, 1), s.min_learning_rate],
        }
    else:
        schedule = {"name": "linear_schedule", "arguments": [s.learning_rate, s.learning_rate, 1]}
    schedule["warmup"] = warmup
    schedule["warmup_init"] = 0.0
    config = {"weight_decay": s.weight_decay} if s.optimizer == "adamw" else {}
    return {"lr_schedule": schedule, "optimizer_config": {s.optimizer: config}}
