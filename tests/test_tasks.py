"""The task registry (mlx_tune.tasks), the tools adapter, `task:` in phase configs, `--task` on the
CLI, and the generic task benchmark on a tiny model."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_records, one_line_error

from mlx_tune import UserError, tasks
from mlx_tune.cli import main
from mlx_tune.data.merge import merge_phase
from mlx_tune.eval import baselines, bench_report, evaluate, metrics
from mlx_tune.models import model_spec
from mlx_tune.phases import load_phase
from mlx_tune.tasks import chat, tools


def test_registry_names_and_errors(monkeypatch):
    assert tasks.task_names() == ["chat", "dot", "tools"] and tasks.DEFAULT_TASK == "tools"
    for name in ("tools", "chat"):
        module = tasks.get_task(name)
        assert module.NAME == name and all(hasattr(module, k) for k in tasks.REQUIRED)
    with pytest.raises(UserError, match=r"^--task: unknown task 'x' \(choose from chat, dot, tools\)$"):
        tasks.get_task("x")
    monkeypatch.setitem(tasks.TASK_MODULES, "ghost", "mlx_tune.tasks.no_such_module")
    with pytest.raises(UserError, match="task 'ghost' is not available"):
        tasks.get_task("ghost")
    monkeypatch.setitem(tasks.TASK_MODULES, "half", "mlx_tune.eval.task_score")  # lacks the contract
    with pytest.raises(UserError, match="task 'half' .* lacks NAME, SUMMARY, score"):
        tasks.get_task("half")


def test_task_data_commands(monkeypatch):
    assert [name for name, _ in tasks.data_commands()] == ["combine", "dot-examples"]
    monkeypatch.setitem(tasks.DATA_COMMANDS, "graphs", "mlx_tune.tasks.no_such_module:command")
    assert [name for name, _ in tasks.data_commands()] == [
        "combine",
        "dot-examples",
    ]  # a task that cannot load is left out


def test_columns_declared_or_from_the_rows():
    assert tasks.columns(chat, [])[:3] == [("exact", "exact_match"), ("short acc", "short_answer"),
                                           ("rouge-L", "rouge_l")]  # fmt: skip
    entries = [{"accuracy": {"parse": 0.5}}, {"accuracy": {"parse": 0.1, "f1": 0.2}}]
    assert tasks.columns(tools, entries) == [("parse", "parse"), ("f1", "f1")]  # tools declares none here


def test_tools_adapter_is_todays_scoring_and_baselines(tmp_path):
    queries = [r for r in make_records(9) if metrics.expected_category(r) == "direct"]
    texts = ["Thing0 holds item number 0.", "no", "Thing8 holds item."]
    scored = tools.score(queries, texts, repos_dir=tmp_path)
    assert scored["rows"] == metrics.score(queries, texts, repos_dir=tmp_path)["per_query"]
    assert (
        scored["accuracy"]["rouge_l"]
        == metrics.score(queries, texts, repos_dir=tmp_path)["accuracy"]["rouge_l"]
    )
    assert tools.baselines(queries) == {n: baselines.answers(n, queries) for n in baselines.BASELINES}
    with pytest.raises(UserError, match="mlx-tune demo"):
        tools.build_demo_data(tmp_path)


def test_phase_configs_name_a_task(tmp_path):
    d = tmp_path / "phases"
    d.mkdir()
    (d / "phase1.yaml").write_text("phase: 1\ninputs: [a.jsonl]\ntask: chat\n")
    (d / "phase2.yaml").write_text("phase: 2\nextends: 1\n")
    (d / "phase3.yaml").write_text("phase: 3\ninputs: [a.jsonl]\ntask: poems\n")
    assert load_phase(1, d).task == "chat" and load_phase(2, d).task == "chat"
    assert load_phase(5).task == "tools"  # the shipped phases name none: tools
    with pytest.raises(
        UserError, match=r"phase3.yaml: task: unknown task 'poems' \(choose from chat, dot, tools\)"
    ):
        load_phase(3, d)
    (tmp_path / "a.jsonl").write_text("{}\n")
    with pytest.raises(
        UserError, match=r"task: chat: `data merge` builds tools data; .*mlx-tune data combine"
    ):
        merge_phase(str(tmp_path / "phases" / "phase1.yaml"), tmp_path / "out", d)


def test_cli_task_options(tmp_path):
    bad = CliRunner().invoke(main, ["demo", "--task", "nope"])
    assert "--task: unknown task 'nope'" in one_line_error(bad)
    out = CliRunner().invoke(main, ["demo", "--help"]).output
    assert "--task" in out and "chat" in out
    assert "combine" in CliRunner().invoke(main, ["data", "--help"]).output


def test_task_benchmark_on_a_tiny_model(tmp_path, tiny_model):
    from mlx_tune.eval.task_score import run_task_benchmark

    def rec(q: str, a: str, origin: str) -> dict:
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "meta": {"category": "direct", "origin": origin, "source": "file:t", "generator": "t"}}  # fmt: skip

    queries = [rec(f"What does f{i} do?", f"It returns {i}.", ("real", "synthetic")[i % 2]) for i in range(4)]
    results = run_task_benchmark("chat", {"base": str(tiny_model)}, queries, tmp_path / "bench",
                                 train=queries[:2], max_tokens=4)  # fmt: skip
    model, *rest = results["models"]
    assert model["kind"] == "model" and [m["name"] for m in rest] == ["constant", "nearest-train"]
    assert model["perplexity"] > 1 and model["accuracy"]["perplexity/real"] > 1
    assert model["accuracy"]["perplexity/synthetic"] > 1 and "perplexity/real" not in rest[0]["accuracy"]
    low, high = model["ci"]["perplexity/real"]
    assert low <= model["accuracy"]["perplexity/real"] <= high and low < high
    # the pooled perplexity of all queries is evaluate.perplexity's (one pass over all of them)
    real = [q for q in queries if q["meta"]["origin"] == "real"]
    model_, tok = model_spec.load_model(str(tiny_model))
    assert model["accuracy"]["perplexity/real"] == pytest.approx(
        evaluate.perplexity(model_, tok, real), rel=1e-4
    )
    assert model["perplexity"] == pytest.approx(evaluate.perplexity(model_, tok, queries), rel=1e-4)
    assert model["generation_tps"] > 0 and results["settings"]["task"] == "chat"
    # the shared measuring step (bench_model.measure_model) also gives memory and sizes; no load probes
    assert model["peak_memory_gb"] > 0 and model["size_bytes"] > 0 and model["stopped_broken_calls"] == 0
    assert (
        model["load_time_s"] is None and model["load_times_s"] == [] and results["settings"]["repeats"] == 0
    )
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["models"][0]["accuracy"] == model["accuracy"]
    md = (tmp_path / "bench" / "results.md").read_text()
    assert "ppl real" in md and "n/a" in md and "Load time: not measured." in md and "peak GB" in md
    assert bench_report.redraw(Path(tmp_path / "bench"))["settings"]["task"] == "chat"


def test_bench_task_chat_cli(tmp_path, tiny_model):
    from mlx_tune import fileio
    from mlx_tune.eval import bench

    recs = [{"messages": [{"role": "user", "content": f"Is N{i} a class?"}, {"role": "assistant", "content": "class"}],
             "meta": {"category": "direct", "origin": "synthetic", "source": "file:t", "generator": "t"}}
            for i in range(3)]  # fmt: skip
    fileio.write_jsonl(tmp_path / "test.jsonl", recs)
    fileio.write_jsonl(tmp_path / "train.jsonl", recs[:1])
    args = ["--task", "chat", "--queries", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "out")]
    model = ["--model", f"base={tiny_model}", "--max-tokens", "2"]
    result = CliRunner().invoke(bench.command, [*args, *model, "--repeats", "1"])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    # --repeats counts for every task: one fresh-process load, its time in the row and the report
    assert res["settings"]["repeats"] == 1 and len(res["models"][0]["load_times_s"]) == 1
    assert res["models"][0]["load_time_s"] == res["models"][0]["load_times_s"][0] > 0
    assert "Load time: median of 1 fresh processes." in (tmp_path / "out" / "results.md").read_text()
    assert res["settings"]["train"] == str(tmp_path / "train.jsonl") and res["settings"]["n_queries"] == 3
    assert res["models"][2]["name"] == "nearest-train" and res["models"][2]["accuracy"]["exact_match"] == 1.0
    assert "--task chat: pass --model" in one_line_error(CliRunner().invoke(bench.command, args))
    (tmp_path / "empty").mkdir()
    both = [
        *args,
        "--model",
        f"base={tiny_model}",
        "--model",
        f"broken={tmp_path / 'empty'}",
        "--max-tokens",
        "2",
        "--repeats",
        "0",
    ]
    result = CliRunner().invoke(bench.command, both)
    assert result.exit_code == 1 and "1 of 2 models failed: broken" in result.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["models"][0]["error"] is None and res["models"][1]["error"]


def test_chat_demo_end_to_end_with_tiny_settings(tmp_path, tiny_model):
    from mlx_tune.tasks.demo import TaskDemoSettings, run_task_demo

    logs: list[str] = []
    s = TaskDemoSettings(
        model=str(tiny_model),
        preset="tiny",
        out=tmp_path / "demo",
        iters=2,
        limit=6,
        max_tokens=4,
        log=logs.append,
    )
    results = run_task_demo("chat", s)
    assert [m["name"] for m in results["models"]] == ["base", "tuned", "constant", "nearest-train"]
    assert all(m["error"] is None for m in results["models"])
    manifest = json.loads((tmp_path / "demo" / "data" / "manifest.json").read_text())
    assert manifest["origin"]["real"] > 50 and manifest["origin"]["synthetic"] > 50
    run = json.loads((tmp_path / "demo" / "demo_run.json").read_text())
    assert run["train"]["status"] == "completed" and set(run["stage_seconds"]) == {
        "data",
        "base model",
        "train",
        "benchmark",
    }
    assert (tmp_path / "demo" / "adapter" / "adapters.safetensors").is_file()
    assert any("finished in" in line for line in logs)


def test_training_refuses_records_of_another_task(tmp_path):
    """`train --task` (or a phase's `task:`) names the records' task; a record of another task is a
    file:line error before any model loads, so a chat set never trains as tool use by mistake."""
    from mlx_tune import fileio
    from mlx_tune.tasks import record_task
    from mlx_tune.training.batching import load_records
    from mlx_tune.training.train_config import TrainSettings, resolve_settings

    chat = {
        "messages": [
            {"role": "user", "content": "What is a set?"},
            {"role": "assistant", "content": "A set."},
        ],
        "meta": {
            "category": "direct",
            "origin": "real",
            "source": "file:x",
            "generator": "t",
            "task": "chat",
        },
    }
    fileio.write_jsonl(tmp_path / "train.jsonl", [chat, chat])
    assert [record_task(r) for r in load_records(tmp_path / "train.jsonl", "chat")] == ["chat", "chat"]
    with pytest.raises(
        UserError, match=r"train\.jsonl:1: a chat record, but the task is tools \(--task chat"
    ):
        load_records(tmp_path / "train.jsonl", "tools")
    assert record_task({"messages": [], "tools": []}) == "tools"
    # the setting's choices are the registry's tasks
    assert set(typing.get_args(typing.get_type_hints(TrainSettings)["task"])) == set(tasks.task_names())
    runner = CliRunner()
    result = runner.invoke(main, ["data", "validate", str(tmp_path / "train.jsonl"), "--task", "dot"])
    assert result.exit_code != 0 and "train.jsonl:2: a chat record, but --task is dot" in result.output
    result = runner.invoke(main, ["data", "validate", str(tmp_path / "train.jsonl"), "--task", "chat"])
    assert result.exit_code == 0, result.output
    assert (
        resolve_settings(overrides={"model": "m", "data": "d", "iters": 1, "task": "chat"}, notes=[]).task
        == "chat"
    )
    with pytest.raises(UserError, match="task"):
        resolve_settings(overrides={"model": "m", "data": "d", "iters": 1, "task": "poems"}, notes=[])
