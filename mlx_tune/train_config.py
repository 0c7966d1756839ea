"""Training settings: the ``TrainSettings`` dataclass, presets, and how settings are resolved.

Settings: defaults < preset < phase YAML ``train:`` < ``-c`` config < command-line options, all
validated together (every problem in one ``UserError``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlx_tune import UserError, interchange, layout

PRESETS_DIR = layout.PRESETS_DIR
FINE_TUNE_TYPES = ("lora", "dora", "full")
SCHEDULES = ("cosine", "constant")
LONG_SEQUENCES = ("drop", "truncate")
OPTIMIZERS = ("adam", "adamw")
SHARED_PREFIX = ("auto", "off")


@dataclass
class TrainSettings:
    """Everything that defines a training run. Stored in ``adapter_config.json``."""

    model: str = ""
    """Base model: a local mlx-lm model directory or a Hugging Face repo id."""
    data: str = ""
    """Directory with ``train.jsonl`` and ``valid.jsonl`` (records in mlx-lm's tools/chat format)."""
    adapter_path: str = "adapters"
    """Output directory for the adapter, metrics, summary, ``best/`` and ``checkpoints/``."""
    fine_tune_type: str = "lora"
    """``lora``, ``dora`` or ``full`` (full trains the last ``num_layers`` transformer layers)."""
    train_embeddings: bool = False
    """With ``full``: also train what sits outside the transformer layers (embeddings, final norm,
    output head). A randomly initialised base (the tiny model) needs it; a pretrained one rarely does."""
    iters: int | None = None
    """Training iterations (micro-batches). Give this or ``epochs``."""
    epochs: float | None = None
    """Passes over the training set; converted to iterations (``epochs * len(train) // batch_size``)."""
    batch_size: int = 4
    """Examples per micro-batch."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    schedule: str = "cosine"
    """``cosine`` (decay to ``min_learning_rate`` after warmup) or ``constant`` (after warmup).
    Configs and options call it ``lr_schedule`` (a name or mlx-lm's mapping); it is stored as
    ``schedule`` because mlx-lm reads an ``adapter_config.json``'s ``lr_schedule`` as its mapping."""
    warmup: float = 0.0
    """Linear warmup: a ratio of the optimizer updates if below 1, else a number of updates."""
    min_learning_rate: float = 0.0
    """Final learning rate of the cosine schedule."""
    optimizer: str = "adam"
    """``adam`` or ``adamw``."""
    weight_decay: float = 0.0
    """AdamW weight decay (``adamw`` only)."""
    rank: int = 8
    """LoRA rank."""
    alpha: float | None = None
    """LoRA alpha (PEFT style); the scale is ``alpha / rank``. Give alpha or scale, not both."""
    scale: float | None = None
    """mlx-lm's LoRA scale (default 20.0 when neither alpha nor scale is given)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] | str | None = None
    """Linear layers to adapt: PEFT names (``q_proj``) or mlx-lm keys (``self_attn.q_proj``);
    ``all`` or unset adapts every linear layer of the transformer blocks."""
    num_layers: int = 16
    """Adapt (or, for full, train) the last N transformer layers; -1 means all."""
    mask_prompt: bool = True
    """Train only on assistant tokens (every assistant turn); off trains on the whole text."""
    grad_accumulation_steps: int = 1
    """Micro-batches per optimizer update."""
    grad_checkpoint: bool = False
    """Recompute activations in the backward pass to save memory."""
    shared_prefix: str = "auto"
    """``auto``: run each batch's shared token prefix (system prompt + tools) once and broadcast its
    cache to the rows (exact; :mod:`mlx_tune.prefix`) when the model supports it; ``off``: the plain
    full-sequence path."""
    max_seq_length: int = 2048
    """Longest sequence in tokens; longer examples are dropped or truncated (``long_sequences``)."""
    long_sequences: str = "drop"
    """What to do with examples longer than ``max_seq_length``: ``drop`` or ``truncate``."""
    seed: int = 0
    """Seed for adapter initialisation, dropout and data order."""
    steps_per_report: int = 10
    """Iterations between rows of ``metrics.jsonl``."""
    steps_per_eval: int = 50
    """Iterations between validation runs (also at the start and the end)."""
    val_batches: int = -1
    """Validation batches per evaluation; -1 uses the whole validation set."""
    save_every: int = 100
    """Iterations between resumable checkpoints (rounded up to whole optimizer updates)."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without a lower val loss; 0 never stops early."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep in ``checkpoints/``."""

    @property
    def lr_schedule(self) -> str:
        return self.schedule

    @property
    def lora_scale(self) -> float:
        if self.alpha is not None:
            return float(self.alpha) / self.rank
        return float(self.scale) if self.scale is not None else 20.0


FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}


# ---------------------------------------------------------------- settings


def load_preset(name: str, presets_dir: str | Path = PRESETS_DIR) -> dict:
    """A preset's settings: a shipped name (``mlx_tune/configs/presets/NAME.yaml``, read from any
    directory) or the path of the user's own YAML file (:func:`mlx_tune.layout.preset_path`)."""
    path = layout.preset_path(name, presets_dir)
    if path.is_file():
        return _read_yaml(path)
    have = layout.preset_names(presets_dir)
    raise UserError(f"--preset: unknown preset {name!r} (have: {', '.join(have)})")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = interchange.read_yaml(path) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of training settings")
    return raw


def resolve_settings(
    *,
    phase: int | None = None,
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    phases_dir: str | Path = layout.PHASES_DIR,
    notes: list[str] | None = None,
) -> TrainSettings:
    """Merge defaults, preset, phase ``train:`` section, config file and overrides, then validate
    everything together (all problems in one ``UserError``). Any layer may use mlx-lm's lora keys
    (:mod:`mlx_tune.interchange`); a key that means nothing here adds a line to ``notes`` (printed
    to stderr when ``notes`` is None), a key neither tool knows is an error."""
    layers: list[tuple[str, dict]] = []
    phase_train: dict = {}
    if phase is not None:
        from mlx_tune.phases import load_phase

        ph = load_phase(phase, phases_dir=phases_dir)
        phase_train = dict(ph.train)
    preset = preset or phase_train.get("preset")
    if preset:
        layers.append((f"preset {preset}", load_preset(preset)))
    if phase is not None:
        layers.append((f"{ph.path}: train", phase_train))
        layers.append(
            (
                "phase defaults",
                {"data": str(layout.phase_data_dir(phase)), "adapter_path": str(layout.adapter_dir(phase))},
            )
        )
    if config:
        layers.append((str(config), _read_yaml(Path(config))))
    layers.append(("options", {k: v for k, v in (overrides or {}).items() if v is not None}))

    values: dict[str, Any] = {}
    problems: list[str] = []
    said: list[str] = []
    layers = [(source, interchange.from_mlx_lm(raw, source, said, problems)) for source, raw in layers]
    for source, flat in layers:
        for key, value in flat.items():
            if key not in FIELDS:
                problems.append(f"{source}: {key}: unknown setting (neither mlx-tune's nor mlx-lm lora's)")
                continue
            if source == "phase defaults" and key in values:
                continue
            values[key] = value
    # iters and epochs: the later source wins, so `--epochs 2` replaces a preset's iters.
    for source, flat in reversed(layers):
        if "iters" in flat and "epochs" in flat and flat["iters"] is not None and flat["epochs"] is not None:
            problems.append(f"{source}: iters and epochs both given (give one)")
            break
        if flat.get("iters") is not None:
            values.pop("epochs", None)
            values["iters"] = flat["iters"]
            break
        if flat.get("epochs") is not None:
            values.pop("iters", None)
            values["epochs"] = flat["epochs"]
            break
    settings = TrainSettings()
    for key, value in values.items():
        setattr(settings, key, value)
    problems.extend(validate_settings(settings))
    if problems:
        raise UserError(_joined("settings", problems))
    if notes is None:
        for line in said:
            print(f"note: {line}", file=sys.stderr)
    else:
        notes.extend(said)
    return settings


def _joined(what: str, problems: list[str], limit: int = 30) -> str:
    if len(problems) == 1:
        return problems[0]
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problems in {what}:\n  " + "\n  ".join(shown) + more


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    """A finite real number: ``nan`` and ``inf`` (from ``--learning-rate nan`` or YAML ``.inf``) are not."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_settings(s: TrainSettings) -> list[str]:
    """Every problem with a settings object, each naming the setting."""
    p: list[str] = []
    if not s.model:
        p.append("model: required (a local model directory or a Hugging Face repo id)")
    if not s.data:
        p.append("data: required (a directory with train.jsonl and valid.jsonl)")
    if s.fine_tune_type not in FINE_TUNE_TYPES:
        p.append(f"fine_tune_type: {s.fine_tune_type!r} is not one of {', '.join(FINE_TUNE_TYPES)}")
    if s.iters is None and s.epochs is None:
        p.append("iters: give iters or epochs")
    if s.iters is not None and (not _is_int(s.iters) or s.iters < 1):
        p.append(f"iters: expected a positive integer, got {s.iters!r}")
    if s.epochs is not None and (not _is_num(s.epochs) or s.epochs <= 0):
        p.append(f"epochs: expected a finite positive number, got {s.epochs!r}")
    for name in ("batch_size", "rank", "max_seq_length", "steps_per_report", "steps_per_eval", "save_every"):
        v = getattr(s, name)
        if not _is_int(v) or v < 1:
            p.append(f"{name}: expected a positive integer, got {v!r}")
    if not _is_int(s.grad_accumulation_steps) or s.grad_accumulation_steps < 1:
        p.append(f"grad_accumulation_steps: expected a positive integer, got {s.grad_accumulation_steps!r}")
    if not _is_int(s.num_layers) or (s.num_layers < 1 and s.num_layers != -1):
        p.append(f"num_layers: expected a positive integer or -1 (all), got {s.num_layers!r}")
    if not _is_num(s.learning_rate) or s.learning_rate <= 0:
        p.append(f"learning_rate: expected a finite positive number, got {s.learning_rate!r}")
    if not _is_num(s.min_learning_rate) or s.min_learning_rate < 0:
        p.append(f"min_learning_rate: expected a finite number >= 0, got {s.min_learning_rate!r}")
    elif _is_num(s.learning_rate) and s.min_learning_rate > s.learning_rate:
        p.append("min_learning_rate: larger than learning_rate")
    if s.schedule not in SCHEDULES:
        p.append(f"lr_schedule: {s.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if not _is_num(s.warmup) or s.warmup < 0 or (s.warmup >= 1 and not float(s.warmup).is_integer()):
        p.append(f"warmup: expected a ratio in [0, 1) or a whole number of steps, got {s.warmup!r}")
    if s.optimizer not in OPTIMIZERS:
        p.append(f"optimizer: {s.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if not _is_num(s.weight_decay) or s.weight_decay < 0:
        p.append(f"weight_decay: expected a finite number >= 0, got {s.weight_decay!r}")
    elif s.weight_decay and s.optimizer != "adamw":
        p.append("weight_decay: only used by optimizer adamw")
    if s.alpha is not None and s.scale is not None:
        p.append("alpha: give alpha (scale = alpha / rank) or scale, not both")
    if s.alpha is not None and (not _is_num(s.alpha) or s.alpha <= 0):
        p.append(f"alpha: expected a finite positive number, got {s.alpha!r}")
    if s.scale is not None and (not _is_num(s.scale) or s.scale <= 0):
        p.append(f"scale: expected a finite positive number, got {s.scale!r}")
    if not _is_num(s.dropout) or not 0 <= s.dropout < 1:
        p.append(f"dropout: expected a number in [0, 1), got {s.dropout!r}")
    tm = s.target_modules
    if tm is not None and not isinstance(tm, str):
        if not isinstance(tm, list) or not tm or not all(isinstance(x, str) and x for x in tm):
            p.append(f"target_modules: expected a list of layer names or 'all', got {tm!r}")
    if s.fine_tune_type == "full" and tm not in (None, "all"):
        p.append("target_modules: not used by fine_tune_type full (it trains whole layers)")
    if not isinstance(s.train_embeddings, bool):
        p.append(f"train_embeddings: expected true or false, got {s.train_embeddings!r}")
    elif s.train_embeddings and s.fine_tune_type != "full":
        p.append("train_embeddings: only with fine_tune_type full (LoRA adapters cover linear layers)")
    if not isinstance(s.mask_prompt, bool):
        p.append(f"mask_prompt: expected true or false, got {s.mask_prompt!r}")
    if not isinstance(s.grad_checkpoint, bool):
        p.append(f"grad_checkpoint: expected true or false, got {s.grad_checkpoint!r}")
    if s.shared_prefix not in SHARED_PREFIX:
        p.append(f"shared_prefix: {s.shared_prefix!r} is not one of {', '.join(SHARED_PREFIX)}")
    if s.long_sequences not in LONG_SEQUENCES:
        p.append(f"long_sequences: {s.long_sequences!r} is not one of {', '.join(LONG_SEQUENCES)}")
    for name in ("seed", "early_stopping_patience"):
        v = getattr(s, name)
        if not _is_int(v) or v < 0:
            p.append(f"{name}: expected an integer >= 0, got {v!r}")
    if not _is_int(s.val_batches) or (s.val_batches < 1 and s.val_batches != -1):
        p.append(f"val_batches: expected a positive integer or -1 (all), got {s.val_batches!r}")
    if not _is_int(s.keep_checkpoints) or s.keep_checkpoints < 1:
        p.append(f"keep_checkpoints: expected a positive integer, got {s.keep_checkpoints!r}")
    return p
