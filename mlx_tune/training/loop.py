"""The training loop, readable top to bottom: :func:`run`.

Each iteration runs one compiled step on a micro-batch (:func:`make_step`: loss and gradients,
gradient accumulation, the gradients of all workers averaged, the optimizer update), then, in
order: divergence check, reporting, validation and the best adapter, the stop decision (early
stopping, a signal, a test's ``interrupt_at_step``), and checkpointing. :mod:`mlx_tune.training.train`
prepares a :class:`Job` (data, model, optimizer, resume state) and writes the summary.

Several workers (``mlx.launch``, ``mx.distributed``) each run this loop on their share of every batch;
they agree on every decision because every number a decision reads (losses, validation, stop
requests) is summed over the workers first. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlx_tune import UserError, fileio
from mlx_tune.training.batching import BatchStream, _round_up
from mlx_tune.training.checkpoints import save_adapter, save_checkpoint, step_seed
from mlx_tune.training.grad_checkpoint import checkpointed_layers
from mlx_tune.training.train_config import TrainSettings

STOP_SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(KeyboardInterrupt):
    """A second SIGINT or SIGTERM during training: stopped at once (``signal`` names it)."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal = signal_name


class Diverged(UserError):
    """Training stopped because the loss (or the trained weights) stopped being finite numbers."""


@dataclass
class Job:
    """Everything one run of the loop needs; counters and metrics are updated in place."""

    settings: TrainSettings
    model: object
    optimizer: object
    loss: object
    """``loss(model, *arrays) -> (mean loss, trained tokens)``."""
    stream: BatchStream
    valid: object
    """``valid(rank, size)`` -> this worker's validation batches (arrays for ``loss``)."""
    out: Path
    """The folder this run writes (``metrics.jsonl``, ``best/``, ``checkpoints/``)."""
    iters: int
    start: int
    adapter_config: dict
    run_state: dict
    """Saved in every checkpoint's ``state.json`` (what a resume must match)."""
    counters: dict = field(default_factory=dict)
    """``train_seconds``, ``real_tokens``, ``padded_tokens``, ``val_first``, ``best``, ``best_step``,
    ``bad_evals``: carried over a resume in the checkpoint."""
    metrics: list = field(default_factory=list)


@dataclass
class Outcome:
    status: str
    """``completed``, ``early_stop``, ``interrupted`` or ``diverged``."""
    step: int
    signal: str | None = None
    error: str | None = None
    """Why it diverged."""
    last_checkpoint: Path | None = None
    """This run's newest checkpoint (all of its weights finite)."""


def new_counters() -> dict:
    return {
        "train_seconds": 0.0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "val_first": None,
        "best": None,
        "best_step": 0,
        "bad_evals": 0,
    }


# ---------------------------------------------------------------- the step and validation


def make_step(model, optimizer, loss, accum: int, workers: int):
    """``(step, state)``: ``step(batch, grads, update) -> (loss, grads)`` compiled over ``state``.

    ``grads`` carries the sum of the micro-batches' gradients since the last update (``None`` after
    one). With several workers, each worker's gradient is weighted by its share of the trained
    tokens, so their average is the gradient of the mean loss over the whole batch, as one worker
    computing that batch gets (and the returned loss is that mean)."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_map

    value_and_grad = nn.value_and_grad(model, loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, grads, update: bool):
        (value, ntoks), g = value_and_grad(model, *batch)
        if workers > 1:
            total = mx.distributed.all_sum(ntoks, stream=mx.cpu)
            g = tree_map(lambda x: x * (ntoks * workers / total), g)
            value = mx.distributed.all_sum(value * ntoks, stream=mx.cpu) / total
        if grads is not None:
            g = tree_map(lambda x, y: x + y, g, grads)
        if update:
            g = nn.average_gradients(g)
            if accum > 1:
                g = tree_map(lambda x: x / accum, g)
            optimizer.update(model, g)
            g = None
        return value, g

    return step, state


def evaluate(model, loss, batches, num_batches: int = -1) -> float:
    """Mean loss per trained token over ``batches`` (the first ``num_batches``; -1: all), summed
    over the workers; the model is back in training mode after."""
    import mlx.core as mx

    model.eval()
    total, ntoks = mx.array(0.0), mx.array(0)
    for i, batch in enumerate(batches):
        if i == num_batches:
            break
        value, n = loss(model, *batch)
        total += value * n
        ntoks += n
        mx.eval(total, ntoks)
    total = mx.distributed.all_sum(total, stream=mx.cpu)
    ntoks = mx.distributed.all_sum(ntoks, stream=mx.cpu)
    model.train()
    return (total / ntoks).item()


def all_finite(tree) -> bool:
    """Whether every array in a parameter tree is finite (one reduction per array, evaluated once)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    flags = [mx.isfinite(v).all() for _, v in tree_flatten(tree)]
    return bool(mx.array(flags).all().item()) if flags else True


@contextlib.contextmanager
def signals_to_flag(flag: dict):
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


def _any_worker(world, wants: bool) -> bool:
    """Whether any worker ``wants`` (one worker's Ctrl-C stops them all at the same step)."""
    import mlx.core as mx

    if world.size() == 1:
        return wants
    return mx.distributed.all_sum(mx.array(int(wants)), stream=mx.cpu).item() > 0


# ---------------------------------------------------------------- the loop


def run(job: Job, *, progress: bool = True, interrupt_at_step: int | None = None) -> Outcome:
    """Train from ``job.start`` to ``job.iters``; return how and where it stopped."""
    import mlx.core as mx
    from tqdm import tqdm

    s, model, c = job.settings, job.model, job.counters
    world = mx.distributed.init()
    rank0 = world.rank() == 0
    accum = s.grad_accumulation_steps
    save_every = _round_up(s.save_every, accum)
    outcome = Outcome("completed", job.iters)

    def add_metrics(row: dict) -> None:
        job.metrics.append(row)
        if rank0:
            fileio.write_jsonl(job.out / "metrics.jsonl", job.metrics)

    def validate() -> float:
        return evaluate(model, job.loss, job.valid(world.rank(), world.size()), s.val_batches)

    model.train()
    if job.start == 0:  # the base model's validation loss; best/ starts as the untrained adapter
        val = validate()
        if not math.isfinite(val):
            raise Diverged(
                f"validation loss is {val} before any training step: the base model's outputs are not finite"
            )
        c.update(val_first=val, best=val)
        add_metrics({"step": 0, "val_loss": round(val, 6)})
        if rank0:
            save_adapter(model, job.out / "best", job.adapter_config)

    step_fn, state = make_step(model, job.optimizer, job.loss, accum, world.size())
    batches = job.stream.iterate(job.start, world.rank(), world.size())
    window = {"loss": 0.0, "n": 0, "secs": 0.0, "real": 0}
    flag: dict = {}
    bar = tqdm(total=job.iters, initial=job.start, desc="train", unit="it", disable=not (progress and rank0))
    grads = None
    try:
        with signals_to_flag(flag), checkpointed_layers(model, s.grad_checkpoint):
            for step in range(job.start + 1, job.iters + 1):
                arrays, real, padded = next(batches)
                tic = time.perf_counter()
                at_update = step % accum == 0
                loss, grads = step_fn(arrays, grads, at_update)
                mx.eval(state, loss, grads)
                loss = loss.item()
                secs = time.perf_counter() - tic
                if at_update:  # dropout masks as a function of (seed, step): a resume draws the same
                    mx.random.seed(step_seed(s.seed, step))

                # 1. A loss that is not a number ends the run; nothing of this step is saved.
                if not math.isfinite(loss):
                    outcome.status, outcome.step = "diverged", step
                    outcome.error = f"training loss is {loss} at step {step}"
                    break

                # 2. Reporting: the progress bar, and a metrics row every steps_per_report.
                c["train_seconds"] += secs
                c["real_tokens"] += real
                c["padded_tokens"] += padded
                window.update(
                    loss=window["loss"] + loss,
                    n=window["n"] + 1,
                    secs=window["secs"] + secs,
                    real=window["real"] + real,
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{real / secs:.0f}")
                row = None
                if step % s.steps_per_report == 0 or step == job.iters:
                    row = {
                        "step": step,
                        "train_loss": round(window["loss"] / window["n"], 6),
                        "learning_rate": float(f"{job.optimizer.learning_rate.item():.6g}"),
                        "tokens_per_second": round(window["real"] / window["secs"], 1),
                        "real_tokens": window["real"],
                        "seconds": round(window["secs"], 4),
                        "peak_memory_gb": round(mx.get_peak_memory() / 1e9, 4),
                    }
                    window.update(loss=0.0, n=0, secs=0.0, real=0)

                # 3. Validation; a lower loss replaces best/.
                if step % s.steps_per_eval == 0 or step == job.iters:
                    val = validate()
                    if not math.isfinite(val):
                        outcome.status, outcome.step = "diverged", step
                        outcome.error = f"validation loss is {val} at step {step}"
                        break
                    row = row or {"step": step}
                    row["val_loss"] = round(val, 6)
                    if val < c["best"]:
                        c.update(best=val, best_step=step, bad_evals=0)
                        if rank0:
                            save_adapter(model, job.out / "best", job.adapter_config)
                    else:
                        c["bad_evals"] += 1
                if row:
                    add_metrics(row)

                # 4. Stop? Patience spent, or a signal / interrupt_at_step (at a whole update only).
                stop = None
                if s.early_stopping_patience and c["bad_evals"] >= s.early_stopping_patience:
                    stop = "early_stop"
                elif at_update and step < job.iters:
                    asked = flag.get("stop") or (interrupt_at_step is not None and step >= interrupt_at_step)
                    stop = "interrupted" if _any_worker(world, bool(asked)) else None

                # 5. Checkpoint: every save_every, when stopping, and at the end (to train on later).
                if at_update and (step % save_every == 0 or stop or step == job.iters):
                    if not all_finite(model.trainable_parameters()):
                        outcome.status, outcome.step = "diverged", step
                        outcome.error = f"the trained weights are not finite after step {step}"
                        break
                    if rank0:
                        outcome.last_checkpoint = save_checkpoint(
                            job.out / "checkpoints",
                            model,
                            job.optimizer,
                            step,
                            {**job.run_state, "extra": c},
                            s.keep_checkpoints,
                        )
                if stop:
                    outcome.status, outcome.step = stop, step
                    break
    finally:
        bar.close()
    outcome.signal = flag.get("signal")
    if outcome.status != "diverged" and not all_finite(model.trainable_parameters()):
        outcome.status = "diverged"
        outcome.error = f"the trained weights are not finite at step {outcome.step}"
    return outcome
