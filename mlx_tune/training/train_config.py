"""Training settings: the ``TrainSettings`` dataclass, presets, and how settings are resolved.

Each field of :class:`TrainSettings` is a setting, described once: its type (a ``Literal`` lists the
choices), its default, its range (``_check``) and its docstring. From them come the YAML keys
(:data:`FIELDS`), the ``mlx-tune train`` options (:func:`click_options`) and the validation
(:func:`validate_settings`); a new setting is one new field.

Settings: defaults < preset < phase YAML ``train:`` < ``-c`` config < command-line options, all
validated together (every problem in one ``UserError``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlx_tune import UserError, layout
from mlx_tune.training import interchange

PRESETS_DIR = layout.PRESETS_DIR

# Ranges a numeric setting can be given (``_check``), each with the problem it reports.
RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "int>=1": (lambda v: _is_int(v) and v >= 1, "expected a positive integer"),
    "int>=0": (lambda v: _is_int(v) and v >= 0, "expected an integer >= 0"),
    "int>=1|-1": (lambda v: _is_int(v) and (v >= 1 or v == -1), "expected a positive integer or -1 (all)"),
    "num>0": (lambda v: _is_num(v) and v > 0, "expected a finite positive number"),
    "num>=0": (lambda v: _is_num(v) and v >= 0, "expected a finite number >= 0"),
    "[0,1)": (lambda v: _is_num(v) and 0 <= v < 1, "expected a number in [0, 1)"),
}


def _check(default: Any, allowed: str) -> Any:
    """A field whose value must be in the range ``allowed`` (a key of :data:`RANGES`)."""
    return field(default=default, metadata={"range": allowed})


@dataclass
class TrainSettings:
    """Everything that defines a training run. Stored in ``adapter_config.json``."""

    model: str = ""
    """Base model: a local mlx-lm model directory or a Hugging Face repo id."""
    data: str = ""
    """Directory with ``train.jsonl`` and ``valid.jsonl`` (records in mlx-lm's tools/chat format)."""
    adapter_path: str = "adapters"
    """Output directory for the adapter, metrics, summary, ``best/`` and ``checkpoints/``."""
    task: Literal["tools", "chat", "dot"] = "tools"
    """The task the records are for (:mod:`mlx_tune.tasks`): ``tools`` (tool use: records with
    ``tools``), ``chat`` or ``dot`` (plain answers, ``meta.task`` naming the task). A phase config's
    ``task:`` sets it; a record of another task is an error naming its file and line."""
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    """``lora``, ``dora`` or ``full`` (full trains the last ``num_layers`` transformer layers)."""
    train_embeddings: bool = False
    """With ``full``: also train what sits outside the transformer layers (embeddings, final norm,
    output head). A randomly initialised base (the tiny model) needs it; a pretrained one rarely does."""
    iters: int | None = _check(None, "int>=1")
    """Training iterations (micro-batches). Give this or ``epochs``."""
    epochs: float | None = _check(None, "num>0")
    """Passes over the training set; converted to iterations (``epochs * len(train) // batch_size``)."""
    batch_size: int = _check(4, "int>=1")
    """Examples per micro-batch."""
    learning_rate: float = _check(1e-5, "num>0")
    """Peak learning rate."""
    schedule: Literal["cosine", "constant"] = field(default="cosine", metadata={"flag": "lr-schedule"})
    """``cosine`` (decay to ``min_learning_rate`` after warmup) or ``constant`` (after warmup)."""
    # Configs and options call it lr_schedule (a name or mlx-lm's mapping); it is stored as
    # schedule because mlx-lm reads an adapter_config.json's lr_schedule as its mapping.
    warmup: float = 0.0
    """Linear warmup: a ratio of the optimizer updates if below 1, else a number of updates."""
    min_learning_rate: float = _check(0.0, "num>=0")
    """Final learning rate of the cosine schedule."""
    optimizer: Literal["adam", "adamw"] = "adam"
    """``adam`` or ``adamw``."""
    weight_decay: float = _check(0.0, "num>=0")
    """AdamW weight decay (``adamw`` only)."""
    rank: int = _check(8, "int>=1")
    """LoRA rank."""
    alpha: float | None = _check(None, "num>0")
    """LoRA alpha (PEFT style); the scale is ``alpha / rank``. Give alpha or scale, not both."""
    scale: float | None = _check(None, "num>0")
    """mlx-lm's LoRA scale (default 20.0 when neither alpha nor scale is given)."""
    dropout: float = _check(0.0, "[0,1)")
    """LoRA dropout."""
    target_modules: list[str] | str | None = None
    """Linear layers to adapt: PEFT names (``q_proj``) or mlx-lm keys (``self_attn.q_proj``);
    ``all`` or unset adapts every linear layer of the transformer blocks."""
    num_layers: int = _check(16, "int>=1|-1")
    """Adapt (or, for full, train) the last N transformer layers; -1 means all."""
    mask_prompt: bool = True
    """Train only on assistant tokens (every assistant turn); off trains on the whole text."""
    decision_weight: float = _check(1.0, "num>0")
    """Loss weight of the first token of every assistant turn, where the model decides between
    calling a tool and answering (``<tool_call>`` or the answer's first word); every other trained
    token weighs 1, and the loss is the weighted mean. 1 is mlx-lm's plain mean. One token of a few
    hundred carries the decision, so a weight above 1 makes a small model learn it sooner. The
    validation loss stays the plain mean. Needs ``mask_prompt``."""
    grad_accumulation_steps: int = _check(1, "int>=1")
    """Micro-batches per optimizer update."""
    grad_checkpoint: bool = False
    """Recompute activations in the backward pass to save memory."""
    shared_prefix: Literal["auto", "off"] = "auto"
    """``auto``: run each batch's shared token prefix (system prompt + tools) once and broadcast its
    cache to the rows (exact; :mod:`mlx_tune.training.prefix`) when the model supports it; ``off``: the plain
    full-sequence path."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Exact sequence packing (:mod:`mlx_tune.training.packing`): several examples per row, attention blocked
    between them. ``auto``: packed on one worker unless the shared-prefix path costs 20% less (tool
    records with a long shared prefix) or, without it, packing saves under 10% (costs: positions
    weighted by attention length; chat Q&A, code -> DOT pairs pack); ``on``: always (an error if the
    model cannot); ``off``: never."""
    max_seq_length: int = _check(2048, "int>=1")
    """Longest sequence in tokens; longer examples are dropped or truncated (``long_sequences``)."""
    long_sequences: Literal["drop", "truncate"] = "drop"
    """What to do with examples longer than ``max_seq_length``: ``drop`` or ``truncate``."""
    seed: int = _check(0, "int>=0")
    """Seed for adapter initialisation, dropout and data order."""
    steps_per_report: int = _check(10, "int>=1")
    """Iterations between rows of ``metrics.jsonl``."""
    steps_per_eval: int = _check(50, "int>=1")
    """Iterations between validation runs (also at the start and the end)."""
    val_batches: int = _check(-1, "int>=1|-1")
    """Validation batches per evaluation; -1 uses the whole validation set."""
    save_every: int = _check(100, "int>=1")
    """Iterations between resumable checkpoints (rounded up to whole optimizer updates)."""
    early_stopping_patience: int = _check(0, "int>=0")
    """Stop after this many evaluations without a lower val loss; 0 never stops early."""
    keep_checkpoints: int = _check(2, "int>=1")
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


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's resolved type (``Literal[...]``, ``int | None`` ...)."""
    return typing.get_type_hints(TrainSettings)


def choices(name: str) -> tuple | None:
    """The values a ``Literal`` field allows, else ``None``."""
    t = field_types()[name]
    return typing.get_args(t) if typing.get_origin(t) is Literal else None


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal after it in the class body), on one line."""
    try:
        tree = ast.parse(inspect.getsource(TrainSettings))
    except (OSError, TypeError):  # no source (a frozen build): options without help
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            if isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                text = re.sub(r":\w+:`([^`]*)`", r"\1", after.value.value).replace("``", "")
                docs[node.target.id] = " ".join(text.split())
    return docs


def option_name(name: str) -> str:
    """The command-line option of a field (``--learning-rate``; ``--lr-schedule`` for ``schedule``)."""
    return "--" + FIELDS[name].metadata.get("flag", name.replace("_", "-"))


def click_options(command):
    """Decorate a click command with one option per :class:`TrainSettings` field (default ``None``:
    unset options leave the other layers' values)."""
    import click

    for name in reversed(list(FIELDS)):
        t = field_types()[name]
        flag = option_name(name)
        kw: dict[str, Any] = {"default": None, "help": field_docs().get(name, "")}
        args = [a for a in typing.get_args(t) if a is not type(None)] or [t]
        if t is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
        else:
            decls = [flag]
            if choices(name):
                kw["type"] = click.Choice(choices(name))
            elif args[0] in (int, float):
                kw["type"] = args[0]
            else:
                kw["type"] = str
        command = click.option(*decls, name, **kw)(command)
    return command


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
    (:mod:`mlx_tune.training.interchange`); a key that means nothing here adds a line to ``notes`` (printed
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
                {
                    "data": str(layout.phase_data_dir(ph.number)),
                    "adapter_path": str(layout.adapter_dir(ph.number)),
                    "task": ph.task,
                },
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


def _label(name: str) -> str:
    """How problems name a field: the name configs and options use (``lr_schedule`` for ``schedule``)."""
    return FIELDS[name].metadata.get("flag", name).replace("-", "_")


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one field's value by its type and range alone, or ``None``."""
    t = field_types()[name]
    if value is None and type(None) in typing.get_args(t):
        return None
    label = _label(name)
    allowed = choices(name)
    if allowed is not None:
        return None if value in allowed else f"{label}: {value!r} is not one of {', '.join(allowed)}"
    if t is bool:
        return None if isinstance(value, bool) else f"{label}: expected true or false, got {value!r}"
    if "range" in FIELDS[name].metadata:
        ok, expected = RANGES[FIELDS[name].metadata["range"]]
        return None if ok(value) else f"{label}: {expected}, got {value!r}"
    return None


def validate_settings(s: TrainSettings) -> list[str]:
    """Every problem with a settings object, each naming the setting: each field's type and range
    (:func:`field_problem`), then the rules between fields."""
    p = [msg for name in FIELDS if (msg := field_problem(name, getattr(s, name)))]
    if not s.model:
        p.append("model: required (a local model directory or a Hugging Face repo id)")
    if not s.data:
        p.append("data: required (a directory with train.jsonl and valid.jsonl)")
    if s.iters is None and s.epochs is None:
        p.append("iters: give iters or epochs")
    if _is_num(s.learning_rate) and _is_num(s.min_learning_rate) and s.min_learning_rate > s.learning_rate:
        p.append("min_learning_rate: larger than learning_rate")
    if not _is_num(s.warmup) or s.warmup < 0 or (s.warmup >= 1 and not float(s.warmup).is_integer()):
        p.append(f"warmup: expected a ratio in [0, 1) or a whole number of steps, got {s.warmup!r}")
    if _is_num(s.weight_decay) and s.weight_decay and s.optimizer != "adamw":
        p.append("weight_decay: only used by optimizer adamw")
    if s.alpha is not None and s.scale is not None:
        p.append("alpha: give alpha (scale = alpha / rank) or scale, not both")
    tm = s.target_modules
    if tm is not None and not isinstance(tm, str):
        if not isinstance(tm, list) or not tm or not all(isinstance(x, str) and x for x in tm):
            p.append(f"target_modules: expected a list of layer names or 'all', got {tm!r}")
    if s.fine_tune_type == "full" and tm not in (None, "all"):
        p.append("target_modules: not used by fine_tune_type full (it trains whole layers)")
    if _is_num(s.decision_weight) and s.decision_weight != 1 and s.mask_prompt is False:
        p.append("decision_weight: needs mask_prompt (without it there are no assistant turns to find)")
    if s.train_embeddings is True and s.fine_tune_type != "full":
        p.append("train_embeddings: only with fine_tune_type full (LoRA adapters cover linear layers)")
    return p
