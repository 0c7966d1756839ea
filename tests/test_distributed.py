"""Training on two processes (``mlx.launch``, ring backend) trains the model one process trains."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_tune import fileio
from mlx_tune.training.train import train
from tests.conftest import train_settings, write_data

SCRIPT = Path(__file__).with_name("distributed_train.py")
SETTINGS = {"iters": 4, "batch_size": 4, "steps_per_eval": 2, "save_every": 2}


def launcher() -> str | None:
    beside = Path(sys.executable).with_name("mlx.launch")
    return str(beside) if beside.is_file() else shutil.which("mlx.launch")


@pytest.mark.skipif(launcher() is None, reason="mlx.launch is not installed")
def test_two_ring_workers_match_one_process(tiny_model, tmp_path):
    data = write_data(tmp_path / "data")
    one = train(train_settings(tiny_model, data, tmp_path / "one", **SETTINGS), progress=False)
    out = tmp_path / "two"
    cmd = [launcher(), "-n", "2", "--backend", "ring", "--python", sys.executable, str(SCRIPT)]
    cmd += [str(tiny_model), str(data), str(out), json.dumps(SETTINGS)]
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "ring" in r.stderr and "Traceback" not in r.stderr:
        pytest.skip(f"the ring backend does not start here: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {d["rank"]: d["summary"] for d in map(json.loads, filter(None, r.stdout.splitlines()))}
    assert sorted(runs) == [0, 1]
    assert "adapter_bytes" in runs[0] and "adapter_bytes" not in runs[1]  # rank 0 alone writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one", "two"]  # one stage, swapped in
    # The same global batch on two workers: the same validation curve, to float rounding.
    curve = {r["step"]: r["val_loss"] for r in fileio.read_jsonl(out / "metrics.jsonl") if "val_loss" in r}
    want = {
        r["step"]: r["val_loss"]
        for r in fileio.read_jsonl(tmp_path / "one" / "metrics.jsonl")
        if "val_loss" in r
    }
    assert curve.keys() == want.keys() == {0, 2, 4}
    for step in want:
        assert curve[step] == pytest.approx(want[step], rel=1e-4), step
    assert runs[0]["real_tokens"] == one["real_tokens"]
    assert runs[0]["val_loss_best"] == pytest.approx(one["val_loss_best"], rel=1e-4)
