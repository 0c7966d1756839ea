"""Train LoRA / DoRA / full fine-tunes in-process on mlx-lm's tuner (see DESIGN.md, "Training outputs").

We call ``mlx_lm.tuner.trainer.train`` with our own ``loss`` and ``iterate_batches``:

- per-token masks, so every assistant turn of a multi-turn conversation is trained;
- length bucketing by real token length (mlx-lm sorts by ``CacheDataset.itemlen``, which is the
  record's key count, so its batches mix lengths and pad a lot);
- the language-model head runs only on the positions that are trained (the masked prompt never
  reaches the vocabulary projection), which saves time and the largest activation;
- a step-exact data order and checkpoints (adapter, optimizer, RNG, step) for a real resume.

Settings: defaults < preset < phase YAML ``train:`` < ``-c`` config < command-line options.

Full fine-tunes (``fine_tune_type: full``) save the trained layers' weights as
``adapters.safetensors`` with ``fine_tune_type: full`` in ``adapter_config.json``; mlx-lm's
``load(model, adapter_path=...)`` loads them onto the base unchanged (it skips the LoRA conversion
and loads the weights over the base's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlx_tune import UserError, fileio, records

PRESETS_DIR = Path("data/phases/presets")
FINE_TUNE_TYPES = ("lora", "dora", "full")
SCHEDULES = ("cosine", "constant")
LONG_SEQUENCES = ("drop", "truncate")
OPTIMIZERS = ("adam", "adamw")
# Models whose forward pass is ``lm_head(model.model(x))`` (or tied embeddings): for these the head
# runs only on trained positions. Other models use the full logits and gather afterwards.
SPLIT_HEAD_TYPES = ("qwen2", "qwen3", "llama", "mistral")
PAD_MULTIPLE = 8


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
    iters: int | None = None
    """Training iterations (micro-batches). Give this or ``epochs``."""
    epochs: float | None = None
    """Passes over the training set; converted to iterations (``epochs * len(train) // batch_size``)."""
    batch_size: int = 4
    """Examples per micro-batch."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    lr_schedule: str = "cosine"
    """``cosine`` (decay to ``min_learning_rate`` after warmup) or ``constant`` (after warmup)."""
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
    def lora_scale(self) -> float:
        if self.alpha is not None:
            return float(self.alpha) / self.rank
        return float(self.scale) if self.scale is not None else 20.0


FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
ALIASES = {"keys": "target_modules", "lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}
# Keys that may appear in configs but are not settings (phase/preset plumbing, mlx-lm's CLI keys).
IGNORED_KEYS = ("preset", "train", "test", "test_batches", "config", "resume_adapter_file")


# ---------------------------------------------------------------- settings


def builtin_preset(name: str) -> dict | None:
    if name == "tiny":
        try:
            from mlx_tune.tiny import TINY_TRAIN_PRESET
        except ImportError:
            return None
        return dict(TINY_TRAIN_PRESET)
    return None


def load_preset(name: str, presets_dir: str | Path = PRESETS_DIR) -> dict:
    """A preset's settings: ``presets_dir/NAME.yaml``, or the built-in ``tiny`` preset."""
    path = Path(presets_dir) / f"{name}.yaml"
    if path.is_file():
        return _read_yaml(path)
    builtin = builtin_preset(name)
    if builtin is not None:
        return builtin
    have = sorted({p.stem for p in Path(presets_dir).glob("*.yaml")} | {"tiny"})
    raise UserError(f"--preset: unknown preset {name!r} (have: {', '.join(have)})")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of training settings")
    return raw


def _flatten_mlx_lm_keys(raw: dict) -> dict:
    """Accept mlx-lm's config layout (``lora_parameters: {rank, scale, dropout, keys}``) too."""
    out = dict(raw)
    for nested in ("lora_parameters", "lora"):
        lp = out.pop(nested, None)
        if isinstance(lp, dict):
            for k, v in lp.items():
                out.setdefault(k, v)
        elif lp is not None:
            out[f"{nested} (expected a mapping)"] = lp
    return {ALIASES.get(k, k): v for k, v in out.items()}


def resolve_settings(
    *,
    phase: int | None = None,
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    phases_dir: str | Path = "data/phases",
) -> TrainSettings:
    """Merge defaults, preset, phase ``train:`` section, config file and overrides, then validate
    everything together (all problems in one ``UserError``)."""
    layers: list[tuple[str, dict]] = []
    phase_train: dict = {}
    if phase is not None:
        from mlx_tune.phases import load_phase

        ph = load_phase(phase, phases_dir=phases_dir)
        phase_train = dict(ph.train)
    preset = preset or phase_train.get("preset")
    if preset:
        layers.append((f"preset {preset}", load_preset(preset, Path(phases_dir) / "presets")))
    if phase is not None:
        layers.append((f"{Path(phases_dir) / f'phase{phase}.yaml'}: train", phase_train))
        layers.append(
            ("phase defaults", {"data": f"data/phase{phase}", "adapter_path": f"adapters/phase{phase}"})
        )
    if config:
        layers.append((str(config), _read_yaml(Path(config))))
    layers.append(("options", {k: v for k, v in (overrides or {}).items() if v is not None}))

    values: dict[str, Any] = {}
    problems: list[str] = []
    for source, raw in layers:
        for key, value in _flatten_mlx_lm_keys(raw).items():
            if key in IGNORED_KEYS:
                continue
            if key not in FIELDS:
                problems.append(f"{source}: {key}: unknown setting")
                continue
            if source == "phase defaults" and key in values:
                continue
            values[key] = value
    # iters and epochs: the later source wins, so `--epochs 2` replaces a preset's iters.
    for source, raw in reversed(layers):
        flat = _flatten_mlx_lm_keys(raw)
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
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
        p.append(f"epochs: expected a positive number, got {s.epochs!r}")
    for name in ("batch_size", "rank", "max_seq_length", "steps_per_report", "steps_per_eval", "save_every"):
        v = getattr(s, name)
        if not _is_int(v) or v < 1:
            p.append(f"{name}: expected a positive integer, got {v!r}")
    if not _is_int(s.grad_accumulation_steps) or s.grad_accumulation_steps < 1:
        p.append(f"grad_accumulation_steps: expected a positive integer, got {s.grad_accumulation_steps!r}")
    if not _is_int(s.num_layers) or (s.num_layers < 1 and s.num_layers != -1):
        p.append(f"num_layers: expected a positive integer or -1 (all), got {s.num_layers!r}")
    if not _is_num(s.learning_rate) or s.learning_rate <= 0:
        p.append(f"learning_rate: expected a positive number, got {s.learning_rate!r}")
    if not _is_num(s.min_learning_rate) or s.min_learning_rate < 0:
        p.append(f"min_learning_rate: expected a number >= 0, got {s.min_learning_rate!r}")
    elif _is_num(s.learning_rate) and s.min_learning_rate > s.learning_rate:
        p.append("min_learning_rate: larger than learning_rate")
    if s.lr_schedule not in SCHEDULES:
        p.append(f"lr_schedule: {s.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")
    if not _is_num(s.warmup) or s.warmup < 0 or (s.warmup >= 1 and not float(s.warmup).is_integer()):
        p.append(f"warmup: expected a ratio in [0, 1) or a whole number of steps, got {s.warmup!r}")
    if s.optimizer not in OPTIMIZERS:
        p.append(f"optimizer: {s.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if not _is_num(s.weight_decay) or s.weight_decay < 0:
        p.append(f"weight_decay: expected a number >= 0, got {s.weight_decay!r}")
    elif s.weight_decay and s.optimizer != "adamw":
        p.append("weight_decay: only used by optimizer adamw")
    if s.alpha is not None and s.scale is not None:
        p.append("alpha: give alpha (scale = alpha / rank) or scale, not both")
    if s.alpha is not None and (not _is_num(s.alpha) or s.alpha <= 0):
        p.append(f"alpha: expected a positive number, got {s.alpha!r}")
    if s.scale is not None and (not _is_num(s.scale) or s.scale <= 0):
        p.append(f"scale: expected a positive number, got {s.scale!r}")
    if not _is_num(s.dropout) or not 0 <= s.dropout < 1:
        p.append(f"dropout: expected a number in [0, 1), got {s.dropout!r}")
    tm = s.target_modules
    if tm is not None and not isinstance(tm, str):
        if not isinstance(tm, list) or not tm or not all(isinstance(x, str) and x for x in tm):
            p.append(f"target_modules: expected a list of layer names or 'all', got {tm!r}")
    if s.fine_tune_type == "full" and tm not in (None, "all"):
        p.append("target_modules: not used by fine_tune_type full (it trains whole layers)")
    if not isinstance(s.mask_prompt, bool):
        p.append(f"mask_prompt: expected true or false, got {s.mask_prompt!r}")
    if not isinstance(s.grad_checkpoint, bool):
        p.append(f"grad_checkpoint: expected true or false, got {s.grad_checkpoint!r}")
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


def target_keys(model, names: list[str] | str | None, num_layers: int) -> list[str] | None:
    """Map PEFT-style names (``q_proj``) and mlx-lm keys (``self_attn.q_proj``) to mlx-lm's keys."""
    if names is None or names == "all" or names == ["all"]:
        return None
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    import mlx.nn as nn

    available: list[str] = []
    for key, module in model.layers[0].named_modules():
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)) or hasattr(module, "to_lora"):
            available.append(key)
    keys, unknown = [], []
    for name in names:
        hits = [k for k in available if k == name or k.endswith("." + name)]
        if not hits:
            unknown.append(name)
        keys.extend(h for h in hits if h not in keys)
    if unknown:
        raise UserError(
            f"target_modules: {', '.join(unknown)} not in the model's layers (have: {', '.join(available)})"
        )
    return keys


# ---------------------------------------------------------------- data


@dataclass
class Example:
    tokens: list[int]
    spans: list[tuple[int, int]]
    """Trained token ranges ``[start, end)`` (targets), one per assistant turn."""

    @property
    def n_trained(self) -> int:
        return sum(e - s for s, e in self.spans)


@dataclass
class TokenizedData:
    examples: list[Example]
    dropped: int = 0
    truncated: int = 0
    too_long: int = 0
    longest: int = 0
    fingerprint: str = ""


def load_records(path: Path) -> list[dict]:
    """Read and validate a JSONL file; every invalid line in one ``UserError`` (file:line: field)."""
    out, problems = [], []
    for lineno, record in fileio.iter_jsonl(path):
        for problem in records.validate_record(record):
            problems.append(f"{path}:{lineno}: {problem}")
        out.append(record)
    if problems:
        raise UserError(_joined(f"{path}", problems))
    return out


def _chat_messages(record: dict) -> list[dict]:
    """Messages ready for apply_chat_template: JSON-string tool-call arguments become dicts
    (Qwen2.5's template applies ``tojson`` to them; a string would be encoded twice)."""
    out = []
    for m in record["messages"]:
        m = {k: v for k, v in m.items()}
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                c = dict(c)
                fn = dict(c.get("function", {}))
                if isinstance(fn.get("arguments"), str):
                    fn["arguments"] = json.loads(fn["arguments"])
                c["function"] = fn
                calls.append(c)
            m["tool_calls"] = calls
        out.append(m)
    return out


def _template(tokenizer, messages, tools, add_generation_prompt=False) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    return list(ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tokenize_record(tokenizer, record: dict, mask_prompt: bool = True) -> Example:
    """Tokens of one conversation and the trained spans: every assistant turn (its text and the
    end-of-turn token), found by rendering each prefix of the conversation."""
    messages = _chat_messages(record)
    tools = record.get("tools")
    tokens = _template(tokenizer, messages, tools)
    if not mask_prompt:
        return Example(tokens, [(1, len(tokens))])
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before = _template(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else []
        upto = _template(tokenizer, messages[: i + 1], tools)
        start = _common_prefix(before, tokens)
        end = _common_prefix(upto, tokens)
        # The rendered turn ends with the end-of-turn token and a newline; train through the former.
        while end > start and end < len(tokens) and end < len(upto) and upto[end - 1] != tokens[end - 1]:
            end -= 1
        if end > start:
            spans.append((max(start, 1), end))
    return Example(tokens, spans)


def tokenize_split(tokenizer, recs: list[dict], settings: TrainSettings) -> TokenizedData:
    from tqdm import tqdm

    out = TokenizedData([])
    h = hashlib.sha256()
    for record in tqdm(recs, desc="tokenize", unit="ex", leave=False, disable=len(recs) < 200):
        ex = tokenize_record(tokenizer, record, settings.mask_prompt)
        h.update(json.dumps([ex.tokens, ex.spans]).encode())
        out.longest = max(out.longest, len(ex.tokens))
        if len(ex.tokens) > settings.max_seq_length:
            out.too_long += 1
            if settings.long_sequences == "drop":
                out.dropped += 1
                continue
            cut = settings.max_seq_length
            ex = Example(ex.tokens[:cut], [(s, min(e, cut)) for s, e in ex.spans if s < cut])
            out.truncated += 1
        if ex.n_trained == 0:
            out.dropped += 1
            continue
        out.examples.append(ex)
    out.fingerprint = h.hexdigest()
    return out


# ---------------------------------------------------------------- batches and loss


def _round_up(n: int, m: int = PAD_MULTIPLE) -> int:
    return max(m, m * ((n + m - 1) // m))


def make_batch(examples: list[Example]):
    """Arrays for :func:`make_loss`: inputs (B, L), trained positions, targets and weights (B, K)."""
    import mlx.core as mx
    import numpy as np

    length = _round_up(max(len(e.tokens) for e in examples) - 1)
    k = _round_up(max(e.n_trained for e in examples))
    b = len(examples)
    inputs = np.zeros((b, length), np.int32)
    pos = np.zeros((b, k), np.int32)
    targets = np.zeros((b, k), np.int32)
    weights = np.zeros((b, k), np.float32)
    for i, e in enumerate(examples):
        inputs[i, : len(e.tokens) - 1] = e.tokens[:-1]
        # A target at token index t is predicted from position t - 1.
        idx = np.concatenate([np.arange(s, t) for s, t in e.spans])
        pos[i, : len(idx)] = idx - 1
        targets[i, : len(idx)] = np.asarray(e.tokens, np.int32)[idx]
        weights[i, : len(idx)] = 1.0
    real = sum(len(e.tokens) for e in examples)
    return (mx.array(inputs), mx.array(pos), mx.array(targets), mx.array(weights)), real, b * (length + 1)


def batch_groups(examples: list[Example], batch_size: int) -> list[list[int]]:
    """Batches of examples of similar real token length (sorted, then cut into runs)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].tokens), i))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


class BatchStream:
    """The training data order: an epoch is a seeded permutation of length-bucketed batches.

    Micro-batch ``t`` is a pure function of (seed, t), so a resumed run sees the same batches."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int):
        import numpy as np

        self.examples = examples
        self.groups = batch_groups(examples, batch_size)
        self.seed = seed
        self._np = np
        self.real_tokens: dict[int, int] = {}
        self.padded_tokens: dict[int, int] = {}

    def group_at(self, t: int) -> list[int]:
        n = len(self.groups)
        epoch, i = divmod(t, n)
        perm = self._np.random.default_rng([self.seed, epoch]).permutation(n)
        return self.groups[perm[i]]

    def iterate(self, start: int):
        """A function with mlx-lm's ``iterate_batches`` signature yielding micro-batches from ``start``."""

        def iterate_batches(
            dataset=None, batch_size=None, max_seq_length=None, loop=False, seed=None, comm_group=None
        ):
            rank, size = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
            t = start
            while True:
                idx = self.group_at(t)[rank::size]
                arrays, real, padded = make_batch([self.examples[j] for j in idx])
                self.real_tokens[t + 1] = real * size
                self.padded_tokens[t + 1] = padded * size
                yield arrays
                t += 1

        return iterate_batches


def eval_batches(examples: list[Example], batch_size: int):
    """``iterate_batches`` for validation: length-sorted, every example once (last batch may be short)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].tokens), i))

    def iterate_batches(
        dataset=None, batch_size=batch_size, max_seq_length=None, loop=False, seed=None, comm_group=None
    ):
        rank, size = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size][rank::size]
            if idx:
                yield make_batch([examples[j] for j in idx])[0]

    return iterate_batches


def make_loss(model):
    """mlx-lm ``loss(model, *batch) -> (mean loss, tokens)`` over the trained positions only."""
    import mlx.core as mx
    import mlx.nn as nn

    split = getattr(model, "model_type", None) in SPLIT_HEAD_TYPES and hasattr(model, "model")

    def loss(model, inputs, pos, targets, weights):
        if split:
            h = model.model(inputs)
            h = mx.take_along_axis(h, pos[..., None], axis=1)
            if model.args.tie_word_embeddings:
                logits = model.model.embed_tokens.as_linear(h)
            else:
                logits = model.lm_head(h)
        else:
            logits = mx.take_along_axis(model(inputs), pos[..., None], axis=1)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * weights
        ntoks = weights.sum()
        return ce.sum() / ntoks, ntoks

    return loss


# ---------------------------------------------------------------- model setup


def _load_model(name: str):
    from mlx_lm import load

    path = Path(name)
    if not path.exists() and (name.count("/") != 1 or name.startswith((".", "/"))):
        raise UserError(f"model: {name} does not exist (a local model directory or a Hugging Face repo id)")
    try:
        return load(name)
    except Exception as e:  # mlx-lm raises many kinds (missing files, no network, bad config)
        raise UserError(
            f"model: could not load {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def _is_quantized(model) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def setup_model(model, s: TrainSettings) -> dict:
    """Freeze the model and add adapters (or unfreeze layers); return mlx-lm's adapter config keys."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers)
    num_layers = n_layers if s.num_layers == -1 else s.num_layers
    if num_layers > n_layers:
        raise UserError(f"num_layers: {num_layers} but the model has only {n_layers} layers")
    model.freeze()
    if s.fine_tune_type == "full":
        if _is_quantized(model):
            raise UserError(
                "fine_tune_type: full cannot train a quantized model (use lora/dora or a float base)"
            )
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
        return {"fine_tune_type": "full", "num_layers": num_layers, "lora_parameters": None}
    keys = target_keys(model, s.target_modules, num_layers)
    lora = {"rank": s.rank, "scale": s.lora_scale, "dropout": float(s.dropout)}
    if keys is not None:
        lora["keys"] = keys
    linear_to_lora_layers(model, num_layers, lora, use_dora=s.fine_tune_type == "dora")
    return {"fine_tune_type": s.fine_tune_type, "num_layers": num_layers, "lora_parameters": lora}


def make_optimizer(s: TrainSettings, total_updates: int):
    import mlx.optimizers as optim

    warmup = int(round(s.warmup * total_updates)) if s.warmup < 1 else int(s.warmup)
    warmup = min(warmup, max(total_updates - 1, 0))
    if s.lr_schedule == "cosine":
        main = optim.cosine_decay(s.learning_rate, max(total_updates - warmup, 1), s.min_learning_rate)
    else:
        main = s.learning_rate
    if warmup > 0:
        main_fn = main if callable(main) else (lambda _: s.learning_rate)
        lr = optim.join_schedules([optim.linear_schedule(0.0, s.learning_rate, warmup), main_fn], [warmup])
    else:
        lr = main
    if s.optimizer == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=s.weight_decay)
    return optim.Adam(learning_rate=lr)


# ---------------------------------------------------------------- outputs and checkpoints


def _save_adapter(model, out_dir: Path, adapter_config: dict) -> int:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` as a directory, atomically."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.trainable_parameters()))
    with fileio.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        mx.save_safetensors(str(tmp / "adapters.safetensors"), weights)
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return (out_dir / "adapters.safetensors").stat().st_size


def _save_adapter_files(model, out_dir: Path, adapter_config: dict) -> int:
    """Write the adapter files into an existing directory (each file atomically)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.trainable_parameters()))
    with fileio.atomic_path(out_dir / "adapters.safetensors") as tmp:
        mx.save_safetensors(str(tmp), weights)
    fileio.write_json(out_dir / "adapter_config.json", adapter_config)
    return (out_dir / "adapters.safetensors").stat().st_size


def step_seed(seed: int, step: int) -> int:
    """The RNG (dropout) is reseeded from (seed, step) after every optimizer update, so a resumed
    run draws the same dropout masks as an uninterrupted one (mlx's RNG state cannot be restored)."""
    return (seed * 1_000_003 + step) % (2**63)


def _save_checkpoint(ckpt_dir: Path, model, optimizer, step: int, state: dict, keep: int) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    target = ckpt_dir / f"step_{step:07d}"
    with fileio.atomic_path(target) as tmp:
        tmp.mkdir()
        mx.save_safetensors(
            str(tmp / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
        )
        opt = dict(tree_flatten(optimizer.state))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True) + "\n")
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep]:
        fileio._rmtree(old)


def latest_checkpoint(adapter_path: str | Path) -> Path | None:
    found = sorted(
        p for p in (Path(adapter_path) / "checkpoints").glob("step_*") if (p / "state.json").is_file()
    )
    return found[-1] if found else None


def _load_checkpoint(path: Path, model, optimizer) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    model.load_weights(str(path / "adapters.safetensors"), strict=False)
    opt = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt.items()))
    return json.loads((path / "state.json").read_text())


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


@contextlib.contextmanager
def _quiet_mlx_lm_ui():
    """mlx-lm's trainer prints a rich progress display; ours is tqdm, so mute its UI for the call."""
    from mlx_lm.tuner import trainer

    class Quiet:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __getattr__(self, name):
            return lambda *a, **k: None

    saved = trainer.TrainUI
    trainer.TrainUI = Quiet
    try:
        yield
    finally:
        trainer.TrainUI = saved


@contextlib.contextmanager
def _sigint_to_flag(flag: dict):
    """First Ctrl-C asks for a checkpoint and a clean stop; a second one interrupts at once."""

    def handler(signum, frame):
        if flag.get("stop"):
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- the run


def train(
    settings: TrainSettings,
    *,
    resume: bool = False,
    progress: bool = True,
    interrupt_at_step: int | None = None,
) -> dict:
    """Train and write the outputs in ``settings.adapter_path``; return the summary.

    ``resume`` continues from the newest checkpoint. ``interrupt_at_step`` stops after that step
    as Ctrl-C does (checkpoint, then stop), for tests and time-boxed runs.
    """
    import mlx.core as mx
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, evaluate
    from mlx_lm.tuner.trainer import train as mlx_train
    from tqdm import tqdm

    s = settings
    problems = validate_settings(s)
    if problems:
        raise UserError(_joined("settings", problems))
    world = mx.distributed.init()
    rank0 = world.rank() == 0
    out = Path(s.adapter_path)
    data = Path(s.data)
    train_file, valid_file = data / "train.jsonl", data / "valid.jsonl"
    if not train_file.is_file():
        raise UserError(f"data: {train_file} does not exist (run `mlx-tune data merge --phase N` to make it)")
    if not valid_file.is_file():
        raise UserError(f"data: {valid_file} does not exist (a validation split is required)")
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None:
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'} (train without --resume first)")
    train_recs, valid_recs = load_records(train_file), load_records(valid_file)

    model, tokenizer = _load_model(s.model)
    train_data = tokenize_split(tokenizer, train_recs, s)
    valid_data = tokenize_split(tokenizer, valid_recs, s)
    if len(train_data.examples) < s.batch_size:
        raise UserError(
            f"data: {train_file} has {len(train_data.examples)} usable examples, fewer than batch_size {s.batch_size}"
        )
    if not valid_data.examples:
        raise UserError(f"data: {valid_file} has no usable examples")
    if s.batch_size % world.size():
        raise UserError(f"batch_size: {s.batch_size} is not divisible by the {world.size()} workers")

    stream = BatchStream(train_data.examples, s.batch_size, s.seed)
    iters = s.iters if s.iters is not None else max(1, int(s.epochs * len(stream.groups)))
    accum = s.grad_accumulation_steps
    total_updates = max(1, iters // accum)
    mx.random.seed(s.seed)
    adapter_keys = setup_model(model, s)
    optimizer = make_optimizer(s, total_updates)
    loss = make_loss(model)
    val_iter = eval_batches(valid_data.examples, s.batch_size)

    resolved = {k: v for k, v in dataclasses.asdict(s).items()}
    resolved["iters"] = iters
    resolved["lora_scale"] = s.lora_scale
    adapter_config = {**resolved, **adapter_keys, "model": s.model}
    run_state = {
        "data_fingerprint": train_data.fingerprint,
        "settings": {k: resolved[k] for k in ("model", "batch_size", "seed", "fine_tune_type", "iters")},
    }
    metrics: list[dict] = []
    start = 0
    extra = {
        "train_seconds": 0.0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "val_first": None,
        "best": None,
        "best_step": 0,
        "bad_evals": 0,
    }
    if ckpt is not None:
        saved = _load_checkpoint(ckpt, model, optimizer)
        if (
            saved["data_fingerprint"] != run_state["data_fingerprint"]
            or saved["settings"] != run_state["settings"]
        ):
            raise UserError(
                f"--resume: {ckpt} was made with other data or settings ({saved['settings']}); "
                "train without --resume to start over"
            )
        start = saved["step"]
        mx.random.seed(step_seed(s.seed, start))
        extra.update(saved["extra"])
        if (out / "metrics.jsonl").is_file():
            metrics = [m for m in fileio.read_jsonl(out / "metrics.jsonl") if m["step"] <= start]
    trainable = sum(v.size for _, v in _flat(model.trainable_parameters()))

    def write_metrics():
        if rank0:
            fileio.write_jsonl(out / "metrics.jsonl", metrics)

    def run_eval() -> float:
        v = evaluate(
            model=model,
            dataset=valid_data.examples,
            batch_size=s.batch_size,
            num_batches=s.val_batches,
            max_seq_length=s.max_seq_length,
            loss=loss,
            iterate_batches=val_iter,
        )
        model.train()
        return v

    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out / "adapter_config.json", adapter_config)
    if start == 0:
        val = run_eval()
        extra["val_first"] = extra["best"] = val
        metrics.append({"step": 0, "val_loss": round(val, 6)})
        write_metrics()
        if rank0:
            _save_adapter(model, out / "best", adapter_config)

    remaining = iters - start
    flag: dict = {}
    bar = tqdm(total=iters, initial=start, desc="train", unit="it", disable=not (progress and rank0))
    window = {"loss": 0.0, "n": 0, "secs": 0.0, "real": 0}
    save_every = _round_up(s.save_every, accum)

    class Callback(TrainingCallback):
        def on_train_loss_report(self, info: dict):
            step = start + info["iteration"]
            secs = 1.0 / info["iterations_per_second"]
            real = stream.real_tokens.pop(step, 0)
            extra["train_seconds"] += secs
            extra["real_tokens"] += real
            extra["padded_tokens"] += stream.padded_tokens.pop(step, 0)
            window["loss"] += info["train_loss"]
            window["n"] += 1
            window["secs"] += secs
            window["real"] += real
            bar.update(1)
            bar.set_postfix(loss=f"{info['train_loss']:.3f}", tok_s=f"{real / secs:.0f}")
            at_update = step % accum == 0
            if at_update:
                mx.random.seed(step_seed(s.seed, step))
            row = None
            if step % s.steps_per_report == 0 or step == iters:
                row = {
                    "step": step,
                    "train_loss": round(window["loss"] / window["n"], 6),
                    "learning_rate": float(f"{info['learning_rate']:.6g}"),
                    "tokens_per_second": round(window["real"] / window["secs"], 1),
                    "real_tokens": window["real"],
                    "seconds": round(window["secs"], 4),
                    "peak_memory_gb": round(info["peak_memory"], 4),
                }
                window.update(loss=0.0, n=0, secs=0.0, real=0)
            if step % s.steps_per_eval == 0 or step == iters:
                val = run_eval()
                row = row or {"step": step}
                row["val_loss"] = round(val, 6)
                if val < extra["best"]:
                    extra.update(best=val, best_step=step, bad_evals=0)
                    if rank0:
                        _save_adapter(model, out / "best", adapter_config)
                else:
                    extra["bad_evals"] += 1
            if row:
                metrics.append(row)
                write_metrics()
            stop = None
            if s.early_stopping_patience and extra["bad_evals"] >= s.early_stopping_patience:
                stop = "early_stop"
            elif (
                (flag.get("stop") or (interrupt_at_step is not None and step >= interrupt_at_step))
                and at_update
                and step < iters
            ):
                stop = "interrupted"
            if at_update and rank0 and (step % save_every == 0 or stop) and step < iters:
                _save_checkpoint(
                    out / "checkpoints",
                    model,
                    optimizer,
                    step,
                    {**run_state, "extra": extra},
                    s.keep_checkpoints,
                )
            if stop:
                extra["stopped_at"] = step
                raise _Stop(stop)

    t0 = time.perf_counter()
    status = "completed"
    scratch = out / "checkpoints" / ".mlx_lm_final.safetensors"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    args = TrainingArgs(
        batch_size=s.batch_size,
        iters=remaining,
        val_batches=s.val_batches,
        steps_per_report=1,
        steps_per_eval=iters + 1,
        steps_per_save=iters + 1,
        max_seq_length=s.max_seq_length,
        adapter_file=str(scratch),
        grad_checkpoint=s.grad_checkpoint,
        grad_accumulation_steps=accum,
    )
    try:
        if remaining > 0:
            with _quiet_mlx_lm_ui(), _sigint_to_flag(flag):
                mlx_train(
                    model=model,
                    optimizer=optimizer,
                    train_dataset=train_data.examples,
                    val_dataset=None,
                    args=args,
                    loss=loss,
                    iterate_batches=stream.iterate(start),
                    training_callback=Callback(),
                )
    except _Stop as e:
        status = e.reason
    finally:
        bar.close()
        scratch.unlink(missing_ok=True)
    step = extra.get("stopped_at", iters) if status != "completed" else iters

    summary = {
        "status": status,
        "step": step,
        "iters": iters,
        "val_loss_first": _r(extra["val_first"]),
        "val_loss_best": _r(extra["best"]),
        "best_step": extra["best_step"],
        "improvement_pct": _r(100.0 * (extra["val_first"] - extra["best"]) / extra["val_first"])
        if extra["val_first"]
        else None,
        "train_seconds": _r(extra["train_seconds"], 3),
        "wall_seconds_this_run": _r(time.perf_counter() - t0, 3),
        "peak_memory_gb": _r(mx.get_peak_memory() / 1e9, 4),
        "trainable_params": int(trainable),
        "tokens_per_second": _r(extra["real_tokens"] / extra["train_seconds"], 1)
        if extra["train_seconds"]
        else None,
        "real_tokens": extra["real_tokens"],
        "padding_share": _r(1 - extra["real_tokens"] / extra["padded_tokens"], 4)
        if extra["padded_tokens"]
        else None,
        "train_examples": len(train_data.examples),
        "valid_examples": len(valid_data.examples),
        "too_long": train_data.too_long + valid_data.too_long,
        "dropped": train_data.dropped + valid_data.dropped,
        "truncated": train_data.truncated + valid_data.truncated,
        "longest_tokens": max(train_data.longest, valid_data.longest),
    }
    if rank0:
        summary["adapter_bytes"] = _save_adapter_files(model, out, adapter_config)
        fileio.write_json(out / "summary.json", summary)
    return summary


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def _r(x, nd: int = 6):
    return None if x is None else round(float(x), nd)


def describe(summary: dict) -> str:
    """A few lines for the terminal."""
    s = summary
    lines = [
        f"{s['status']} at step {s['step']}/{s['iters']}: val loss {s['val_loss_first']} -> best "
        f"{s['val_loss_best']} (step {s['best_step']}, {s['improvement_pct']}% lower)",
        f"{s['tokens_per_second']} tokens/s (real tokens, padding share {s['padding_share']}), "
        f"{s['train_seconds']} s training, peak memory {s['peak_memory_gb']} GB",
        f"{s['trainable_params']} trainable parameters, adapter {s.get('adapter_bytes')} bytes; "
        f"{s['train_examples']} train / {s['valid_examples']} valid examples",
    ]
    if s["too_long"]:
        lines.append(
            f"{s['too_long']} examples longer than max_seq_length ({s['dropped']} dropped, "
            f"{s['truncated']} truncated; longest {s['longest_tokens']} tokens)"
        )
    return "\n".join(lines)
