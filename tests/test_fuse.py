"""QLoRA on the 4-bit tiny model, fused to 8 bits; the fused model loads and agrees with base + adapter."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from mlx_tune import UserError
from mlx_tune.cli import main
from mlx_tune.fuse import fuse
from mlx_tune.train import train
from tests.conftest import train_settings, write_data


@pytest.fixture(scope="module")
def qlora_adapter(tiny_model_4bit, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    data = write_data(root / "data", 12, 4)
    out = root / "adapters"
    s = train_settings(
        tiny_model_4bit,
        data,
        out,
        iters=4,
        learning_rate=1e-2,
        alpha=8,
        target_modules=["q_proj", "v_proj"],
        steps_per_eval=4,
    )
    summary = train(s, progress=False)
    return out, summary


def test_qlora_trains_and_fuses_to_8_bits(qlora_adapter, tmp_path):
    import mlx_lm

    adapter, summary = qlora_adapter
    assert summary["val_loss_best"] < summary["val_loss_first"]
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    out = tmp_path / "fused"
    report = fuse(adapter_path=str(adapter), save_path=str(out), verify_prompts=3, max_tokens=12)
    assert report["greedy_agreement"] == 1.0 and report["verify_prompts"] == 3
    assert report["base_bits"] == 4 and report["bits"] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    card = (out / "README.md").read_text()
    assert "100% of 3 validation prompts identical" in card and "train 12, valid 4" in card
    model, tok = mlx_lm.load(str(out))  # a plain mlx-lm model directory
    assert isinstance(mlx_lm.generate(model, tok, prompt="hi", max_tokens=3), str)


def test_fuse_refuses_existing_output_and_mismatched_adapter(qlora_adapter, tiny_model_4bit, tmp_path):
    adapter, _ = qlora_adapter
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists \\(pass --force"):
        fuse(adapter_path=str(adapter), save_path=str(out))
    assert (out / "keep.txt").is_file()
    bad = tmp_path / "bad_adapter"
    shutil.copytree(adapter, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["lora_parameters"]["rank"] = 2
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not match the base"):
        fuse(adapter_path=str(bad), save_path=str(tmp_path / "o"), verify_prompts=0)
    assert not (tmp_path / "o").exists()


def test_fuse_cli_errors(tmp_path, qlora_adapter):
    runner = CliRunner()
    r = runner.invoke(
        main, ["fuse", "--adapter-path", str(tmp_path / "none"), "--save-path", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and "has no adapters.safetensors" in r.output
    adapter, _ = qlora_adapter
    r = runner.invoke(
        main,
        [
            "fuse",
            "--model",
            str(tmp_path / "nomodel"),
            "--adapter-path",
            str(adapter),
            "--save-path",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 1 and "--model:" in r.output and "does not exist" in r.output
    r = runner.invoke(main, ["fuse", "--phase", "99"])
    assert r.exit_code == 1 and "adapters/phase99" in r.output and "mlx-tune train --phase 99" in r.output
