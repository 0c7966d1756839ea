"""The agent loop: scripted models on a real fixture repository, tool errors and step limits, the
batched loop against the per-query loop on the tiny model, and the final-answer score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_records

from mlx_tune import records, tools
from mlx_tune.eval import agent
from mlx_tune.models import model_spec

ALPHA = '"""Alpha things."""\n\n\nclass Alpha:\n    """Holds the alpha value."""\n\n    value = 1\n'
BETA = "def beta(x):\n    return x + 1\n"


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "demo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "alpha.py").write_text(ALPHA)
    (root / "pkg" / "beta.py").write_text(BETA)
    return root


def query(question: str, category: str = "grep", **meta) -> dict:
    base = {"category": category, "origin": "synthetic", "source": "repo:demo", "generator": "test/1"}
    base |= {"repo": "demo"} | meta
    if category == "direct":
        return records.direct_record(question, "An answer.", base)
    return records.tool_call_record(question, "grep", {"pattern": "x"}, base)


def call(tool: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': tool, 'arguments': arguments})}\n</tool_call>"


def tool_outputs(conv: dict) -> list[str]:
    return [m["content"] for m in conv["messages"] if m["role"] == "tool"]


def grounded(conv: dict) -> str:
    """A scripted model: grep for the question's last word, then answer from the grep output."""
    outputs = tool_outputs(conv)
    if not outputs:
        word = conv["messages"][-1]["content"].rstrip("?").split()[-1]
        return call("grep", pattern=rf"class {word}\b")
    first = outputs[-1].splitlines()[0]
    m = re.match(r"(.+?):(\d+):", first)
    return f"It is defined in {m.group(1)}:{m.group(2)}." if m else "No matches: it is not in the repository."


def test_scripted_model_runs_real_tools_and_answers_from_them(repo):
    queries = [
        query("Where is the class Alpha?", path="pkg/alpha.py", line=4),
        query("Where is the class Omega?", found=False),
        query("What does zip do?", "direct"),
    ]

    def generate(convs):
        return ["zip pairs items." if "zip" in c["messages"][-1]["content"] else grounded(c) for c in convs]

    run = agent.run_agent(queries, lambda r: repo, generate)
    alpha, omega, direct = run.results
    assert [m["role"] for m in alpha.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert alpha.messages[2] == records.call_message("grep", {"pattern": r"class Alpha\b"}, "tools", "call_0")
    assert alpha.messages[3]["content"] == "pkg/alpha.py:4:class Alpha:"  # the real tool's output
    assert alpha.final == "It is defined in pkg/alpha.py:4." and alpha.ended == "answer"
    assert (alpha.steps, alpha.tool_errors, alpha.step_limit) == (1, 0, False)
    assert omega.messages[3]["content"] == "No matches." and omega.steps == 1
    assert direct.steps == 0 and direct.messages[-1] == {"role": "assistant", "content": "zip pairs items."}
    assert run.rounds == 2  # the direct query ended in round 1; the other two in round 2
    summary = agent.summarize(queries, run, lambda r: repo)
    assert summary["success"] == [True, True, True] and summary["trajectory_success"] == 1.0
    assert summary["mean_steps"] == pytest.approx(2 / 3)
    assert (summary["tool_errors"], summary["step_limit_hits"]) == (0, 0)
    assert summary["wall_time"] >= summary["generation_time"] + summary["tool_time"] > 0


def test_tool_errors_invalid_calls_and_the_step_limit(repo):
    queries = [
        query("Read the missing file", path="pkg/alpha.py"),
        query("A broken call", path="pkg/alpha.py"),
        query("No repository here", path="pkg/alpha.py"),
        query("A call after an answer?", path="pkg/beta.py"),
    ]
    script = {
        "Read the missing file": lambda c: call("read", path="pkg/missing.py"),
        "A broken call": lambda c: '<tool_call>\n{"name": "grep", "arguments": {"pattern": }',
        "No repository here": lambda c: call("grep", pattern="Alpha") if not tool_outputs(c) else "Gave up.",
        "A call after an answer?": lambda c: call("read", path="pkg/beta.py", start_line=1, end_line=1),
    }

    def generate(convs):
        return [script[c["messages"][1]["content"]](c) for c in convs]

    run = agent.run_agent(
        queries, lambda r: None if "No repository" in r["messages"][1]["content"] else repo, generate
    )
    missing, broken, rootless, reader = run.results
    assert (missing.steps, missing.tool_errors, missing.step_limit, missing.ended) == (
        3,
        3,
        True,
        "step_limit",
    )
    assert all(
        m["content"].startswith("Error: path 'pkg/missing.py'")
        for m in missing.messages
        if m["role"] == "tool"
    )
    assert len(missing.texts) == 4  # three calls run, the fourth is over the limit and not run
    assert (broken.steps, broken.tool_errors, broken.ended) == (0, 1, "invalid_call")
    assert rootless.messages[3]["content"] == agent.NO_ROOT_OUTPUT and rootless.tool_errors == 1
    assert rootless.ended == "answer" and rootless.final == "Gave up."
    assert (
        reader.messages[3]["content"]
        == "pkg/beta.py (lines 1-1 of 2)\n1| def beta(x):\n... 1 more lines (read with start_line=2)"
    )
    summary = agent.summarize(queries, run, lambda r: repo)
    assert summary["success"] == [False] * 4
    assert (summary["tool_errors"], summary["step_limit_hits"]) == (3 + 1 + 1, 2)
    assert summary["ended"] == {"answer": 1, "invalid_call": 1, "step_limit": 2}


def test_a_call_that_runs_over_its_time_limit_is_a_tool_error(repo):
    (repo / "slow.txt").write_text("a" * 40 + "!\n")
    q = query("Catastrophic", path="slow.txt")
    answers = iter([call("grep", pattern="(a+)+$"), "It timed out."])
    with tools.Sandbox(timeout_s=0.5) as sandbox:
        run = agent.run_agent([q], lambda r: repo, lambda convs: [next(answers)], sandbox=sandbox)
    res = run.results[0]
    assert res.tool_errors == 1 and res.messages[3]["content"].startswith("Error: grep ran over")
    assert res.ended == "answer" and run.tool_time >= 0.5


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return model_spec.load_model(str(tiny_model))


def scripted_first_round(generator):
    """Round 1 is a scripted valid call; later rounds are the real model's answers (so the real
    model answers prompts that hold a call and its tool output)."""

    def generate(convs):
        real = [c for c in convs if tool_outputs(c)]
        texts = iter(generator(real).texts if real else [])
        return [next(texts) if tool_outputs(c) else call("grep", pattern="class Alpha") for c in convs]

    return generate


def test_batched_loop_equals_the_plain_loop_on_the_tiny_model(loaded, repo):
    model, tokenizer = loaded
    queries = make_records(6) + make_records(3, fmt="code")
    for q in queries:
        q["meta"]["path"] = "pkg/alpha.py"
    ours = agent.agent_loop(model, tokenizer, queries, lambda r: repo, max_tokens=16, batch_size=4)
    plain = agent.agent_loop_plain(model, tokenizer, queries, lambda r: repo, max_tokens=16)
    assert all(agent.same_outcome(a, b) for a, b in zip(ours.results, plain.results, strict=True))
    assert ours.generation_tokens > 0 and ours.rounds >= 1

    # Multi-round prompts (a call and its real output) through the real model, both ways.
    batched = agent.batched_generator(model, tokenizer, max_tokens=16, batch_size=4)
    ours = agent.run_agent(queries[:6], lambda r: repo, scripted_first_round(batched), max_steps=1)
    per_query = agent.plain_generator(model, tokenizer, max_tokens=16)
    plain = agent.run_agent(queries[:6], lambda r: repo, scripted_first_round(per_query), max_steps=1)
    assert all(
        r.steps == 1 and "pkg/alpha.py:4:class Alpha:" in r.messages[3]["content"] for r in ours.results
    )
    assert all(agent.same_outcome(a, b) for a, b in zip(ours.results, plain.results, strict=True))
    assert [len(r.texts) for r in ours.results] == [2] * 6


def located(**meta) -> dict:
    return query("Where is it?", **({"path": "pkg/alpha.py"} | meta))


@pytest.mark.parametrize(
    ("meta", "answer", "ok"),
    [
        ({}, "Alpha is defined in `pkg/alpha.py`.", True),
        ({}, "Alpha is defined in ./pkg//alpha.py.", True),
        ({}, "Alpha is defined in demo/pkg/alpha.py.", True),  # REPO/path
        ({}, "Alpha is defined in alpha.py.", False),  # a bare basename
        ({}, "Alpha is defined in pkg/beta.py.", False),  # the wrong file
        ({}, call("read", path="pkg/alpha.py"), False),  # still calling: no final answer
        ({"line": 4}, "See pkg/alpha.py:4: class Alpha.", True),
        ({"line": 4}, "It is in pkg/alpha.py, line 6.", True),  # within 2
        ({"line": 4}, "It is in pkg/alpha.py (line 3).", True),
        ({"line": 4}, "It is at line 5 of `pkg/alpha.py`.", True),
        ({"line": 4}, "It is in pkg/alpha.py at line 40.", False),  # far
        ({"line": 4}, "It is in pkg/alpha.py.", False),  # no line
        ({"line": 4}, "Line 4 is in pkg/beta.py, not pkg/alpha.py:30.", False),
    ],
)
def test_trajectory_success_on_positive_questions(meta, answer, ok):
    assert agent.trajectory_success(located(**meta), answer, calls=1) is ok


def test_trajectory_success_on_negative_and_direct_questions(repo):
    negative = query("Where is Omega?", found=False)
    assert agent.trajectory_success(negative, "No matches: Omega is not in the repository.", root=repo)
    assert agent.trajectory_success(
        negative, "I couldn't find Omega; pkg/alpha.py has Alpha only.", root=repo
    )
    # Naming a file that does not exist is a hallucination, even in a "not found" answer.
    assert not agent.trajectory_success(negative, "Omega does not exist, see pkg/omega.py.", root=repo)
    assert not agent.trajectory_success(negative, "No file pkg/alpha.py here.", root=None)
    assert not agent.trajectory_success(negative, "Omega is defined in pkg/alpha.py:4.", root=repo)
    # A "not found" answer to a question whose answer exists fails.
    assert not agent.trajectory_success(located(line=4), "No matches: it is not in the repository.")
    direct = query("What does zip do?", "direct")
    assert agent.trajectory_success(direct, "zip pairs items.", calls=0)
    assert not agent.trajectory_success(direct, "zip pairs items.", calls=1)
    assert not agent.trajectory_success(direct, call("grep", pattern="zip"), calls=0)
    code = records.direct_record("What is 2+2?", "4", {"category": "direct"}, fmt="code")
    assert not agent.trajectory_success(code, "```python\ngrep('four')\n```")


def test_eval_speed_agent_mode(tiny_model, repo, tmp_path, capsys):
    import importlib.util

    from mlx_tune.fileio import write_jsonl

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "eval_speed.py"
    spec = importlib.util.spec_from_file_location("eval_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_jsonl(tmp_path / "q.jsonl", make_records(6))
    args = ["--model", str(tiny_model), "--queries", str(tmp_path / "q.jsonl"), "--repos", str(repo.parent)]
    assert module.main([*args, "--agent", "--max-tokens", "8", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("ours (batched rounds): ") for line in out)
    assert re.search(r"same outcome: 6/6", "\n".join(out))
    m = re.fullmatch(r"ratio: (\d+\.\d\d) agreement: (\d\.\d\d\d)", out[-1])
    assert m and float(m.group(1)) > 0 and m.group(2) == "1.000"
