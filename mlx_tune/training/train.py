"""Train LoRA / DoRA / full fine-tunes in-process with mlx (see DESIGN.md, "Training outputs").

:func:`train` prepares a run and hands it to the loop. Read in order:

- :mod:`mlx_tune.training.train_config`: the settings, presets and their validation;
- :mod:`mlx_tune.training.batching`: tokenizing (every assistant turn trained), length-bucketed batches and
  the loss, whose output projection runs only on trained positions;
- :mod:`mlx_tune.training.prefix`: shared-prefix batches (a batch's common system + tools prefix runs once);
- :mod:`mlx_tune.training.packing`: packed batches (several examples per row, attention kept apart);
- :mod:`mlx_tune.training.train_setup`: loading the base, adapters, the optimizer and its schedule;
- :mod:`mlx_tune.training.loop`: the training loop (compiled step, reporting, validation, checkpoints, stops);
- :mod:`mlx_tune.training.checkpoints`: the adapter and resumable checkpoints on disk;
- this module: data, model and resume state for a run, then its summary.

Full fine-tunes (``fine_tune_type: full``) save the trained layers' weights as
``adapters.safetensors`` with ``fine_tune_type: full`` in ``adapter_config.json``; mlx-lm's
``load(model, adapter_path=...)`` loads them onto the base unchanged (it skips the LoRA conversion
and loads the weights over the base's).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from mlx_tune import UserError, fileio
from mlx_tune.models.model_spec import load_model

# Re-exported: other modules and users import these from mlx_tune.training.train.
from mlx_tune.rendering import Example, _template, output_head, tokenize_record  # noqa: F401
from mlx_tune.training import interchange, packing, prefix, run_folder
from mlx_tune.training.batching import (  # noqa: F401
    PAD_MULTIPLE,
    BatchStream,
    TokenizedData,
    batch_groups,
    eval_batches,
    load_records,
    make_batch,
    make_loss,
    say_once,
    tokenize_split,
)
from mlx_tune.training.checkpoints import latest_checkpoint, load_checkpoint, save_adapter_files, step_seed  # noqa: F401
from mlx_tune.training.loop import Diverged, Interrupted, Job, evaluate, new_counters, signals_to_flag  # noqa: F401
from mlx_tune.training.loop import run as run_loop
from mlx_tune.training.train_config import (  # noqa: F401
    FIELDS,
    TrainSettings,
    _joined,
    load_preset,
    resolve_settings,
    validate_settings,
)
from mlx_tune.training.train_setup import make_optimizer, setup_model, target_keys  # noqa: F401

# Settings a resume must share with its checkpoint (iters may grow: see _check_resume).
RESUME_KEYS = (
    "model",
    "batch_size",
    "seed",
    "fine_tune_type",
    "shared_prefix_used",
    "packing_used",
    "decision_weight",
)


def train(
    settings: TrainSettings,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    progress: bool = True,
    interrupt_at_step: int | None = None,
) -> dict:
    """Train and write the outputs in ``settings.adapter_path``; return the summary.

    The run writes into a staging folder and swaps it in at the end (:mod:`mlx_tune.training.run_folder`):
    a non-empty adapter folder is replaced only with ``overwrite``. ``resume``: ``True`` continues
    the newest checkpoint (to the same or a larger ``iters``), ``"auto"`` does so if an interrupted
    run exists and starts fresh otherwise. ``interrupt_at_step`` stops after that step as Ctrl-C
    does (checkpoint, then stop), for tests and time-boxed runs.
    """
    import mlx.core as mx

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
    train_recs, valid_recs = load_records(train_file, s.task), load_records(valid_file, s.task)

    # The model and the data.
    model, tokenizer = load_model(s.model, labels=("--model", "--adapter-path"))
    plan = run_folder.plan(out, resume, overwrite, rank0)  # after the inputs' problems
    shared = False
    if s.shared_prefix == "auto":
        # Probed on the bare model (no adapters yet, no RNG use), so the run is unchanged by it.
        reason = prefix.shared_prefix_support(model)
        shared = reason is None
        if reason and rank0:
            say_once(f"shared prefix: off for this model ({reason}); using the plain path")
    train_data = tokenize_split(tokenizer, train_recs, s, s.decision_weight)
    valid_data = tokenize_split(tokenizer, valid_recs, s)
    if len(train_data.examples) < s.batch_size:
        raise UserError(
            f"data: {train_file} has {len(train_data.examples)} usable examples, fewer than batch_size "
            f"{s.batch_size}{_why_unusable(train_data, s)}"
        )
    if not valid_data.examples:
        raise UserError(f"data: {valid_file} has no usable examples{_why_unusable(valid_data, s)}")
    if s.batch_size % world.size():
        raise UserError(f"batch_size: {s.batch_size} is not divisible by the {world.size()} workers")
    packed, note = packing.decide(s.packing, model, train_data.examples, s.batch_size, shared, world.size())
    if note and rank0:
        say_once(note)
    if packed is not None:
        shared = False
        groups, build = packed.groups(train_data.examples), packed.build
        valid = packed.eval_batches(valid_data.examples)
    elif shared:
        groups, build = (
            prefix.prefix_batch_groups(train_data.examples, s.batch_size),
            prefix.make_prefix_batch,
        )
        valid = prefix.prefix_eval_batches(valid_data.examples, s.batch_size)
    else:
        groups, build = batch_groups(train_data.examples, s.batch_size), make_batch
        valid = eval_batches(valid_data.examples, s.batch_size)
    stream = BatchStream(train_data.examples, groups, build, s.seed)
    iters = s.iters if s.iters is not None else max(1, int(s.epochs * len(groups)))
    total_updates = max(1, iters // s.grad_accumulation_steps)

    # Adapters, the optimizer and the loss.
    mx.random.seed(s.seed)
    adapter_keys = setup_model(model, s)
    optimizer = make_optimizer(s, total_updates)
    if packed is not None:
        loss = packing.make_packed_loss(model)
    else:
        loss = prefix.make_prefix_loss(model) if shared else make_loss(model)

    resolved = dataclasses.asdict(s)
    resolved.update(
        iters=iters, lora_scale=s.lora_scale, shared_prefix_used=shared, packing_used=packed is not None
    )
    # mlx-lm's own keys (lr_schedule as its mapping, optimizer_config), so `mlx_lm lora -c` on this
    # file trains with the same schedule and weight decay.
    adapter_config = {
        **resolved,
        **adapter_keys,
        **interchange.mlx_lm_training_keys(s, total_updates),
        "model": s.model,
    }
    job = Job(
        settings=s,
        model=model,
        optimizer=optimizer,
        loss=loss,
        stream=stream,
        valid=valid,
        out=out,
        iters=iters,
        start=0,
        adapter_config=adapter_config,
        run_state={
            "data_fingerprint": train_data.fingerprint,
            "settings": {k: resolved[k] for k in (*RESUME_KEYS, "iters")},
        },
        counters=new_counters(),
    )
    if plan.checkpoint is not None:
        _resume(job, plan, overwrite)
    trainable = sum(v.size for v in _leaves(model.trainable_parameters()))
    if world.size() > 1:  # every worker has read the checkpoint before rank 0 moves its folder
        mx.eval(mx.distributed.all_sum(mx.array(1), stream=mx.cpu))
    if rank0:
        job.out = run_folder.materialize(plan)
        fileio.write_json(job.out / "adapter_config.json", adapter_config)

    t0 = time.perf_counter()
    outcome = run_loop(job, progress=progress, interrupt_at_step=interrupt_at_step)
    c = job.counters
    summary = {
        "status": outcome.status,
        "step": outcome.step,
        "iters": iters,
        "val_loss_first": _r(c["val_first"]),
        "val_loss_best": _r(c["best"]),
        "best_step": c["best_step"],
        "improvement_pct": _r(100.0 * (c["val_first"] - c["best"]) / c["val_first"])
        if c["val_first"]
        else None,
        "train_seconds": _r(c["train_seconds"], 3),
        "wall_seconds_this_run": _r(time.perf_counter() - t0, 3),
        "peak_memory_gb": _r(mx.get_peak_memory() / 1e9, 4),
        "trainable_params": int(trainable),
        "tokens_per_second": _r(c["real_tokens"] / c["train_seconds"], 1) if c["train_seconds"] else None,
        "real_tokens": c["real_tokens"],
        "padding_share": _r(1 - c["real_tokens"] / c["padded_tokens"], 4) if c["padded_tokens"] else None,
        "shared_prefix": shared,
        "packing": packed is not None,
        "train_examples": len(train_data.examples),
        "valid_examples": len(valid_data.examples),
        "too_long": train_data.too_long + valid_data.too_long,
        "dropped": train_data.dropped + valid_data.dropped,
        "truncated": train_data.truncated + valid_data.truncated,
        "longest_tokens": max(train_data.longest, valid_data.longest),
    }
    if outcome.signal:
        summary["signal"] = outcome.signal
    if outcome.status == "diverged":
        # Nothing of this run's weights is saved: best/ and checkpoints/ hold only finite states.
        summary["error"] = outcome.error
        final = job.out
        if rank0:
            fileio.write_json(job.out / "summary.json", summary)
            final = run_folder.finish(job.out, out, outcome.status)
        good = outcome.last_checkpoint or plan.checkpoint  # this run's, never an older run's
        if good is not None and good.is_relative_to(job.out):
            good = final / good.relative_to(job.out)
        where = (
            f"the last good checkpoint is {good} (continue from it with --resume, e.g. with a lower "
            "--learning-rate)"
            if good
            else "no checkpoint was saved before it (lower --learning-rate and train again)"
        )
        raise Diverged(f"training diverged: {outcome.error}; no adapter written, {where}")
    if rank0:
        if outcome.status in run_folder.FINISHED:
            summary["adapter_bytes"] = save_adapter_files(model, job.out, adapter_config)
        fileio.write_json(job.out / "summary.json", summary)
        final = run_folder.finish(job.out, out, outcome.status)
        if final != out:
            summary["run_folder"] = str(final)
    return summary


def _resume(job: Job, plan: run_folder.Plan, overwrite: bool) -> None:
    """Load the plan's checkpoint into ``job`` (weights, optimizer, step, counters, metrics up to
    its step), after checking it was made by this data and these settings. A larger ``iters``
    goes on training (the schedule is recomputed for the new length); a smaller one is refused."""
    import mlx.core as mx

    ckpt = plan.checkpoint
    saved = json.loads((ckpt / "state.json").read_text())
    have = {"shared_prefix_used": False, "packing_used": False, "decision_weight": 1.0, **saved["settings"]}
    want = job.run_state["settings"]
    if saved["data_fingerprint"] != job.run_state["data_fingerprint"] or any(
        have.get(k) != want[k] for k in RESUME_KEYS
    ):
        if plan.auto and overwrite:
            say_once(f"--resume auto: {ckpt} was made with other data or settings; starting over")
            plan.checkpoint = plan.source = None
            return
        raise UserError(
            f"--resume: {ckpt} was made with other data or settings "
            f"({ {k: have.get(k) for k in RESUME_KEYS} }); train with --overwrite instead to start over"
        )
    if job.iters < have["iters"]:
        raise UserError(
            f"--resume: iters {job.iters} is fewer than the {have['iters']} of the run in {plan.source} "
            "(resume continues to the same or a larger --iters/--epochs)"
        )
    saved = load_checkpoint(ckpt, job.model, job.optimizer)
    job.start = saved["step"]
    mx.random.seed(step_seed(job.settings.seed, job.start))
    job.counters.update(saved["extra"])
    if (plan.source / "metrics.jsonl").is_file():
        rows = fileio.read_jsonl(plan.source / "metrics.jsonl")
        job.metrics[:] = [m for m in rows if m["step"] <= job.start]


def _why_unusable(data: TokenizedData, s: TrainSettings) -> str:
    """Why examples were dropped, for the "too few usable examples" errors."""
    if not data.dropped:
        return ""
    if data.too_long:
        return (
            f" ({data.dropped} dropped: {data.too_long} longer than max_seq_length {s.max_seq_length}, "
            f"the longest {data.longest} tokens; raise --max-seq-length or use --long-sequences truncate)"
        )
    return f" ({data.dropped} dropped: no assistant tokens to train)"


def _leaves(tree):
    from mlx.utils import tree_flatten

    return [v for _, v in tree_flatten(tree)]


def _r(x, nd: int = 6):
    return None if x is None else round(float(x), nd)


def describe(summary: dict) -> str:
    """A few lines for the terminal."""
    s = summary
    lines = [
        f"{s['status']} at step {s['step']}/{s['iters']}: val loss {s['val_loss_first']} -> best "
        f"{s['val_loss_best']} (step {s['best_step']}, {s['improvement_pct']}% lower)",
        f"{s['tokens_per_second']} tokens/s (real tokens, padding share {s['padding_share']}, "
        f"shared prefix {'on' if s.get('shared_prefix') else 'off'}{', packed' if s.get('packing') else ''}), "
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
