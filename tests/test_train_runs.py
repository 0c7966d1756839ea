"""Where a training run writes (issue 12): an existing adapter stays whole until the new one is,
non-empty folders need --overwrite or --resume, --resume extends to more iterations and refuses
fewer, --resume auto, stale staging folders of dead runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, fileio
from mlx_tune.cli import main
from mlx_tune.training.train import train
from tests.conftest import train_settings, write_data

DEAD_PID = 2**31 - 7  # above any pid_max: never a live process


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def weights(folder: Path) -> dict:
    import mlx.core as mx

    return mx.load(str(folder / "adapters.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    import mlx.core as mx

    assert a.keys() == b.keys()
    for k in a:
        assert mx.array_equal(a[k], b[k]).item(), k  # bit for bit


def test_adapter_path_naming_a_file_is_a_one_line_error(tiny_model, data_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    args = ["train", "--model", str(tiny_model), "--data", str(data_dir), "--iters", "1"]
    r = CliRunner().invoke(main, [*args, "--adapter-path", str(tmp_path / "file")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert (
        r.output.strip()
        == f"Error: adapter_path: {tmp_path / 'file'} is a file (give a folder for the adapter)"
    )


def test_non_empty_folder_needs_overwrite_and_stale_stages_are_removed(tiny_model, data_dir, tmp_path):
    out = tmp_path / "a"
    first = train(train_settings(tiny_model, data_dir, out, iters=2), progress=False)
    assert first["status"] == "completed" and "run_folder" not in first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # the stage became the folder
    with pytest.raises(UserError, match=r"a is not empty \(give --overwrite"):
        train(train_settings(tiny_model, data_dir, out, iters=2), progress=False)
    stale = tmp_path / f"a.tmp-{DEAD_PID}"
    (stale / "checkpoints").mkdir(parents=True)
    train(train_settings(tiny_model, data_dir, out, iters=2, seed=1), progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert fileio.read_jsonl(out / "metrics.jsonl")[-1]["step"] == 2


def test_resume_extends_to_more_iters_and_refuses_fewer(tiny_model, data_dir, tmp_path):
    kw = dict(schedule="constant", save_every=100, steps_per_eval=2)
    full = tmp_path / "full"
    train(train_settings(tiny_model, data_dir, full, iters=6, **kw), progress=False)
    out = tmp_path / "grown"
    train(train_settings(tiny_model, data_dir, out, iters=4, **kw), progress=False)
    assert (out / "checkpoints" / "step_0000004").is_dir()  # a finished run keeps its last state
    grown = train(train_settings(tiny_model, data_dir, out, iters=6, **kw), progress=False, resume=True)
    assert grown["status"] == "completed" and grown["step"] == 6
    assert_same(weights(full), weights(out))  # a constant schedule: the same as 6 iterations at once
    steps = [r["step"] for r in fileio.read_jsonl(out / "metrics.jsonl")]
    assert steps == [r["step"] for r in fileio.read_jsonl(full / "metrics.jsonl")]
    with pytest.raises(UserError, match=r"--resume: iters 4 is fewer than the 6 of the run"):
        train(train_settings(tiny_model, data_dir, out, iters=4, **kw), progress=False, resume=True)


def test_interrupted_retrain_keeps_the_old_adapter_and_resume_auto_finishes_it(
    tiny_model, data_dir, tmp_path
):
    kw = dict(iters=6, save_every=2, dropout=0.1, grad_accumulation_steps=2, batch_size=2, warmup=0.3)
    want = train(train_settings(tiny_model, data_dir, tmp_path / "want", **kw), progress=False)
    out = tmp_path / "a"
    train(train_settings(tiny_model, data_dir, out, iters=2, seed=3), progress=False)
    old = (out / "adapters.safetensors").read_bytes()
    cut = train(
        train_settings(tiny_model, data_dir, out, **kw), progress=False, overwrite=True, interrupt_at_step=3
    )
    assert cut["status"] == "interrupted" and cut["run_folder"] == str(tmp_path / f"a.tmp-{os.getpid()}")
    assert (out / "adapters.safetensors").read_bytes() == old  # the finished adapter is untouched
    os.replace(cut["run_folder"], tmp_path / f"a.tmp-{DEAD_PID}")  # as if its process had died
    done = train(train_settings(tiny_model, data_dir, out, **kw), progress=False, resume="auto")
    assert done["status"] == "completed" and done["val_loss_best"] == want["val_loss_best"]
    assert_same(weights(tmp_path / "want"), weights(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "want"]
    # Nothing interrupted left: auto starts fresh, which a finished adapter refuses without --overwrite.
    with pytest.raises(UserError, match="is not empty"):
        train(train_settings(tiny_model, data_dir, out, **kw), progress=False, resume="auto")
    fresh = train(train_settings(tiny_model, data_dir, tmp_path / "b", **kw), progress=False, resume="auto")
    assert fresh["status"] == "completed"


def test_kill_during_retrain_leaves_the_old_adapter_loadable(tiny_model, data_dir, tmp_path):
    import mlx_lm

    out = tmp_path / "run"
    base = ["train", "--model", str(tiny_model), "--data", str(data_dir), "--adapter-path", str(out)]
    base += ["--num-layers", "-1", "--rank", "4", "--quiet"]
    assert CliRunner().invoke(main, [*base, "--iters", "2"]).exit_code == 0
    old = (out / "adapters.safetensors").read_bytes()
    args = [*base, "--iters", "100000", "--steps-per-report", "1", "--steps-per-eval", "100000"]
    args += ["--save-every", "2", "--overwrite"]
    code = "import sys; from mlx_tune.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE)
    stage = tmp_path / f"run.tmp-{proc.pid}"
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None:
            if (stage / "checkpoints" / "step_0000002" / "state.json").is_file():
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate(timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "adapters.safetensors").read_bytes() == old
    mlx_lm.load(str(tiny_model), adapter_path=str(out))  # still loads
    assert stage.is_dir()  # the dead run's work, for --resume
    r = CliRunner().invoke(main, [*base, "--iters", "2", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not stage.exists()  # a new run removes dead runs' stages
