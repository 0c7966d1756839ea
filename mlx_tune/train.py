"""Train LoRA / DoRA / full fine-tunes in-process on mlx-lm's tuner (see DESIGN.md, "Training outputs").

We call ``mlx_lm.tuner.trainer.train`` with our own ``loss`` and ``iterate_batches``. Read in order:

- :mod:`mlx_tune.train_config`: the settings, presets and their validation;
- :mod:`mlx_tune.batching`: tokenizing (every assistant turn trained), length-bucketed batches and
  the loss, whose output projection runs only on trained positions;
- :mod:`mlx_tune.prefix`: shared-prefix batches (a batch's common system + tools prefix runs once);
- this module: model setup, the optimizer, checkpoints (adapter, optimizer, RNG, step, data
  order) for a real resume, the run itself and its summary.

Full fine-tunes (``fine_tune_type: full``) save the trained layers' weights as
``adapters.safetensors`` with ``fine_tune_type: full`` in ``adapter_config.json``; mlx-lm's
``load(model, adapter_path=...)`` loads them onto the base unchanged (it skips the LoRA conversion
and loads the weights over the base's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from pathlib import Path

from mlx_tune import UserError, fileio, interchange, prefix

# Re-exported: other modules and users import these from mlx_tune.train.
from mlx_tune.batching import (  # noqa: F401
    PAD_MULTIPLE,
    BatchStream,
    Example,
    TokenizedData,
    _round_up,
    _template,
    batch_groups,
    eval_batches,
    load_records,
    make_batch,
    make_loss,
    output_head,
    say_once,
    tokenize_record,
    tokenize_split,
)
from mlx_tune.train_config import (  # noqa: F401
    FIELDS,
    FINE_TUNE_TYPES,
    PRESETS_DIR,
    SHARED_PREFIX,
    TrainSettings,
    _joined,
    load_preset,
    resolve_settings,
    validate_settings,
)

# ---------------------------------------------------------------- model setup


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
        if s.train_embeddings:
            model.unfreeze()
            for layer in model.layers[: n_layers - num_layers]:
                layer.freeze()
        else:
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


STOP_SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(KeyboardInterrupt):
    """A second SIGINT or SIGTERM during training: stopped at once (``signal`` names it)."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal = signal_name


@contextlib.contextmanager
def _signals_to_flag(flag: dict):
    """SIGINT (Ctrl-C) and SIGTERM (a pre-empted job, a closed terminal) ask for a checkpoint and a
    clean stop, recording ``flag["signal"]``; a second one interrupts at once (:class:`Interrupted`)."""

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if flag.get("stop"):
            raise Interrupted(name)
        flag["stop"] = True
        flag["signal"] = name

    previous = {}
    try:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _all_finite(tree) -> bool:
    """Whether every array in a parameter tree is finite (one reduction per array, evaluated once)."""
    import mlx.core as mx

    flags = [mx.isfinite(v).all() for _, v in _flat(tree)]
    return bool(mx.array(flags).all().item()) if flags else True


class Diverged(UserError):
    """Training stopped because the loss (or the trained weights) stopped being finite numbers."""


@contextlib.contextmanager
def _grad_checkpointed(model, on: bool):
    """Gradient checkpointing for the call, then the layer class as it was.

    Checkpointing patches the layer *class* (mlx-lm's way); leaving it patched would change every
    later model of that class in the process (and mlx-lm's own patch loses the shared prefix's
    K/V gradient, so :func:`mlx_tune.prefix.grad_checkpoint` is used for both paths)."""
    if not on:
        yield
        return
    cls = type(model.layers[0])
    saved = cls.__dict__.get("__call__")
    prefix.grad_checkpoint(model.layers[0])
    try:
        yield
    finally:
        if saved is None:
            del cls.__call__
        else:
            cls.__call__ = saved


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
    shared = False
    if s.shared_prefix == "auto":
        # Probed on the bare model (no adapters yet, no RNG use), so the run is unchanged by it.
        reason = prefix.shared_prefix_support(model)
        shared = reason is None
        if reason and rank0:
            say_once(f"shared prefix: off for this model ({reason}); using the plain path")
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

    stream = BatchStream(train_data.examples, s.batch_size, s.seed, shared_prefix=shared)
    iters = s.iters if s.iters is not None else max(1, int(s.epochs * len(stream.groups)))
    accum = s.grad_accumulation_steps
    total_updates = max(1, iters // accum)
    mx.random.seed(s.seed)
    adapter_keys = setup_model(model, s)
    optimizer = make_optimizer(s, total_updates)
    if shared:
        loss = prefix.make_prefix_loss(model)
        val_iter = prefix.prefix_eval_batches(valid_data.examples, s.batch_size)
    else:
        loss = make_loss(model)
        val_iter = eval_batches(valid_data.examples, s.batch_size)

    resolved = {k: v for k, v in dataclasses.asdict(s).items()}
    resolved["iters"] = iters
    resolved["lora_scale"] = s.lora_scale
    resolved["shared_prefix_used"] = shared
    # mlx-lm's own keys (lr_schedule as its mapping, optimizer_config), so `mlx_lm lora -c` on this
    # file trains with the same schedule and weight decay.
    adapter_config = {
        **resolved,
        **adapter_keys,
        **interchange.mlx_lm_training_keys(s, total_updates),
        "model": s.model,
    }
    run_state = {
        "data_fingerprint": train_data.fingerprint,
        "settings": {
            k: resolved[k]
            for k in ("model", "batch_size", "seed", "fine_tune_type", "iters", "shared_prefix_used")
        },
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
            or {"shared_prefix_used": False, **saved["settings"]} != run_state["settings"]
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
        if not math.isfinite(val):
            raise Diverged(
                f"validation loss is {val} before any training step: the base model's outputs are not finite"
            )
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

    def diverge(step: int, why: str):
        extra["stopped_at"] = step
        flag["diverged"] = why
        raise _Stop("diverged")

    class Callback(TrainingCallback):
        def on_train_loss_report(self, info: dict):
            step = start + info["iteration"]
            if not math.isfinite(info["train_loss"]):
                diverge(step, f"training loss is {info['train_loss']} at step {step}")
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
                if not math.isfinite(val):
                    diverge(step, f"validation loss is {val} at step {step}")
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
                if not _all_finite(model.trainable_parameters()):
                    diverge(step, f"the trained weights are not finite after step {step}")
                _save_checkpoint(
                    out / "checkpoints",
                    model,
                    optimizer,
                    step,
                    {**run_state, "extra": extra},
                    s.keep_checkpoints,
                )
                flag["good"] = out / "checkpoints" / f"step_{step:07d}"
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
        grad_checkpoint=False,  # applied above
        grad_accumulation_steps=accum,
    )
    try:
        if remaining > 0:
            with _quiet_mlx_lm_ui(), _signals_to_flag(flag), _grad_checkpointed(model, s.grad_checkpoint):
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
    if status != "diverged" and not _all_finite(model.trainable_parameters()):
        status, flag["diverged"] = "diverged", f"the trained weights are not finite at step {step}"

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
        "shared_prefix": shared,
        "train_examples": len(train_data.examples),
        "valid_examples": len(valid_data.examples),
        "too_long": train_data.too_long + valid_data.too_long,
        "dropped": train_data.dropped + valid_data.dropped,
        "truncated": train_data.truncated + valid_data.truncated,
        "longest_tokens": max(train_data.longest, valid_data.longest),
    }
    if flag.get("signal"):
        summary["signal"] = flag["signal"]
    if status == "diverged":
        # Nothing of this run's weights is saved: best/ and checkpoints/ hold only finite states.
        summary["error"] = flag["diverged"]
        if rank0:
            fileio.write_json(out / "summary.json", summary)
        good = flag.get("good") or ckpt  # this run's, never an older run's left in the folder
        where = (
            f"the last good checkpoint is {good} (continue from it with --resume, e.g. with a lower "
            "--learning-rate)"
            if good
            else "no checkpoint was saved before it (lower --learning-rate and train again)"
        )
        raise Diverged(f"training diverged: {flag['diverged']}; no adapter written, {where}")
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
        f"{s['tokens_per_second']} tokens/s (real tokens, padding share {s['padding_share']}, "
        f"shared prefix {'on' if s.get('shared_prefix') else 'off'}), "
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
