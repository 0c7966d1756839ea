"""Scoring of hand-made model answers: parsing, validity, the sandbox, the aggregate metrics."""

from __future__ import annotations

import json
import os

import pytest
from conftest import make_records

from mlx_tune import metrics


def tool_text(name: str, arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.fixture
def repo(tmp_path):
    """A small repository matching make_records(): demo/modN.py defines ThingN."""
    root = tmp_path / "repo"
    (root / "demo").mkdir(parents=True)
    for i in range(12):
        (root / "demo" / f"mod{i}.py").write_text(f"class Thing{i}:\n    value = {i}\n")
    (tmp_path / "secret.txt").write_text("class Thing0 outside\n")
    return root


@pytest.fixture
def queries(repo):
    out = make_records(6)
    for r in out:
        r["meta"]["root"] = str(repo)
    return out  # grep, read, direct, grep, read, direct


def test_correct_call_parses_valid_and_executes(queries):
    q = queries[0]
    pred = metrics.parse_prediction(tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo"}))
    assert (pred.category, pred.attempted_call, pred.valid) == ("grep", True, True)
    with metrics.Sandbox() as sb:
        assert metrics.executable_ok(pred, q, sb) is True
        # A pattern that matches only another file does not find the expected one.
        other = metrics.parse_prediction(tool_text("grep", {"pattern": "class Thing3"}))
        assert metrics.executable_ok(other, q, sb) is False
        # The right pattern searched where the expected file is not.
        elsewhere = metrics.parse_prediction(
            tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo/mod3.py"})
        )
        assert metrics.executable_ok(elsewhere, q, sb) is False


def test_arguments_as_json_string_are_accepted():
    text = tool_text("read", json.dumps({"path": "demo/mod1.py"}))
    pred = metrics.parse_prediction(text)
    assert (pred.category, pred.valid, pred.arguments) == ("read", True, {"path": "demo/mod1.py"})


def test_wrong_tool_is_the_wrong_category_and_not_executable(queries):
    pred = metrics.parse_prediction(tool_text("read", {"path": "demo/mod0.py"}))
    assert pred.category == "read" and pred.valid
    with metrics.Sandbox() as sb:
        assert metrics.executable_ok(pred, queries[0], sb) is False
        # ...while the same call is right for the read query about that file's sibling? No: wrong file.
        assert metrics.executable_ok(pred, queries[1], sb) is False
        right = metrics.parse_prediction(tool_text("read", {"path": "./demo/mod1.py"}))
        assert metrics.executable_ok(right, queries[1], sb) is True


def test_malformed_json_and_unknown_tool_are_invalid_not_raised():
    bad = metrics.parse_prediction('<tool_call>\n{"name": "grep", "arguments": {"pattern": \n</tool_call>')
    assert (bad.category, bad.attempted_call, bad.valid) == ("invalid", True, False)
    assert "not valid JSON" in bad.problems[0]
    unknown = metrics.parse_prediction(tool_text("rm", {"path": "x"}))
    assert unknown.category == "invalid" and not unknown.valid
    missing = metrics.parse_prediction(tool_text("grep", {"path": "demo"}))
    assert missing.category == "grep" and not missing.valid
    assert any("pattern: required" in p for p in missing.problems)


def test_path_escaping_the_repo_is_rejected(repo, queries, tmp_path):
    pred = metrics.parse_prediction(tool_text("read", {"path": "../secret.txt"}))
    assert pred.category == "read" and not pred.valid
    with pytest.raises(ValueError, match="outside"):
        metrics.sandbox_read(repo, "../secret.txt")
    with pytest.raises(ValueError, match="outside"):
        metrics.sandbox_grep(repo, "Thing0", "/etc")
    # A symlink inside the repo that points outside it is neither read nor searched.
    os.symlink(tmp_path / "secret.txt", repo / "demo" / "link.txt")
    with pytest.raises(ValueError, match="outside"):
        metrics.sandbox_read(repo, "demo/link.txt")
    assert metrics.sandbox_grep(repo, "outside") == []
    assert metrics.sandbox_grep(repo, r"class Thing0\b") == ["demo/mod0.py"]


def test_code_mode_calls_literal_and_non_literal():
    ok = metrics.parse_prediction("```python\ngrep('class Thing0', path='demo')\n```", "code")
    assert (ok.category, ok.valid, ok.arguments) == (
        "grep",
        True,
        {"pattern": "class Thing0", "path": "demo"},
    )
    non_literal = metrics.parse_prediction("```python\nread(path=os.getcwd())\n```", "code")
    assert (non_literal.category, non_literal.attempted_call, non_literal.valid) == ("invalid", True, False)
    direct = metrics.parse_prediction("It stores the item number.", "code")
    assert (direct.category, direct.attempted_call) == ("direct", False)


def test_direct_answer_and_rouge():
    pred = metrics.parse_prediction("Thing2 holds item number 2.<|im_end|>garbage")
    assert (pred.category, pred.attempted_call) == ("direct", False)
    assert metrics.rouge_l("Thing2 holds item number 2.", "Thing2 holds item number 2.") == pytest.approx(1.0)
    assert metrics.rouge_l("nothing alike", "Thing2 holds item number 2.") == 0.0


def test_catastrophic_regex_times_out(repo):
    (repo / "slow.txt").write_text("a" * 40 + "b\n")
    with metrics.Sandbox(timeout_s=1.0) as sb:
        status, message = sb.run(repo, "grep", {"pattern": "^(a+)+$", "path": "slow.txt"})
        assert status == "timeout" and "1s" in message
        # The sandbox recovers: the next call runs in a fresh worker.
        assert sb.run(repo, "grep", {"pattern": r"Thing1\b", "path": "demo"}) == ("ok", ["demo/mod1.py"])


def test_score_aggregates(queries):
    outputs = [
        tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo"}),  # grep: right, executes
        tool_text("grep", {"pattern": "Thing1"}),  # read expected: wrong tool
        "Thing2 holds item number 2.",  # direct: exact
        '<tool_call>\n{"name": "grep", "arguments": {bad json}}\n</tool_call>',  # grep expected: invalid
        tool_text("read", {"path": "demo/mod4.py"}),  # read: right, executes
        tool_text("read", {"path": "../secret.txt"}),  # direct expected, but a call escaping the repo
    ]
    result = metrics.score(queries, outputs)
    acc = result["accuracy"]
    assert acc["discrimination"] == pytest.approx(5 / 6)
    assert acc["category"] == pytest.approx(3 / 6)
    assert acc["call_validity"] == pytest.approx(3 / 5)
    assert acc["executable"] == pytest.approx(2 / 4)
    assert acc["rouge_l"] == pytest.approx(0.5)
    assert result["per_query"][5]["rouge_l"] == 0.0  # a call is not a direct answer
    assert result["confusion"]["grep"] == {"grep": 1, "read": 0, "direct": 0, "invalid": 1}
    assert result["confusion"]["read"] == {"grep": 1, "read": 1, "direct": 0, "invalid": 0}
    assert result["confusion"]["direct"] == {"grep": 0, "read": 1, "direct": 1, "invalid": 0}
    assert result["counts"] == {"queries": 6, "attempted_calls": 5, "executable_checked": 4, "direct": 2}


def test_executable_is_skipped_without_the_repository():
    q = make_records(1)  # meta.root unset, data/repos/demo absent
    result = metrics.score(q, [tool_text("grep", {"pattern": "x"})], base="/nonexistent")
    assert result["accuracy"]["executable"] is None
    assert result["per_query"][0]["executable"] is None


@pytest.mark.parametrize("fmt", ["tools", "code"])
def test_reference_answers_score_perfectly(repo, fmt):
    from mlx_tune import records

    queries = make_records(6, fmt=fmt)
    outputs = []
    for r in queries:
        r["meta"]["root"] = str(repo)
        call = records.record_call(r)
        if call is None:
            outputs.append(records.answer_of(r)["content"])
        elif fmt == "tools":
            outputs.append(tool_text(*call))
        else:
            outputs.append(records.answer_of(r)["content"])
    acc = metrics.score(queries, outputs)["accuracy"]
    assert acc == {
        "discrimination": 1.0,
        "category": 1.0,
        "call_validity": 1.0,
        "executable": 1.0,
        "rouge_l": pytest.approx(1.0),
    }
