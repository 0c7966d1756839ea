"""Where a training run writes, so that an adapter folder is replaced only by a whole new one.

A run writes everything (``adapter_config.json``, ``metrics.jsonl``, ``best/``, ``checkpoints/``,
the adapter, ``summary.json``) into a staging folder beside the adapter folder,
``<adapter>.tmp-<pid>``, and swaps it in when it ends (as Hugging Face Trainer stages a checkpoint
and renames it). A run stopped by a signal or a diverging loss is swapped in too, unless the adapter
folder holds a finished adapter: then the stage stays beside it, and ``--resume`` continues it.
A run killed outright (``kill -9``, a power cut) leaves its stage; ``--resume`` continues the newest
checkpoint, whether in a dead run's stage or in the adapter folder. A new run removes the stages
of dead runs.

Rules (:func:`plan`): an adapter path that is a file is an error; a non-empty adapter folder is
refused unless ``overwrite`` or ``resume``; a folder another live run is writing is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlx_tune import UserError, fileio
from mlx_tune.training.checkpoints import latest_checkpoint

FINISHED = ("completed", "early_stop")


@dataclass
class Plan:
    out: Path
    checkpoint: Path | None = None
    """The checkpoint to resume from (``None``: a fresh run)."""
    source: Path | None = None
    """The folder holding that checkpoint: the adapter folder or a dead run's stage."""
    auto: bool = False
    """Chosen by ``resume="auto"`` (a mismatching checkpoint may be set aside by ``overwrite``)."""


def stage_of(out: Path, pid: int | None = None) -> Path:
    return out.parent / f"{out.name}.tmp-{os.getpid() if pid is None else pid}"


def _siblings(out: Path, kind: str) -> list[tuple[Path, int]]:
    """``<out>.<kind>-<pid>`` folders next to ``out``, with their pids."""
    pattern = re.compile(re.escape(out.name) + rf"\.{kind}-(\d+)")
    if not out.parent.is_dir():
        return []
    return [(p, int(m.group(1))) for p in out.parent.iterdir() if (m := pattern.fullmatch(p.name))]


def _finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished adapter (its summary says so and the weights exist)."""
    try:
        status = json.loads((folder / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status in FINISHED and (folder / "adapters.safetensors").is_file()


def plan(out: Path, resume: bool | str, overwrite: bool, rank0: bool = True) -> Plan:
    """Check the adapter path and choose what to resume (see the module docstring).

    ``resume``: ``False``, ``True`` (the newest checkpoint, which must exist) or ``"auto"`` (an
    interrupted run's newest checkpoint if there is one, else a fresh run). Reads only."""
    if out.exists() and not out.is_dir():
        raise UserError(f"adapter_path: {out} is a file (give a folder for the adapter)")
    if rank0:  # other workers start after rank 0 has made its stage; only rank 0 writes
        live = [pid for _, pid in _siblings(out, "tmp") if fileio.process_running(pid) and pid != os.getpid()]
        if live:
            raise UserError(f"adapter_path: another training run (pid {live[0]}) is writing {out}")
    found = []  # (state.json's time, checkpoint, folder)
    dead = [p for p, pid in _siblings(out, "tmp") if not fileio.process_running(pid)]
    for folder in [*dead, out]:
        ckpt = latest_checkpoint(folder)
        if ckpt is not None and (folder != out or resume is True or not _finished(out)):
            found.append(((ckpt / "state.json").stat().st_mtime, ckpt, folder))
    if resume and found:
        _, ckpt, folder = max(found, key=lambda f: f[0])
        return Plan(out, ckpt, folder, auto=resume == "auto")
    if resume is True:
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'} (train without --resume first)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"adapter_path: {out} is not empty (give --overwrite to replace it once the new run "
            "completes, or --resume to continue its run)"
        )
    return Plan(out)


def materialize(p: Plan) -> Path:
    """Make this run's stage (rank 0): empty, a dead run's stage renamed, or a copy of the adapter
    folder (hard links: every file here is replaced by rename, never written in place). Removes
    the stages of other dead runs."""
    stage = stage_of(p.out)
    fileio._rmtree(stage)
    if p.source is None:
        stage.mkdir(parents=True)
    elif p.source == p.out:
        shutil.copytree(p.out, stage, copy_function=_link_or_copy)
    else:
        os.replace(p.source, stage)
    for folder, pid in _siblings(p.out, "tmp") + _siblings(p.out, "old"):
        if not fileio.process_running(pid) and (folder.name.endswith(f".tmp-{pid}") or p.out.exists()):
            fileio._rmtree(folder)
    return stage


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def finish(stage: Path, out: Path, status: str) -> Path:
    """Swap the stage in as the adapter folder, unless the run did not finish and the adapter
    folder holds a finished adapter (then the stage stays, for ``--resume``). Returns where the
    run's files are."""
    if status not in FINISHED and _finished(out):
        return stage
    if out.exists():
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(stage, out)
        fileio._rmtree(old)
    else:
        os.replace(stage, out)
    return out
