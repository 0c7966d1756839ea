"""End-to-end benchmark on the tiny model and a tiny LoRA adapter, in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_records

from mlx_tune import UserError
from mlx_tune.cli import main as cli_main
from mlx_tune.eval import bench
from mlx_tune.fileio import write_jsonl


def make_adapter(
    base: Path, out: Path, *, rank: int = 4, shape_rank: int | None = None, seed: int = 1
) -> Path:
    """An adapter in mlx-lm's format (adapters.safetensors + adapter_config.json); with
    ``shape_rank`` != ``rank`` its weights do not fit the config, like an adapter for another base."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(base))
    model.freeze()
    config = {
        "model": str(base),
        "fine_tune_type": "lora",
        "num_layers": 2,
        "lora_parameters": {"rank": rank, "scale": 10.0, "dropout": 0.0},
    }
    linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"])
    mx.random.seed(seed)
    weights = {}
    for k, v in tree_flatten(model.trainable_parameters()):
        shape = list(v.shape)
        if shape_rank is not None:
            shape = [shape_rank if d == rank else d for d in shape]
        weights[k] = mx.random.normal(shape) * 0.05
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    repo = root / "repos" / "demo"  # make_records() names the repository "demo"
    (repo / "demo").mkdir(parents=True)
    for i in range(6):
        (repo / "demo" / f"mod{i}.py").write_text(f"class Thing{i}:\n    pass\n")
    queries = make_records(6)
    write_jsonl(root / "test.jsonl", queries)
    good = make_adapter(tiny_model, root / "adapters" / "good")
    bad = make_adapter(tiny_model, root / "adapters" / "bad", rank=4, shape_rank=8)
    return root, tiny_model, good, bad


def test_run_benchmark_writes_results(setup):
    root, tiny, good, bad = setup
    models = {
        "base": str(tiny),
        "lora": f"{tiny}@{good}",
        "mismatch": f"{tiny}@{bad}",
        "missing": str(root / "nope"),
    }
    out = root / "run"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "old-model.jsonl").write_text("{}\n")  # from an earlier run: replaced
    results = bench.run_benchmark(
        models,
        root / "test.jsonl",
        out,
        repeats=1,
        max_tokens=16,
        batch_size=4,
        progress=False,
        repos_dir=root / "repos",
    )
    assert (out / "results.md").is_file() and (out / "bench.log").is_file()
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["versions"]["mlx"] and on_disk["versions"]["mlx_lm"]
    assert on_disk["settings"]["n_queries"] == 6 and on_disk["settings"]["repeats"] == 1
    assert on_disk["machine"]["platform"]
    by_name = {m["name"]: m for m in on_disk["models"]}
    assert list(by_name) == ["base", "lora", "mismatch", "missing", "never-call", "always-grep", "keyword"]
    assert [m["kind"] for m in on_disk["models"]] == ["model"] * 4 + ["baseline"] * 3
    assert not (out / "predictions" / "old-model.jsonl").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    for name in ("base", "lora"):
        m = by_name[name]
        assert m["error"] is None
        assert len(m["load_times_s"]) == 1 and m["load_time_s"] > 0
        for key in ("prompt_tps", "generation_tps", "latency_s_mean", "latency_s_p95", "size_bytes"):
            assert m[key] > 0, key
        assert m["latency_s_p95"] >= m["latency_s_mean"] * 0.5
        assert m["perplexity"] > 1
        assert set(m["accuracy"]) == set(m["ci"]) == set(bench.ACCURACY_KEYS)
        assert 0 <= m["accuracy"]["discrimination"] <= 1 and 0 <= m["accuracy"]["category"] <= 1
        low, high = m["ci"]["balanced_discrimination"]
        assert low <= m["accuracy"]["balanced_discrimination"] <= high
        assert m["accuracy"]["call_match"] is not None  # the repository was found by name
        # The agent loop ran (round 1 = the single-turn answers): its figures and interval are set.
        ts = m["accuracy"]["trajectory_success"]
        assert 0 <= ts <= 1 and m["ci"]["trajectory_success"][0] <= ts <= m["ci"]["trajectory_success"][1]
        assert m["agent_wall_s"] >= 0 and m["agent_mean_steps"] >= 0 and m["agent_tool_errors"] >= 0
        assert sum(sum(row.values()) for row in m["confusion"].values()) == 6
        assert len((out / "predictions" / f"{name}.jsonl").read_text().splitlines()) == 6
    assert by_name["base"]["adapter_bytes"] is None and by_name["base"]["trainable_params"] is None
    lora = by_name["lora"]
    assert lora["adapter_bytes"] == (good / "adapters.safetensors").stat().st_size
    import mlx.core as mx

    weights = mx.load(str(good / "adapters.safetensors"))
    assert lora["trainable_params"] == sum(w.size for w in weights.values()) > 0
    assert lora["size_bytes"] == by_name["base"]["size_bytes"] + lora["adapter_bytes"]
    assert (
        "does not match the base" in by_name["mismatch"]["error"] and str(bad) in by_name["mismatch"]["error"]
    )
    assert "does not exist" in by_name["missing"]["error"]
    for name in ("never-call", "always-grep"):
        assert by_name[name]["accuracy"]["balanced_discrimination"] == 0.5
        assert by_name[name]["generation_tps"] is None
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = bench.format_table(on_disk)
    assert "FAILED mismatch" in table and "FAILED missing" in table
    md = (out / "results.md").read_text()
    assert "| base |" in md and "## Failures" in md and "confusion" in md and "keyword (baseline)" in md


def test_cli_same_accuracy_twice_and_errors(setup):
    root, tiny, good, _ = setup
    runner = CliRunner()
    args = [
        "--model",
        f"lora={tiny}@{good}",
        "--queries",
        str(root / "test.jsonl"),
        "--repeats",
        "0",
        "--max-tokens",
        "16",
        "--batch-size",
        "3",
        "--quiet",
        "--repos",
        str(root / "repos"),
    ]
    accuracies = []
    for run in ("a", "b"):
        result = runner.invoke(bench.command, [*args, "--out", str(root / run)])
        assert result.exit_code == 0, result.output
        assert "lora" in result.output and "results:" in result.output
        data = json.loads((root / run / "results.json").read_text())
        m = data["models"][0]
        accuracies.append((m["accuracy"], m["ci"], m["perplexity"]))
    assert accuracies[0] == accuracies[1]
    # The same command under `mlx-tune bench`.
    result = runner.invoke(cli_main, ["bench", "--help"])
    assert result.exit_code == 0 and "NAME=SPEC" in result.output
    # Faults: empty and malformed query files, a bad --model option, a failed model.
    (root / "empty.jsonl").write_text("")
    result = runner.invoke(
        cli_main, ["bench", "--model", f"t={tiny}", "--queries", str(root / "empty.jsonl")]
    )
    assert result.exit_code == 1 and "empty.jsonl: no queries" in result.output
    (root / "bad.jsonl").write_text('{"messages": []}\n')
    result = runner.invoke(bench.command, ["--model", f"t={tiny}", "--queries", str(root / "bad.jsonl")])
    assert result.exit_code == 1 and "bad.jsonl:1: messages" in result.output
    result = runner.invoke(bench.command, ["--model", "=x", "--queries", str(root / "test.jsonl")])
    assert result.exit_code == 1 and "expected NAME=SPEC" in result.output
    result = runner.invoke(
        bench.command,
        [
            "--model",
            f"gone={root}/gone",
            "--queries",
            str(root / "test.jsonl"),
            "--repeats",
            "0",
            "--quiet",
            "--out",
            str(root / "c"),
        ],
    )
    assert result.exit_code == 1 and "1 of 1 models failed: gone" in result.output
    assert json.loads((root / "c" / "results.json").read_text())["models"][0]["error"]


def test_defaults_find_what_exists(tmp_path):
    (tmp_path / "ph").mkdir(parents=True)
    (tmp_path / "ph/phase5.yaml").write_text("phase: 5\ninputs: [a.jsonl]\ntrain: {model: org/base-5}\n")
    (tmp_path / "ph/phase7.yaml").write_text("phase: 7\nextends: 5\ntrain: {model: org/base-7}\n")
    for n, cfg in ((5, {"model": "org/base-5"}), (7, {})):
        d = tmp_path / f"adapters/phase{n}"
        d.mkdir(parents=True)
        (d / "adapters.safetensors").write_bytes(b"")
        (d / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp_path / "adapters/phase6").mkdir()  # no weights: skipped
    (tmp_path / "models/phase5-fused-8bit").mkdir(parents=True)
    (tmp_path / "models/phase5-fused-8bit/config.json").write_text("{}")
    assert bench.default_models(tmp_path, tmp_path / "ph") == {
        "base": "org/base-7",
        "phase5": "org/base-5@adapters/phase5",
        "phase7": "org/base-7@adapters/phase7",
        "phase5-fused-8bit": "models/phase5-fused-8bit",
    }
    with pytest.raises(UserError, match="test.jsonl not found"):
        bench.default_queries(tmp_path)
    for n in (5, 6):
        (tmp_path / f"data/phase{n}").mkdir(parents=True)
        (tmp_path / f"data/phase{n}/test.jsonl").write_text("")
    assert bench.default_queries(tmp_path) == tmp_path / "data/phase6/test.jsonl"
    assert bench.parse_model_options(["a=x@y", "models/m"]) == {"a": "x@y", "m": "models/m"}
