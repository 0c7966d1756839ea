"""Training faults: settings that are not numbers, a loss that stops being finite, interrupts by
signal (exit 130 / 143 after a resumable checkpoint)."""

from __future__ import annotations

import functools
import json
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
from mlx_tune.training import train as train_mod
from mlx_tune.training.train_config import FIELDS, TrainSettings, resolve_settings, validate_settings
from tests.conftest import train_settings, write_data

NUMERIC = [
    name
    for name, f in FIELDS.items()
    if any(t in str(f.type) for t in ("int", "float")) and "bool" not in str(f.type)
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def test_numeric_fields_are_found():
    assert {"learning_rate", "epochs", "iters", "warmup", "dropout", "alpha", "rank"} <= set(NUMERIC)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", NUMERIC)
def test_every_numeric_setting_rejects_non_finite_values(name, bad):
    base = {"model": "m", "data": "d", "iters": 2}
    assert validate_settings(TrainSettings(**base)) == []
    if name == "epochs":
        base.pop("iters")
    base[name] = bad
    problems = validate_settings(TrainSettings(**base))
    assert any(p.startswith(f"{name}:") for p in problems), problems


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("--learning-rate", "nan", "learning_rate:"),
        ("--epochs", "inf", "epochs:"),
        ("--warmup", "nan", "warmup:"),
        ("--dropout", "nan", "dropout:"),
        ("--dropout", "1", "dropout:"),
        ("--alpha", "-inf", "alpha:"),
        ("--learning-rate", "0", "learning_rate:"),
    ],
)
def test_cli_non_finite_numbers_are_one_line_errors(option, value, named):
    args = ["train", "--model", "m", "--data", "d", option, value]
    if option != "--epochs":
        args += ["--iters", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert f"Error: {named}" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_reports_every_bad_number_at_once():
    r = CliRunner().invoke(
        main,
        ["train", "--model", "m", "--data", "d", "--iters", "2"]
        + ["--learning-rate", "nan", "--warmup", "inf", "--dropout", "nan", "--scale", "nan"],
    )
    assert r.exit_code == 1 and "4 problems in settings" in r.output
    for name in ("learning_rate:", "warmup:", "dropout:", "scale:"):
        assert name in r.output


def test_yaml_non_finite_numbers_are_reported_with_the_cli_ones(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "model: m\ndata: d\nepochs: .inf\nlearning_rate: .nan\n"
        "min_learning_rate: -.inf\nlora_parameters:\n  scale: .nan\n  dropout: .inf\n"
    )
    with pytest.raises(UserError) as e:
        resolve_settings(config=cfg, overrides={"weight_decay": float("nan")}, notes=[])
    msg = str(e.value)
    assert "6 problems in settings" in msg
    for name in ("epochs:", "learning_rate:", "min_learning_rate:", "scale:", "dropout:", "weight_decay:"):
        assert f"\n  {name}" in msg, name


def _nan_after(updates: int):
    """``make_optimizer`` whose learning rate turns nan from the optimizer update ``updates`` on
    (the schedule runs inside the compiled step, so a Python counter could not do this)."""
    real = train_mod.make_optimizer

    def make(s, total_updates):
        import mlx.core as mx

        opt = real(s, total_updates)
        lr = opt.learning_rate if callable(opt.learning_rate) else None
        base = float(s.learning_rate)

        def schedule(step):
            good = lr(step) if lr else mx.array(base)
            return mx.where(step >= updates, mx.array(float("nan")), good)

        opt._maybe_schedule("learning_rate", schedule)
        return opt

    return make


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_model, data_dir, tmp_path, monkeypatch
):
    import mlx.core as mx

    monkeypatch.setattr(train_mod, "make_optimizer", _nan_after(3))
    out = tmp_path / "run"
    s = train_settings(tiny_model, data_dir, out, iters=8, save_every=2, steps_per_eval=100)
    with pytest.raises(train_mod.Diverged) as e:
        train_mod.train(s, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "training diverged" in msg and "step 4" in msg
    assert "step_0000002" in msg and "--resume" in msg
    assert not (out / "adapters.safetensors").exists()
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))] == ["step_0000002"]
    for path in (out / "checkpoints" / "step_0000002", out / "best"):
        for k, v in mx.load(str(path / "adapters.safetensors")).items():
            assert mx.isfinite(v).all().item(), (path, k)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 4 and "adapter_bytes" not in summary
    monkeypatch.undo()  # the kept checkpoint is a real resume point
    resumed = train_mod.train(s, progress=False, resume=True)
    assert resumed["status"] == "completed" and resumed["step"] == 8
    for k, v in mx.load(str(out / "adapters.safetensors")).items():
        assert mx.isfinite(v).all().item(), k


def test_cli_huge_learning_rate_is_a_one_line_error(tiny_model, data_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_model), "--data", str(data_dir), "--adapter-path", str(out)]
    args += [
        "--iters",
        "6",
        "--num-layers",
        "-1",
        "--learning-rate",
        "1e30",
        "--quiet",
        "--save-every",
        "100",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and r.output.startswith("Error: training diverged:"), r.output
    assert "no checkpoint was saved" in r.output and "Traceback" not in r.output
    assert not (out / "adapters.safetensors").exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_cli_interrupted_train_exits_130_after_its_checkpoint(tiny_model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "train", functools.partial(train_mod.train, interrupt_at_step=2))
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_model), "--data", str(data_dir), "--adapter-path", str(out)]
    args += ["--iters", "6", "--num-layers", "-1", "--rank", "4", "--save-every", "100", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130, r.output
    assert "interrupted at step 2/6" in r.stderr and "--resume" in r.stderr
    assert (out / "checkpoints" / "step_0000002" / "state.json").is_file()
    monkeypatch.undo()
    r = CliRunner().invoke(main, args + ["--resume"])
    assert r.exit_code == 0 and "completed at step 6/6" in r.output


def _wait_for(pred, proc, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_a_training_process_checkpoints_then_exits(tiny_model, data_dir, tmp_path, sig, code):
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_model), "--data", str(data_dir), "--adapter-path", str(out)]
    args += ["--iters", "100000", "--num-layers", "-1", "--rank", "4", "--save-every", "100000", "--quiet"]
    args += ["--steps-per-report", "1", "--steps-per-eval", "100000", "--learning-rate", "1e-4"]
    code_line = "import sys; from mlx_tune.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code_line, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:

        def started_training() -> bool:  # metrics of a running job are in its staging folder
            return any(len(fileio.read_jsonl(m)) >= 2 for m in tmp_path.glob("run.tmp-*/metrics.jsonl"))

        started = _wait_for(started_training, proc, 300)
        assert started, proc.communicate(timeout=30)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err and b"checkpoint saved" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    assert (out / "checkpoints" / f"step_{summary['step']:07d}" / "optimizer.safetensors").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_asks_for_a_stop_and_a_second_stops_at_once(sig):
    flag: dict = {}
    before = signal.getsignal(sig)
    with pytest.raises(train_mod.Interrupted) as e:
        with train_mod.signals_to_flag(flag):
            os.kill(os.getpid(), sig)
            time.sleep(0.01)  # the handler runs in the main thread between bytecodes
            assert flag == {"stop": True, "signal": sig.name}
            os.kill(os.getpid(), sig)
            time.sleep(1)
    assert e.value.signal == sig.name
    assert signal.getsignal(sig) == before  # the previous handler is back


def test_every_setting_is_a_train_option_with_its_help_and_choices():
    params = {p.name: p for p in main.commands["train"].params}
    for name in FIELDS:
        assert name in params and params[name].help, name
    assert params["schedule"].opts == ["--lr-schedule"]
    assert list(params["optimizer"].type.choices) == ["adam", "adamw"]
    r = CliRunner().invoke(
        main, ["train", "--model", "m", "--data", "d", "--iters", "2", "--optimizer", "sgd"]
    )
    assert r.exit_code == 2 and "'sgd' is not one of 'adam', 'adamw'" in r.output
    r = CliRunner().invoke(
        main,
        ["train", "--model", "m", "--data", "d", "--iters", "2", "--keep-checkpoints", "0"]
        + ["--weight-decay", "0.1", "--min-learning-rate", "1"],
    )
    assert r.exit_code == 1 and "3 problems in settings" in r.output
    for problem in (
        "keep_checkpoints: expected a positive integer, got 0",
        "weight_decay: only used by optimizer adamw",
        "min_learning_rate: larger than learning_rate",
    ):
        assert problem in r.output
