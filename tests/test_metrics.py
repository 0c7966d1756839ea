"""Scoring of hand-made model answers: parsing, the call metrics, decision metrics, intervals."""

from __future__ import annotations

import json

import pytest
from conftest import make_records

from mlx_tune import records
from mlx_tune.eval import intervals, metrics
from mlx_tune.eval.call_check import CallChecker, subject_words
from mlx_tune.tools import Sandbox


def tool_text(name: str, arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.fixture
def repos(tmp_path):
    """A repos folder holding ``demo`` (make_records(): demo/modN.py defines ThingN) and a secret
    file beside it that no call may read."""
    root = tmp_path / "repos" / "demo"
    (root / "demo").mkdir(parents=True)
    for i in range(12):
        (root / "demo" / f"mod{i}.py").write_text(f"class Thing{i}:\n    value = {i}\n")
    (tmp_path / "secret.txt").write_text("class Thing0 outside\n")
    return tmp_path / "repos"


@pytest.fixture
def check(repos):
    """``check(answer_text, record) -> (call_match, executable)``."""
    with Sandbox() as sandbox:
        checker = CallChecker(sandbox)

        def run(text: str, record: dict):
            pred = metrics.parse_prediction(text, metrics.record_format(record))
            return checker.check(pred, record, metrics.repo_root(record, repos))

        yield run


def grep_query(i: int = 0, **meta) -> dict:
    r = make_records(i + 1)[i]
    assert records.record_category(r) == "grep"
    r["meta"].update(meta)
    return r


def negative_query() -> dict:
    meta = {"category": "grep", "origin": "real", "source": "repo:demo", "generator": "t", "repo": "demo"}
    meta["found"] = False
    return records.tool_call_record(
        "Where is the widget frobnicated?", "grep", {"pattern": r"def frobnicate_widget\b"}, meta
    )


def test_parse_valid_invalid_and_code_mode():
    pred = metrics.parse_prediction(tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo"}))
    assert (pred.category, pred.attempted_call, pred.valid) == ("grep", True, True)
    as_string = metrics.parse_prediction(tool_text("read", json.dumps({"path": "demo/mod1.py"})))
    assert (as_string.category, as_string.valid, as_string.arguments) == (
        "read",
        True,
        {"path": "demo/mod1.py"},
    )
    bad = metrics.parse_prediction('<tool_call>\n{"name": "grep", "arguments": {"pattern": \n</tool_call>')
    assert (bad.category, bad.attempted_call, bad.valid) == ("invalid", True, False)
    assert "not valid JSON" in bad.problems[0]
    deep = metrics.parse_prediction("<tool_call>" + "[" * 100_000 + "</tool_call>")
    assert (deep.category, deep.attempted_call) == ("invalid", True)
    assert metrics.parse_prediction(tool_text("rm", {"path": "x"})).category == "invalid"
    nested = metrics.parse_prediction(tool_text("grep", {"pattern": "(" * 5000 + ")" * 5000}))
    assert (nested.category, nested.valid) == ("grep", False) and "nested" in nested.problems[0]
    missing = metrics.parse_prediction(tool_text("grep", {"path": "demo"}))
    assert missing.category == "grep" and not missing.valid
    ok = metrics.parse_prediction("```python\ngrep('class Thing0', path='demo')\n```", "code")
    assert (ok.category, ok.valid, ok.arguments) == (
        "grep",
        True,
        {"pattern": "class Thing0", "path": "demo"},
    )
    non_literal = metrics.parse_prediction("```python\nread(path=os.getcwd())\n```", "code")
    assert (non_literal.category, non_literal.valid) == ("invalid", False)
    direct = metrics.parse_prediction("Thing2 holds item number 2.<|im_end|>garbage")
    assert (direct.category, direct.attempted_call) == ("direct", False)


def test_repo_root_is_the_benchmarks_choice(repos, tmp_path):
    (tmp_path / "html").mkdir()
    assert metrics.repo_root({"meta": {"repo": "demo", "root": "/"}}, repos) == repos / "demo"
    for name in ("../../etc", "demo/../..", "/etc", "..", "a/b", "", None, 3):
        assert metrics.repo_root({"meta": {"repo": name, "root": "/"}}, repos) is None, name
    assert metrics.repo_root({"meta": {"root": str(tmp_path)}}, repos) is None
    assert (
        metrics.repo_root({"meta": {"repo": "html", "source": "html"}}, repos, tmp_path / "html")
        == tmp_path / "html"
    )
    assert metrics.repo_root({"meta": {"repo": "absent"}}, repos) is None
    named = {"absent": tmp_path / "html"}  # the benchmark names a folder; the data cannot
    assert metrics.repo_root({"meta": {"repo": "absent"}}, repos, named_roots=named) == tmp_path / "html"
    assert metrics.repo_root({"meta": {"repo": "../absent"}}, repos, named_roots=named) is None


def test_a_query_file_cannot_point_the_sandbox_outside(repos, tmp_path):
    """meta.root "/" or meta.repo "../.." must not let a grep read (and be scored on) other files."""
    escape = [grep_query(0, root="/", repo="../../etc"), grep_query(0, root=str(tmp_path), repo="x/..")]
    for q in escape:
        q["meta"]["path"] = "secret.txt"
    answers = [tool_text("grep", {"pattern": "Thing0 outside"})] * 2
    result = metrics.score(escape, answers, repos_dir=repos)
    assert [r["executable"] for r in result["per_query"]] == [None, None]
    assert result["accuracy"]["executable"] is None and result["accuracy"]["call_match"] is None
    # meta.root is ignored: the named repository inside the repos folder is used.
    inside = grep_query(0, root=str(tmp_path))
    assert metrics.score([inside], [tool_text("grep", {"pattern": r"class Thing0\b"})], repos_dir=repos)[
        "per_query"
    ][0]["executable"]


def test_grep_call_matches_only_when_specific_and_on_target(check):
    q = grep_query(0)
    assert check(tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo"}), q) == (True, True)
    assert check(tool_text("grep", {"pattern": r"Thing0\b"}), q) == (
        True,
        True,
    )  # wider scope, still specific
    for broad in (".", r"\b", r"\w", "Thing", "class"):  # every file matches
        assert check(tool_text("grep", {"pattern": broad}), q) == (False, False), broad
    assert check(tool_text("grep", {"pattern": "class Thing3"}), q) == (False, False)  # another file
    elsewhere = tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo/mod3.py"})
    assert check(elsewhere, q) == (False, False)
    missing_dir = tool_text("grep", {"pattern": r"class Thing0\b", "path": "nowhere"})
    assert check(missing_dir, q) == (False, False)
    # A target line: meta.line (the answer's) or one the reference grep finds; not just the file.
    on_line = records.tool_call_record(
        "Where is 0 stored?", "grep", {"pattern": r"value = 0\b"}, {**q["meta"], "line": 2}
    )
    assert check(tool_text("grep", {"pattern": r"value = 0\b"}), on_line) == (True, True)
    assert check(tool_text("grep", {"pattern": r"class Thing0\b"}), on_line) == (False, False)
    answer_line = grep_query(0, line=2)  # grep finds the class line, the answer cites line 2
    assert check(tool_text("grep", {"pattern": r"class Thing0\b"}), answer_line) == (True, True)
    assert check(tool_text("grep", {"pattern": r"value = 0\b"}), answer_line) == (True, True)


def test_read_answers_and_the_right_file_for_a_grep_question(check):
    q = grep_query(0)
    # A read of the expected file finds what the grep question asks: executable, but not the call.
    assert check(tool_text("read", {"path": "demo/mod0.py"}), q) == (False, True)
    assert check(tool_text("read", {"path": "./demo//mod0.py"}), q) == (False, True)
    assert check(tool_text("read", {"path": "demo/mod1.py"}), q) == (False, False)
    read_q = make_records(2)[1]
    assert check(tool_text("read", {"path": "demo/mod1.py"}), read_q) == (True, True)
    assert check(tool_text("read", {"path": "demo/mod2.py"}), read_q) == (False, False)
    assert check(tool_text("read", {"path": "../secret.txt"}), read_q) == (False, False)
    read_q["meta"]["line"] = 2
    assert check(tool_text("read", {"path": "demo/mod1.py", "start_line": 1, "end_line": 2}), read_q) == (
        True,
        True,
    )
    assert check(tool_text("read", {"path": "demo/mod1.py", "start_line": 3}), read_q) == (False, False)


def test_negative_query_a_correct_not_found(check):
    q = negative_query()
    assert check(tool_text("grep", {"pattern": "frobnicate_widget"}), q) == (True, True)
    assert check(tool_text("grep", {"pattern": r"def\s+frobnicate"}), q) == (True, True)
    assert check(tool_text("grep", {"pattern": "zzqqxx"}), q) == (
        False,
        False,
    )  # finds nothing, other subject
    assert check(tool_text("grep", {"pattern": "."}), q) == (False, False)
    assert check(tool_text("read", {"path": "demo/mod0.py"}), q) == (False, False)
    assert check("I could not find it.", q) == (False, False)
    assert subject_words(r"def\s+frob_widget\b|Widget\.run") == {"frob_widget", "frob", "widget", "run"}


def test_unchecked_without_repository_or_target(check, tmp_path):
    gone = grep_query(0, repo="absent")
    assert check(tool_text("grep", {"pattern": "x"}), gone) == (None, None)
    stale = grep_query(0, path="demo/deleted.py")
    assert check(tool_text("grep", {"pattern": "x"}), stale) == (None, None)
    assert (
        metrics.score([gone], [tool_text("grep", {"pattern": "x"})], base=tmp_path)["accuracy"]["call_match"]
        is None
    )


def test_catastrophic_regex_fails_the_call_not_the_run(repos):
    (repos / "demo" / "slow.txt").write_text("a" * 40 + "b\n")
    q = grep_query(0)
    result = metrics.score([q, q], [tool_text("grep", {"pattern": "^(a+)+$"}), tool_text("grep", {"pattern": r"class Thing0\b"})],
                           repos_dir=repos, timeout_s=1.0)  # fmt: skip
    assert [r["executable"] for r in result["per_query"]] == [False, True]


def test_score_aggregates_decision_and_call_metrics(repos):
    queries = make_records(6)  # grep, read, direct, grep, read, direct
    outputs = [
        tool_text("grep", {"pattern": r"class Thing0\b", "path": "demo"}),  # right call
        tool_text("grep", {"pattern": "Thing1"}),  # read expected: grep finds the file, wrong tool
        "Thing2 holds item number 2.",  # direct: exact
        '<tool_call>\n{"name": "grep", "arguments": {bad json}}\n</tool_call>',  # unparseable: an attempt
        "It is in demo/mod4.py.",  # a tool query answered directly
        tool_text("read", {"path": "demo/mod5.py"}),  # direct expected, but a call
    ]
    result = metrics.score(queries, outputs, repos_dir=repos)
    acc, ci = result["accuracy"], result["ci"]
    assert list(acc) == list(metrics.ACCURACY_KEYS) and list(ci) == list(metrics.ACCURACY_KEYS)
    # 4 tool queries (3 attempted), 2 direct (1 without a call).
    assert acc["tool_recall"] == pytest.approx(3 / 4) and acc["direct_recall"] == pytest.approx(1 / 2)
    assert acc["balanced_discrimination"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    tp, fn, fp, tn = 3, 1, 1, 1
    f_tool, f_direct = 2 * tp / (2 * tp + fp + fn), 2 * tn / (2 * tn + fp + fn)
    assert acc["macro_f1"] == pytest.approx((f_tool + f_direct) / 2)
    assert acc["discrimination"] == pytest.approx(4 / 6) and acc["category"] == pytest.approx(2 / 6)
    assert acc["call_validity"] == pytest.approx(2 / 4)  # all tool queries are the denominator
    assert acc["call_match"] == pytest.approx(1 / 4) and acc["executable"] == pytest.approx(2 / 4)
    assert acc["rouge_l"] == pytest.approx(0.5) and result["per_query"][5]["rouge_l"] == 0.0
    assert acc["trajectory_success"] is None and ci["trajectory_success"] is None
    assert ci["call_match"] == pytest.approx(intervals.wilson(1, 4))
    for key, value in acc.items():
        if value is not None:
            low, high = ci[key]
            assert low <= value + 1e-9 and value - 1e-9 <= high, key
    assert result["confusion"]["grep"] == {"grep": 1, "read": 0, "direct": 0, "invalid": 1}
    assert result["counts"] == {
        "queries": 6,
        "need_tool": 4,
        "direct": 2,
        "attempted_calls": 4,
        "call_checked": 4,
    }
    assert "subsets" not in result
    again = metrics.score(queries, outputs, repos_dir=repos)
    assert again["ci"] == ci  # seeded bootstrap: reruns are identical


def test_unseen_template_subset_and_agent_outcomes(repos):
    queries = make_records(6)
    for q in queries[3:]:
        q["meta"]["unseen_template"] = True
    outputs = [records.answer_of(q).get("content") or tool_text(*records.record_call(q)) for q in queries]
    outputs[3] = "no idea"
    result = metrics.score(
        queries, outputs, repos_dir=repos, trajectory_success=[True, False, True, None, True, True]
    )
    assert result["accuracy"]["trajectory_success"] == pytest.approx(4 / 5)
    sub = result["subsets"]["unseen_template"]
    assert sub["n"] == 3
    assert sub["accuracy"]["tool_recall"] == pytest.approx(1 / 2) and result["accuracy"][
        "tool_recall"
    ] == pytest.approx(3 / 4)
    assert sub["ci"]["tool_recall"] == pytest.approx(intervals.wilson(1, 2))


@pytest.mark.parametrize("fmt", ["tools", "code"])
def test_reference_answers_score_perfectly(repos, fmt):
    queries = make_records(6, fmt=fmt)
    outputs = []
    for r in queries:
        call = records.record_call(r)
        outputs.append(tool_text(*call) if call and fmt == "tools" else records.answer_of(r)["content"])
    acc = metrics.score(queries, outputs, repos_dir=repos)["accuracy"]
    assert acc.pop("trajectory_success") is None
    assert acc == pytest.approx(dict.fromkeys(acc, 1.0))


def test_wilson_against_known_values():
    assert intervals.wilson(9, 23) == pytest.approx([0.2216, 0.5921], abs=1e-4)
    assert intervals.wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert intervals.wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert intervals.wilson(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert intervals.wilson(0, 0) is None


def test_bootstrap_is_seeded_and_sensible():
    values = [0.0, 1.0] * 50
    first, second = intervals.mean_interval(values), intervals.mean_interval(values)
    assert first == second
    # The mean of 100 fair coin flips: the percentile interval is close to the normal one (+-0.098).
    assert first[0] == pytest.approx(0.402, abs=0.03) and first[1] == pytest.approx(0.598, abs=0.03)
    assert intervals.mean_interval([0.3] * 7) == pytest.approx([0.3, 0.3])
    assert intervals.mean_interval([]) is None
