"""The demo's stages: skipped when their inputs and settings are unchanged, and run two at a time
where that is safe.

A stage is fingerprinted by its settings and the content of its input files; a stage whose
fingerprint matches the one recorded when it last finished, and whose outputs exist, is skipped
(:class:`Stamps`, in ``data/cache/demo_stamps.json``).

mlx runs a small model on the CPU on one core: the tiny model's training, fusing and pretraining
each keep one core busy and leave the other idle. :func:`run_lanes` runs independent chains of
stages ("lanes", e.g. phase 6's training beside phase 7's) in two worker processes, each lane in
order, so a two-core machine does both at once. The results are the same as one after the
other (each stage is deterministic and reads only its own inputs); only the per-stage seconds
include the other lane's share of the machine. With one worker (a GPU, where two trainings would
share one device and its memory, or a one-core machine) the lanes run one after another here.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from mlx_tune import __version__
from mlx_tune.fileio import sha256_file, write_json


class Stamps:
    """Fingerprints of finished stages, so a re-run skips work that is done and still valid."""

    def __init__(self, path: Path, force: bool):
        self.path, self.force = path, force
        self.data = {} if force or not path.is_file() else json.loads(path.read_text())

    @staticmethod
    def fingerprint(settings: dict, inputs: list[Path]) -> str:
        h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        h.update(__version__.encode())
        for p in inputs:
            h.update(str(p).encode())
            h.update(tree_hash(p).encode())
        return h.hexdigest()

    def fresh(self, stage: str, fingerprint: str, outputs: list[Path]) -> bool:
        return self.data.get(stage) == fingerprint and all(p.exists() for p in outputs)

    def done(self, stage: str, fingerprint: str) -> None:
        self.data[stage] = fingerprint
        write_json(self.path, self.data)


def tree_hash(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        # Compiled bytecode is not an input: Python writes it on first import, mid-run.
        skip = {"checkpoints", "__pycache__"}
        for p in sorted(q for q in path.rglob("*") if q.is_file() and not skip & set(q.parts)):
            h.update(f"{p.relative_to(path)}:{p.stat().st_size}:{sha256_file(p)}".encode())
        return h.hexdigest()
    return "missing"


@dataclass
class Stage:
    """One step of the demo. ``run`` must be picklable (a module-level function or a
    ``functools.partial`` of one) when it may run in a worker process."""

    name: str
    settings: dict
    inputs: list[Path]
    outputs: list[Path]
    run: Callable[[], object]


class Runner:
    """Runs stages, skipping fresh ones, and records each one's seconds (``None``: skipped)."""

    def __init__(self, stamps: Stamps, log: Callable[[str], None]):
        self.stamps, self.log = stamps, log
        self.timings: dict[str, float | None] = {}

    def needed(self, st: Stage) -> bool:
        if self.stamps.fresh(st.name, self.stamps.fingerprint(st.settings, st.inputs), st.outputs):
            self.log(f"[demo] {st.name}: up to date, skipped")
            self.timings[st.name] = None
            return False
        self.log(f"[demo] {st.name} ...")
        return True

    def finished(self, st: Stage, seconds: float) -> None:
        self.stamps.done(st.name, self.stamps.fingerprint(st.settings, st.inputs))
        self.timings[st.name] = round(seconds, 1)
        self.log(f"[demo] {st.name}: done in {self.timings[st.name]:.1f} s")

    def run(self, st: Stage) -> None:
        if self.needed(st):
            self.finished(st, timed(st.run))

    def run_lanes(self, lanes: list[list[Stage]], workers: int) -> None:
        """Run each lane's stages in order; with ``workers`` > 1, lanes side by side in worker
        processes (a stage's fingerprint is taken when its lane reaches it, after the stages
        before it have written their outputs). The first failure stops the run with its error."""
        lanes = [list(lane) for lane in lanes if lane]
        if workers <= 1 or len(lanes) <= 1:
            for lane in lanes:
                for st in lane:
                    self.run(st)
            return
        context = multiprocessing.get_context("spawn")  # a fork would copy mlx's threads and state
        with ProcessPoolExecutor(min(workers, len(lanes)), mp_context=context, initializer=_quiet) as pool:
            running = {}

            def next_of(i: int) -> None:
                while lanes[i]:
                    st = lanes[i].pop(0)
                    if self.needed(st):
                        running[pool.submit(timed, st.run)] = (i, st)
                        return

            for i in range(len(lanes)):
                next_of(i)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i, st = running.pop(future)
                    self.finished(st, future.result())  # a failed stage raises here, stopping the demo
                    next_of(i)


def timed(run: Callable[[], object]) -> float:
    """Seconds ``run()`` took (in a worker: its own run, not the time it waited in the queue)."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _quiet() -> None:
    """Worker processes show no progress bars: two would overwrite each other on one terminal (the
    main process says when each stage starts and ends). Stages that draw their own bars take a
    ``progress`` argument as well (see the demo's training stages)."""
    os.environ["TQDM_DISABLE"] = "1"


def parallel_workers(model_is_tiny: bool) -> int:
    """2 for the embedded tiny model on a CPU with two or more cores, else 1 (a GPU trains one
    model at a time: two would share its memory and compute)."""
    if not model_is_tiny or (os.cpu_count() or 1) < 2:
        return 1
    import mlx.core as mx

    return 2 if mx.default_device() == mx.cpu else 1
