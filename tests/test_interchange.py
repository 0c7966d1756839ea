"""mlx-lm interchange both ways: `mlx-tune train -c` reads mlx-lm's lora configs unchanged, and
the adapters we write load with `mlx_lm lora -c`, `mlx_lm.load(adapter_path=...)` and `mlx_lm.fuse`."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from mlx_tune import UserError
from mlx_tune.cli import main
from mlx_tune.training.interchange import mlx_lm_training_keys
from mlx_tune.training.train_config import resolve_settings
from tests.conftest import write_data

# mlx-lm's examples/lora_config.yaml (comments shortened), unchanged.
MLX_LM_EXAMPLE = """\
model: "mlx_model"
train: true
fine_tune_type: lora
optimizer: adamw
# optimizer_config:
#   adamw:
#     betas: [0.9, 0.98]
#     eps: 1e-6
#     weight_decay: 0.05
#     bias_correction: true
data: "/path/to/training/data"
seed: 0
num_layers: 16
batch_size: 4
iters: 1000
val_batches: 25
learning_rate: 1e-5
steps_per_report: 10
steps_per_eval: 200
resume_adapter_file: null
adapter_path: "adapters"
save_every: 100
test: false
test_batches: 100
max_seq_length: 2048
grad_checkpoint: false
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.v_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
#lr_schedule:
#  name: cosine_decay
#  warmup: 100 # 0 for no warmup
#  warmup_init: 1e-7 # 0 if not specified
#  arguments: [1e-5, 1000, 1e-7] # passed to scheduler
"""


def _uncomment(text: str, *blocks: str) -> str:
    """The example with the commented ``blocks`` (top-level keys) switched on."""
    out, prefix = [], None
    for line in text.splitlines():
        name = line.lstrip("# ").split(":")[0]
        if line.startswith("#") and name in blocks and line.endswith(":"):
            prefix = line[: len(line) - len(line.lstrip("# "))]
        elif not line.startswith("#"):
            prefix = None
        out.append(line[len(prefix) :] if prefix else line)
    return "\n".join(out) + "\n"


def _resolve(tmp_path, text: str, **overrides):
    cfg = tmp_path / "lora_config.yaml"
    cfg.write_text(text)
    notes: list[str] = []
    return resolve_settings(config=cfg, overrides=overrides, notes=notes), notes


def test_mlx_lm_example_config_is_read_unchanged(tmp_path):
    s, notes = _resolve(tmp_path, MLX_LM_EXAMPLE)
    assert isinstance(s.learning_rate, float) and s.learning_rate == 1e-5  # PyYAML alone: "1e-5"
    assert (s.model, s.data, s.iters, s.batch_size, s.num_layers) == (
        "mlx_model",
        "/path/to/training/data",
        1000,
        4,
        16,
    )
    assert s.target_modules == ["self_attn.q_proj", "self_attn.v_proj"]
    assert (s.rank, s.lora_scale, s.dropout, s.optimizer) == (8, 20.0, 0.0, "adamw")
    assert s.weight_decay == 0.01  # mlx's AdamW default, which `mlx_lm lora` trains with
    assert (s.val_batches, s.steps_per_eval, s.save_every, s.mask_prompt) == (25, 200, 100, True)
    assert notes == [f"{tmp_path / 'lora_config.yaml'}: train: ignored (mlx-tune train always trains)"]


def test_mlx_lm_schedule_and_optimizer_config_are_honoured(tmp_path):
    text = _uncomment(MLX_LM_EXAMPLE, "lr_schedule", "optimizer_config")
    assert "\nlr_schedule:\n  name: cosine_decay" in text and "\noptimizer_config:\n  adamw:" in text
    s, notes = _resolve(tmp_path, text)
    assert (s.lr_schedule, s.learning_rate, s.min_learning_rate, s.warmup) == ("cosine", 1e-5, 1e-7, 100)
    assert s.weight_decay == 0.05
    said = "\n".join(notes)
    assert "decay steps 1000 ignored" in said and "warmup_init: ignored" in said
    assert "optimizer_config.adamw: betas, bias_correction, eps ignored" in said


def test_every_key_mlx_lm_lora_accepts_is_honoured_or_ignored(tmp_path):
    from mlx_lm.lora import CONFIG_DEFAULTS, build_parser

    keys = set(CONFIG_DEFAULTS) | {a.dest for a in build_parser()._actions if a.dest != "help"}
    config = {k: v for k, v in CONFIG_DEFAULTS.items()}
    for key in keys - set(config):
        config[key] = None
    config["train"] = True
    s, notes = _resolve(tmp_path, json.dumps(config))
    assert s.model == CONFIG_DEFAULTS["model"] and s.schedule == "cosine"
    assert any(": train: ignored" in n for n in notes)


@pytest.mark.parametrize(
    "extra, match",
    [
        (
            "resume_adapter_file: adapters/adapters.safetensors\n",
            "resume_adapter_file: not supported .*--resume",
        ),
        ("hf_dataset: {path: billsum}\n", "hf_dataset: not supported"),
        ("lora_rnak: 4\n", r"lora_config.yaml: lora_rnak: unknown setting \(neither"),
        (
            "lr_schedule: {name: exponential_decay, arguments: [1e-5, 0.9]}\n",
            "lr_schedule: 'exponential_decay'",
        ),
        ("lr_schedule: {name: cosine_decay, arguments: [1e-5], warmpu: 3}\n", "unknown key.*warmpu"),
    ],
)
def test_refused_and_unknown_keys_are_named(tmp_path, extra, match):
    with pytest.raises(UserError, match=match):
        _resolve(tmp_path, MLX_LM_EXAMPLE + extra)


def test_constant_schedule_round_trips(tmp_path):
    text = MLX_LM_EXAMPLE + "lr_schedule: {name: linear_schedule, arguments: [2e-4, 2e-4, 1], warmup: 5}\n"
    s, _ = _resolve(tmp_path, text)
    assert (s.lr_schedule, s.learning_rate, s.warmup) == ("constant", 2e-4, 5)


def test_written_schedule_is_the_one_we_train_with(tmp_path):
    from mlx_lm.tuner.utils import build_schedule

    from mlx_tune.training.train import make_optimizer

    for extra in ({"lr_schedule": "cosine", "min_learning_rate": 1e-5}, {"lr_schedule": "constant"}):
        s = resolve_settings(
            overrides={"model": "m", "data": "d", "iters": 40, "learning_rate": 1e-3, "warmup": 5} | extra
        )
        keys = mlx_lm_training_keys(s, 40)
        theirs = build_schedule(keys["lr_schedule"])
        ours = make_optimizer(s, 40)._schedulers["learning_rate"]
        # Same warmup ramp; mlx-lm joins the decay one step later (join_schedules at warmup + 1).
        for t in range(0, 6):
            assert theirs(t).item() == pytest.approx(ours(t).item(), rel=1e-5)
        for t in range(6, 40):
            assert theirs(t).item() == pytest.approx(ours(t - 1).item(), rel=1e-5)


@pytest.fixture(scope="module")
def adapter_from_mlx_lm_config(tiny_model, tmp_path_factory):
    """A LoRA adapter trained by `mlx-tune train -c` on mlx-lm's example config."""
    root = tmp_path_factory.mktemp("interchange")
    data = write_data(root / "data", 12, 4)
    cfg = root / "lora_config.yaml"
    cfg.write_text(_uncomment(MLX_LM_EXAMPLE, "lr_schedule"))
    out = root / "adapters"
    args = ["train", "-c", str(cfg), "--model", str(tiny_model), "--data", str(data)]
    args += ["--adapter-path", str(out), "--iters", "2", "--num-layers", "-1", "--val-batches", "1"]
    result = CliRunner().invoke(main, [*args, "--steps-per-eval", "2", "--warmup", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "train: ignored" in result.output
    return out


def test_mlx_lm_loads_generates_and_fuses_our_adapter(
    adapter_from_mlx_lm_config, tiny_model, tmp_path, monkeypatch
):
    import mlx_lm
    from mlx_lm import fuse as mlx_fuse

    adapter = adapter_from_mlx_lm_config
    model, tok = mlx_lm.load(str(tiny_model), adapter_path=str(adapter))  # `mlx_lm generate --adapter-path`
    assert isinstance(mlx_lm.generate(model, tok, prompt="hi", max_tokens=3), str)
    out = tmp_path / "fused"
    monkeypatch.setattr(
        sys, "argv", ["mlx_lm.fuse", "--model", str(tiny_model), "--adapter-path", str(adapter)]
    )
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--save-path", str(out)])
    mlx_fuse.main()
    assert (out / "config.json").is_file()
    mlx_lm.load(str(out))


def test_mlx_lm_lora_reads_our_adapter_config(adapter_from_mlx_lm_config, tmp_path, monkeypatch):
    """`mlx_lm lora -c ADAPTER/adapter_config.json --train` runs on our file (no TypeError)."""
    from mlx_lm import lora

    adapter = adapter_from_mlx_lm_config
    ours = json.loads((adapter / "adapter_config.json").read_text())
    assert not isinstance(ours.get("lr_schedule"), str)  # mlx-lm would call build_schedule on it
    again = tmp_path / "again"
    argv = ["mlx_lm.lora", "-c", str(adapter / "adapter_config.json"), "--train", "--iters", "2"]
    argv += ["--adapter-path", str(again), "--steps-per-eval", "2", "--val-batches", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    lora.main()
    theirs = json.loads((again / "adapter_config.json").read_text())
    assert theirs["lora_parameters"] == ours["lora_parameters"]
    assert theirs["model"] == ours["model"] and theirs["mask_prompt"] is True
    assert (again / "adapters.safetensors").is_file()
