"""The demo's stage runner: fingerprints, skipping, and lanes run side by side in worker processes."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest

from mlx_tune.demo_stages import Runner, Stage, Stamps


def append_line(path: str, text: str, after: str | None = None) -> None:
    """A stage body that runs in a worker: appends ``text`` (with the worker's pid) to ``path``,
    first checking that the file ``after`` (an earlier stage's output) exists."""
    if after is not None and not Path(after).exists():
        raise RuntimeError(f"{after} missing: a lane ran out of order")
    time.sleep(0.2)
    with open(path, "a") as f:
        f.write(f"{text} {os.getpid()}\n")


def fail() -> None:
    raise ValueError("stage broke")


def lanes_in(tmp: Path) -> list[list[Stage]]:
    def st(lane: str, i: int) -> Stage:
        out = tmp / f"{lane}{i}"
        after = str(tmp / f"{lane}{i - 1}") if i else None
        run = partial(append_line, str(out), f"{lane}{i}", after)
        return Stage(f"{lane}{i}", {"i": i}, [], [out], run)

    return [[st("a", 0), st("a", 1)], [st("b", 0), st("b", 1)]]


@pytest.mark.parametrize("workers", [1, 2])
def test_lanes_run_in_order_and_a_rerun_skips_them(tmp_path, workers):
    logs: list[str] = []
    runner = Runner(Stamps(tmp_path / "stamps.json", force=False), logs.append)
    runner.run_lanes(lanes_in(tmp_path), workers)
    assert sorted(runner.timings) == ["a0", "a1", "b0", "b1"]
    assert all(t is not None and t >= 0.2 for t in runner.timings.values())
    pids = {p.name: p.read_text().split()[1] for p in tmp_path.iterdir() if p.name != "stamps.json"}
    if workers == 1:
        assert set(pids.values()) == {str(os.getpid())}  # one after another, in this process
    else:
        assert str(os.getpid()) not in pids.values()  # in worker processes
    again = Runner(Stamps(tmp_path / "stamps.json", force=False), logs.append)
    again.run_lanes(lanes_in(tmp_path), workers)
    assert again.timings == dict.fromkeys(["a0", "a1", "b0", "b1"])  # all up to date
    assert all(len(p.read_text().splitlines()) == 1 for p in tmp_path.glob("[ab]?"))


def test_a_failing_stage_stops_the_run_and_is_not_stamped(tmp_path):
    lanes = lanes_in(tmp_path)
    lanes[1][0] = Stage("b0", {}, [], [tmp_path / "b0"], fail)
    runner = Runner(Stamps(tmp_path / "stamps.json", force=False), lambda _: None)
    with pytest.raises(ValueError, match="stage broke"):
        runner.run_lanes(lanes, 2)
    assert "b0" not in runner.stamps.data and "b1" not in runner.timings
