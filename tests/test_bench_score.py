"""Scoring without a model: baselines, `bench score`, `bench report`, the staged output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_records

from mlx_tune import UserError, records
from mlx_tune.cli import main as cli_main
from mlx_tune.eval import baselines, bench, bench_report, bench_score, metrics
from mlx_tune.fileio import write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def project(tmp_path):
    """Queries (make_records) with their repository under tmp/repos/demo, and reference answers."""
    root = tmp_path / "repos" / "demo" / "demo"
    root.mkdir(parents=True)
    for i in range(24):
        (root / f"mod{i}.py").write_text(f"class Thing{i}:\n    value = {i}\n")
    queries = make_records(24)
    queries[2]["meta"]["unseen_template"] = True
    queries[3]["meta"]["unseen_template"] = True
    write_jsonl(tmp_path / "test.jsonl", queries)
    answers = []
    for q in queries:
        call = records.record_call(q)
        text = records.answer_of(q).get("content")
        if call:
            text = "<tool_call>\n" + json.dumps({"name": call[0], "arguments": call[1]}) + "\n</tool_call>"
        answers.append({"text": text})
    write_jsonl(tmp_path / "answers.jsonl", answers)
    return tmp_path, queries


def test_constant_baselines_cannot_score(project):
    tmp, queries = project
    for name in ("never-call", "always-grep"):
        result = metrics.score(queries, baselines.answers(name, queries), repos_dir=tmp / "repos")
        acc = result["accuracy"]
        assert acc["balanced_discrimination"] == 0.5, name
        assert acc["call_match"] <= 0.05 and acc["executable"] <= 0.05, name
    # ...while plain accuracy rewards always calling on a tool-heavy set (what the old figure hid).
    always = metrics.score(queries, baselines.answers("always-grep", queries), repos_dir=tmp / "repos")
    assert always["accuracy"]["discrimination"] == pytest.approx(16 / 24)


def test_keyword_baseline_decisions():
    assert baselines.keyword_decision("What does the json module's dumps do in Python?") == ("direct", None)
    assert baselines.keyword_decision("What is an HTML table element for?") == ("direct", None)
    assert baselines.keyword_decision("Where is parse_config defined?") == (
        "grep",
        {"pattern": "parse_config"},
    )
    assert baselines.keyword_decision("Which file handles the retries?") == ("grep", {"pattern": "retries"})
    assert baselines.keyword_decision("Show me src/app/main.py.") == ("read", {"path": "src/app/main.py"})
    assert baselines.keyword_decision("Show me ../../etc/passwd.txt")[0] == "grep"  # never an unsafe read
    code = make_records(1, fmt="code")[0]
    assert baselines.always_grep(code) == "```python\ngrep(pattern='.')\n```"
    assert metrics.parse_prediction(baselines.keyword(code), "code").valid


def test_bench_score_end_to_end_and_report(project):
    tmp, queries = project
    out = tmp / "run"
    args = ["--queries", str(tmp / "test.jsonl"), "--predictions", str(tmp / "answers.jsonl")]
    args += ["--out", str(out), "--repos", str(tmp / "repos")]
    result = CliRunner().invoke(bench.command, ["score", *args])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    first = data["models"][0]
    assert (first["name"], first["kind"]) == ("answers", "model")
    assert first["accuracy"]["balanced_discrimination"] == 1.0 and first["accuracy"]["call_match"] == 1.0
    low, high = first["ci"]["call_match"]
    assert low < 1.0 == high  # 16 of 16: Wilson's lower bound stays below 1
    assert first["subsets"]["unseen_template"]["n"] == 2
    assert [m["name"] for m in data["models"][1:]] == list(baselines.BASELINES)
    assert all(m["kind"] == "baseline" and m["generation_tps"] is None for m in data["models"][1:])
    assert data["settings"]["mode"] == "score" and data["settings"]["n_queries"] == 24
    assert (out / "chart.png").read_bytes()[:8] == PNG
    md = (out / "results.md").read_text()
    assert "| answers | 100% [" in md and "never-call (baseline)" in md and "Unseen phrasing (2 queries" in md
    assert "balanced" in result.output and "keyword (baseline)" in result.output
    assert len((out / "predictions" / "answers.jsonl").read_text().splitlines()) == 24
    assert (out / "predictions" / "baseline-keyword.jsonl").is_file()
    # bench report redraws results.md and chart.png from results.json alone.
    (out / "results.md").unlink()
    (out / "chart.png").unlink()
    again = CliRunner().invoke(cli_main, ["bench", "report", str(out)])  # through `mlx-tune bench`
    assert again.exit_code == 0, again.output
    assert (out / "results.md").read_text() == md and (out / "chart.png").read_bytes()[:8] == PNG
    assert data["settings"]["missing_repos"] == [] and "NOTE" not in md
    # Without the repository the call metrics are n/a, and the table says why.
    args[args.index(str(tmp / "repos"))] = str(tmp / "elsewhere")
    result = CliRunner().invoke(bench.command, ["score", *args])
    assert result.exit_code == 0 and "NOTE: no folder for repositories demo" in result.output
    assert json.loads((out / "results.json").read_text())["models"][0]["accuracy"]["call_match"] is None
    # --repo names a repository's folder outside --repos.
    result = CliRunner().invoke(bench.command, ["score", *args, "--repo", f"demo={tmp / 'repos' / 'demo'}"])
    assert result.exit_code == 0 and "NOTE" not in result.output
    assert json.loads((out / "results.json").read_text())["models"][0]["accuracy"]["call_match"] == 1.0
    for bad in ("demo", "../x=.", f"demo={tmp / 'nope'}"):
        result = CliRunner().invoke(bench.command, ["score", *args, "--repo", bad])
        assert result.exit_code == 1 and "--repo" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(bench.command, ["report", str(tmp / "nothing")])
    assert missing.exit_code == 1 and "results.json: no such file" in missing.output


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ['{"text": "a"}', '{"answer": "b"}'],
            "answers.jsonl:2: text: expected the answer as a string, got missing",
        ),
        (['{"text": "a"}', "{not json"], "answers.jsonl:2: not valid JSON"),
        (
            ['{"text": "a"}', '{"text": 3}'],
            "answers.jsonl:2: text: expected the answer as a string, got a int",
        ),
        (['{"text": "a", "index": 1}'], "answers.jsonl:1: index: 1, but this is answer 0"),
        (['{"text": "a"}'], "answers.jsonl: 1 answers for 24 queries"),
        (['["a"]'], "answers.jsonl:1: expected a JSON object"),
    ],
)
def test_bench_score_bad_predictions_are_one_line_errors(project, lines, message):
    tmp, _ = project
    (tmp / "answers.jsonl").write_text("\n".join(lines) + "\n")
    args = ["score", "--queries", str(tmp / "test.jsonl"), "--predictions", str(tmp / "answers.jsonl")]
    result = CliRunner().invoke(bench.command, [*args, "--out", str(tmp / "o")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp / "o" / "results.json").exists()


def test_non_utf8_predictions(project):
    tmp, _ = project
    (tmp / "answers.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(UserError, match=r"answers.jsonl:2: not UTF-8"):
        bench_score.read_predictions(tmp / "answers.jsonl", 2)


def test_interrupted_run_leaves_the_previous_results(project):
    tmp, _ = project
    out = tmp / "run"
    bench_score.score_predictions(tmp / "test.jsonl", tmp / "answers.jsonl", out, repos_dir=tmp / "repos")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "notes.txt").write_text("mine")
    (out / ".staging-old").mkdir()  # left inside --out by an earlier version: not carried over
    (tmp / ".run.99999999.x1.tmp").mkdir()  # left beside --out by a killed run (no such process)
    with pytest.raises(KeyboardInterrupt), bench_score.staged_output(out) as stage:
        (stage / "predictions").mkdir()
        (stage / "predictions" / "new.jsonl").write_text("{}\n")
        raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "notes.txt"} == before
    assert not (out / "predictions" / "new.jsonl").exists()
    assert not (tmp / ".run.99999999.x1.tmp").exists()
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".run.")] == []  # no staging folder left
    # A completed run replaces every output, drops predictions of models no longer run, keeps other files.
    (out / "predictions" / "gone.jsonl").write_text("{}\n")
    bench_score.score_predictions(
        tmp / "test.jsonl", tmp / "answers.jsonl", out, name="b", repos_dir=tmp / "repos"
    )
    assert sorted(p.name for p in (out / "predictions").iterdir())[:2] == [
        "b.jsonl",
        "baseline-always-grep.jsonl",
    ]
    assert not (out / "predictions" / "gone.jsonl").exists() and (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert json.loads((out / "results.json").read_text())["models"][0]["name"] == "b"


def test_fused_agreement_from_predictions(tmp_path):
    write_jsonl(tmp_path / "predictions" / "p7.jsonl", [{"text": t} for t in "abcd"])
    write_jsonl(tmp_path / "predictions" / "p7-fused-8bit.jsonl", [{"text": t} for t in "abcx"])
    entries = [{"name": "p7"}, {"name": "p7-fused-8bit"}, {"name": "p5-fused-8bit"}]
    assert bench.fused_agreement(entries, tmp_path) == {
        "p7-fused-8bit": {"adapter": "p7", "identical": 0.75, "queries": 4}
    }
    results = {"models": [], "fused_agreement": bench.fused_agreement(entries, tmp_path)}
    assert "p7-fused-8bit answers exactly as p7 on 75% of 4 queries" in bench_report.format_markdown(results)


def test_report_refuses_a_malformed_results_file(tmp_path):
    for text, message in [
        ("{not json", "results.json: not a results file"),
        ('{"models": [{"name": "m", "accuracy": {"macro_f1": "high"}}]}', "models[0].accuracy.macro_f1"),
        ('{"models": [{"name": "m", "ci": {"macro_f1": [0.1]}}]}', "models[0].ci.macro_f1"),
        ('{"models": [3]}', "models[0]: expected an object"),
    ]:
        (tmp_path / "results.json").write_text(text)
        result = CliRunner().invoke(bench.command, ["report", str(tmp_path)])
        assert result.exit_code == 1 and message in result.output, (text, result.output)
        assert "Traceback" not in result.output


def test_interrupted_score_exits_130(project, monkeypatch):
    tmp, _ = project

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "score_predictions", interrupted)
    args = ["score", "--queries", str(tmp / "test.jsonl"), "--predictions", str(tmp / "answers.jsonl")]
    result = CliRunner().invoke(bench.command, [*args, "--out", str(tmp / "o")])
    assert result.exit_code == 130 and "interrupted" in result.output


def test_domain_repository_defaults_to_this_package(tmp_path):
    import mlx_tune

    package = Path(mlx_tune.__file__).resolve().parent
    assert bench_score.named_roots((), tmp_path) == {"mlx_tune": str(package)}
    (tmp_path / "mlx_tune").mkdir()  # a copy in --repos wins
    assert bench_score.named_roots((), tmp_path) == {}
