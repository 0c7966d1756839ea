"""Training on the tiny model: loss goes down, resume is exact, settings and data errors, masks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, fileio, layout
from mlx_tune.cli import main
from mlx_tune.rendering import tokenize_record
from mlx_tune.training.train import resolve_settings, train
from tests.conftest import make_records, write_data
from tests.conftest import train_settings as settings


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def lora_run(tiny_model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "adapters"
    return out, train(settings(tiny_model, data_dir, out), progress=False)


def test_lora_run_lowers_val_loss_and_writes_outputs(lora_run, tiny_model):
    import mlx_lm

    out, summary = lora_run
    assert summary["status"] == "completed" and summary["step"] == 6
    assert summary["val_loss_best"] < summary["val_loss_first"]
    assert summary["improvement_pct"] > 0
    for name in (
        "adapters.safetensors",
        "adapter_config.json",
        "metrics.jsonl",
        "summary.json",
        "best/adapters.safetensors",
        "best/adapter_config.json",
    ):
        assert (out / name).is_file(), name
    rows = fileio.read_jsonl(out / "metrics.jsonl")
    assert rows[0] == {"step": 0, "val_loss": summary["val_loss_first"]}
    assert {"train_loss", "learning_rate", "tokens_per_second", "peak_memory_gb"} <= set(rows[1])
    assert summary["tokens_per_second"] > 0 and summary["trainable_params"] > 0
    assert 0 <= summary["padding_share"] < 0.5
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["lora_parameters"]["rank"] == 4
    for path in (out, out / "best"):  # both load with plain mlx-lm
        model, _ = mlx_lm.load(str(tiny_model), adapter_path=str(path))
        assert any("lora_a" in k for k, _ in __import__("mlx.utils").utils.tree_flatten(model.parameters()))


def test_resume_after_interruption_matches_uninterrupted(tiny_model, data_dir, tmp_path):
    import mlx.core as mx

    kw = dict(iters=6, save_every=2, dropout=0.1, grad_accumulation_steps=2, batch_size=2, warmup=0.3)
    full = train(settings(tiny_model, data_dir, tmp_path / "full", **kw), progress=False)
    cut = train(settings(tiny_model, data_dir, tmp_path / "cut", **kw), progress=False, interrupt_at_step=3)
    assert cut["status"] == "interrupted" and cut["step"] == 4  # stops at a whole optimizer update
    assert (tmp_path / "cut" / "checkpoints" / "step_0000004" / "optimizer.safetensors").is_file()
    resumed = train(settings(tiny_model, data_dir, tmp_path / "cut", **kw), progress=False, resume=True)
    assert resumed["status"] == "completed" and resumed["step"] == 6
    a = mx.load(str(tmp_path / "full" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "cut" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert mx.allclose(a[k], b[k], atol=1e-5).item(), k
    assert resumed["val_loss_best"] == pytest.approx(full["val_loss_best"], abs=1e-4)


def test_shared_prefix_on_and_off_give_the_same_curves(lora_run, tiny_model, data_dir, tmp_path):
    from mlx_lm.models.qwen2 import TransformerBlock

    out, on = lora_run  # shared_prefix auto (the default)
    assert json.loads((out / "adapter_config.json").read_text())["shared_prefix_used"] is True
    call = TransformerBlock.__call__
    off = train(settings(tiny_model, data_dir, tmp_path / "off", shared_prefix="off"), progress=False)
    train(settings(tiny_model, data_dir, tmp_path / "ckpt", grad_checkpoint=True), progress=False)
    assert TransformerBlock.__call__ is call  # checkpointing does not leak into later models
    assert json.loads((tmp_path / "off" / "adapter_config.json").read_text())["shared_prefix_used"] is False
    curves = [
        [(r["step"], r.get("val_loss"), r.get("train_loss")) for r in fileio.read_jsonl(d / "metrics.jsonl")]
        for d in (out, tmp_path / "off", tmp_path / "ckpt")
    ]
    assert [r[0] for r in curves[0]] == [r[0] for r in curves[1]] == [r[0] for r in curves[2]]
    assert sum(r[1] is not None for r in curves[0]) == 3  # steps 0, 3 and 6
    for other in curves[1:]:
        for a, b in zip(curves[0], other, strict=True):
            for x, y in zip(a[1:], b[1:], strict=True):
                assert (x is None) == (y is None) and (x is None or x == pytest.approx(y, rel=1e-4, abs=1e-5))
    assert on["real_tokens"] == off["real_tokens"]
    assert on["shared_prefix"] is True and off["shared_prefix"] is False


def test_models_without_shared_prefix_support_train_on_the_plain_path(
    tiny_model, data_dir, tmp_path, monkeypatch, capsys
):
    from mlx_tune.training import batching, prefix

    monkeypatch.setattr(prefix, "shared_prefix_support", lambda model: "no cache here")
    monkeypatch.setattr(batching, "_said", set())
    for name in ("a", "b"):
        summary = train(settings(tiny_model, data_dir, tmp_path / name, iters=1), progress=False)
        assert summary["status"] == "completed" and summary["shared_prefix"] is False
    err = capsys.readouterr().err
    assert err.count("shared prefix: off for this model (no cache here); using the plain path") == 1


def test_cli_shared_prefix_option(tiny_model, data_dir, tmp_path):
    runner = CliRunner()
    args = [
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(data_dir),
        "--iters",
        "1",
        "--num-layers",
        "-1",
        "--quiet",
    ]
    r = runner.invoke(main, [*args, "--adapter-path", str(tmp_path / "a"), "--shared-prefix", "off"])
    assert r.exit_code == 0, r.output
    assert "shared prefix off" in r.output
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["shared_prefix"] == "off"
    r = runner.invoke(main, [*args, "--adapter-path", str(tmp_path / "b")])
    assert r.exit_code == 0 and "shared prefix on" in r.output
    r = runner.invoke(main, [*args, "--shared-prefix", "always"])
    assert r.exit_code == 2 and "'always' is not one of 'auto', 'off'" in r.output


def test_full_fine_tune_loads_with_mlx_lm(tiny_model, data_dir, tmp_path):
    import mlx.core as mx
    import mlx_lm

    out = tmp_path / "full"
    train(
        settings(tiny_model, data_dir, out, fine_tune_type="full", num_layers=1, iters=2, learning_rate=1e-3),
        progress=False,
    )
    base, _ = mlx_lm.load(str(tiny_model))
    tuned, _ = mlx_lm.load(str(tiny_model), adapter_path=str(out))
    x = mx.array([[1, 2, 3, 4]])
    assert not mx.allclose(base(x), tuned(x)).item()


def test_train_embeddings_trains_and_saves_the_embeddings(tiny_model, data_dir, tmp_path):
    import mlx.core as mx
    import mlx_lm

    out = tmp_path / "full-emb"
    kw = dict(fine_tune_type="full", num_layers=-1, iters=2, learning_rate=1e-3)
    layers_only = train(settings(tiny_model, data_dir, tmp_path / "full", **kw), progress=False)
    summary = train(settings(tiny_model, data_dir, out, train_embeddings=True, **kw), progress=False)
    base, _ = mlx_lm.load(str(tiny_model))
    embed = base.model.embed_tokens.weight
    assert (
        summary["trainable_params"]
        == layers_only["trainable_params"] + embed.size + base.model.norm.weight.size
    )
    tuned, _ = mlx_lm.load(str(tiny_model), adapter_path=str(out))
    assert not mx.allclose(tuned.model.embed_tokens.weight, embed).item()
    with pytest.raises(UserError, match="train_embeddings: only with fine_tune_type full"):
        train(settings(tiny_model, data_dir, tmp_path / "x", train_embeddings=True), progress=False)


def test_settings_errors_are_reported_together():
    with pytest.raises(UserError) as e:
        resolve_settings(
            overrides={
                "model": "m",
                "data": "d",
                "iters": 0,
                "batch_size": -1,
                "fine_tune_type": "qlora",
                "alpha": 32,
                "scale": 2.0,
                "warmup": 2.5,
                "shared_prefix": "on",
            }
        )
    msg = str(e.value)
    assert msg.startswith("6 problems")
    for field in ("iters:", "batch_size:", "fine_tune_type:", "alpha:", "warmup:", "shared_prefix:"):
        assert field in msg


def test_unknown_keys_named_with_their_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\ndata: d\niters: 3\nlearnin_rate: 1e-4\n")
    with pytest.raises(UserError, match=r"c.yaml: learnin_rate: unknown setting"):
        resolve_settings(config=cfg)


@pytest.mark.parametrize("phase", [5, 6, 7])
def test_shipped_phase_yaml_resolves(phase):
    s = resolve_settings(phase=phase)
    assert s.model == "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"
    assert (s.iters, s.batch_size, s.learning_rate) == (300, 2, 1e-4)
    assert s.data == f"data/phase{phase}" and s.adapter_path == f"adapters/phase{phase}"


@pytest.mark.parametrize("preset", layout.preset_names())
def test_presets_validate(preset):
    s = resolve_settings(preset=preset, overrides={"model": "m", "data": "d"})
    if preset == "qlora":
        assert (s.rank, s.alpha, s.lora_scale, s.batch_size, s.grad_accumulation_steps) == (16, 32, 2.0, 4, 4)
        assert s.target_modules == ["q_proj", "v_proj"] and s.epochs == 3 and s.warmup == 0.1


def test_cli_options_override_phase_and_pick_epochs():
    s = resolve_settings(
        phase=7, overrides={"epochs": 2, "learning_rate": 3e-4, "target_modules": "q_proj,v_proj"}
    )
    assert s.epochs == 2 and s.iters is None and s.learning_rate == 3e-4


def test_multi_turn_masks_cover_every_assistant_turn(tiny_model):
    import mlx_lm

    _, tok = mlx_lm.load(str(tiny_model))
    rec = make_records(1)[0]
    call = rec["messages"][-1]
    rec["messages"] += [
        {"role": "tool", "content": "demo/mod0.py:1:class Thing0:"},
        {"role": "assistant", "content": "Thing0 is defined in demo/mod0.py."},
    ]
    assert call.get("tool_calls")
    ex = tokenize_record(tok, rec)
    assert len(ex.spans) == 2
    texts = [tok.decode(ex.tokens[s:e]) for s, e in ex.spans]
    assert '"pattern": "class Thing0' in texts[0]  # arguments rendered once, as an object
    assert "Thing0 is defined in demo/mod0.py." in texts[1]
    assert "class Thing0:" not in "".join(texts)  # the tool result is not trained
    assert all("Where is Thing0" not in t for t in texts)


def test_cli_bad_inputs(tmp_path, tiny_model):
    runner = CliRunner()
    r = runner.invoke(
        main, ["train", "--model", str(tiny_model), "--data", str(tmp_path / "nope"), "--iters", "2"]
    )
    assert r.exit_code == 1 and "Error: data:" in r.output and "train.jsonl does not exist" in r.output
    d = write_data(tmp_path / "bad", 4, 2)
    lines = (d / "train.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][1]["content"] = ""
    lines[1] = json.dumps(broken)
    (d / "train.jsonl").write_text("\n".join(lines) + "\n")
    r = runner.invoke(main, ["train", "--model", str(tiny_model), "--data", str(d), "--iters", "2"])
    assert r.exit_code == 1 and "train.jsonl:2: messages[1].content: missing or empty" in r.output
    r = runner.invoke(main, ["train", "--preset", "nope", "--model", "m", "--data", "d"])
    assert r.exit_code == 1 and "unknown preset 'nope'" in r.output
    good = write_data(tmp_path / "good", 4, 2)
    r = runner.invoke(
        main, ["train", "--model", str(tmp_path / "missing"), "--data", str(good), "--iters", "2"]
    )
    assert r.exit_code == 1 and "Error: --model:" in r.output and "missing does not exist" in r.output
    r = runner.invoke(main, ["train", "--model", "m", "--data", "d", "--iters", "2", "--epochs", "1"])
    assert r.exit_code == 1 and "iters and epochs both given" in r.output
    r = runner.invoke(
        main,
        [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(good),
            "--iters",
            "2",
            "--resume",
            "--adapter-path",
            str(tmp_path / "fresh"),
        ],
    )
    assert r.exit_code == 1 and "--resume: no checkpoint" in r.output
