"""The whole demo end to end on the tiny model (tiny settings), then a re-run that skips everything."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_tune.demo import DemoSettings, run_demo


def test_demo_runs_every_stage_then_skips_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the phase configs and presets are package data
    logs: list[str] = []
    monkeypatch.setenv("MLX_TUNE_CACHE", str(tmp_path / "cache"))
    settings = DemoSettings(
        iters=2, limit=3, packages=("click",), load_repeats=1, pretrain_steps=2, log=logs.append
    )

    results = run_demo(settings)

    names = [m["name"] for m in results["models"]]
    assert names[:8] == [
        "base",
        "phase5",
        "phase5-fused-8bit",
        "phase6",
        "phase7",
        "phase7-fused-8bit",
        "phase5-qlora",
        "phase5-qlora-fused-8bit",
    ]
    assert [m["kind"] for m in results["models"][8:]] == ["baseline"] * 3
    # The base is pretrained (briefly, here) before its fine-tunes; both builds share its weights.
    for base in ("models/tiny", "models/tiny-4bit"):
        assert json.loads(Path(base, "mlx_tune_tiny.json").read_text())["pretrain_steps"] == 2
    # The QLoRA path: a 4-bit base, LoRA adapters on it, fused into 8 bits.
    assert json.loads(Path("models/tiny-4bit/config.json").read_text())["quantization"]["bits"] == 4
    assert (
        json.loads(Path("adapters/phase5-qlora/adapter_config.json").read_text())["fine_tune_type"] == "lora"
    )
    assert (
        json.loads(Path("models/phase5-qlora-fused-8bit/config.json").read_text())["quantization"]["bits"]
        == 8
    )
    assert [m["name"] for m in results["models"] if m.get("error")] == []
    assert all(m["accuracy"]["balanced_discrimination"] is not None for m in results["models"])
    for path in (
        "models/tiny/config.json",
        "adapters/phase7/summary.json",
        "models/phase7-fused-8bit/config.json",
    ):
        assert Path(path).is_file(), path
    run = json.loads(Path("benchmarks/demo/demo_run.json").read_text())
    stages = list(run["stage_seconds"])
    assert "benchmark" in stages and all(run["stage_seconds"][name] is not None for name in stages)
    assert "BLAS" in run["blas"] and run["settings"]["packages"] == ["click"]

    logs.clear()
    run_demo(settings)
    skipped = [line for line in logs if line.endswith("up to date, skipped")]
    assert len(skipped) == len(stages), logs
    assert (
        json.loads(Path("benchmarks/demo/demo_run.json").read_text()) == run
    )  # the first run's timings stay


def test_epochs_reach_every_training_stage_and_exclude_iters(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlx_tune import demo
    from mlx_tune.cli import main

    monkeypatch.chdir(tmp_path)
    s = DemoSettings(epochs=3)
    lane = demo._phase_lane(s, 7, "models/tiny", True, False)
    assert lane[0].settings["epochs"] == 3  # part of the stage's stamp: a new --epochs retrains
    assert lane[0].run.args[0].epochs == 3 and lane[0].run.args[0].iters is None
    qlora = [st for st in demo._qlora_lane(s, False) if st.name == "train phase 5 (QLoRA)"][0]
    assert qlora.run.args[0].epochs == 3
    default = demo._phase_lane(DemoSettings(), 7, "models/tiny", True, False)[0]
    assert "epochs" not in default.settings and default.run.args[0].epochs == 2  # the tiny preset's

    seen = []
    monkeypatch.setattr(demo, "run_demo", seen.append)
    assert CliRunner().invoke(main, ["demo", "--epochs", "2.5"]).exit_code == 0
    assert seen[0].epochs == 2.5 and seen[0].iters is None
    both = CliRunner().invoke(main, ["demo", "--iters", "3", "--epochs", "2"])
    assert both.exit_code == 2 and "--iters and --epochs: give one" in both.output
    assert CliRunner().invoke(main, ["demo", "--epochs", "0"]).exit_code == 2
