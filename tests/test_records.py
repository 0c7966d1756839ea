import pytest

from mlx_tune import records

META = {"category": "grep", "origin": "real", "source": "repo:demo", "generator": "test/1"}


def test_tool_call_record_is_valid_and_categorised():
    r = records.tool_call_record("Where is Foo defined?", "grep", {"pattern": r"class Foo\b"}, META)
    assert records.validate_record(r) == []
    assert records.record_category(r) == "grep"
    args = r["messages"][-1]["tool_calls"][0]["function"]["arguments"]
    # Objects, not JSON strings: Qwen2.5's template applies tojson to them.
    assert args == {"pattern": r"class Foo\b"}


def test_code_mode_round_trips_through_the_parser():
    r = records.tool_call_record(
        "Show me a.py", "read", {"path": "pkg/a.py"}, {**META, "category": "read"}, fmt="code"
    )
    assert "tools" not in r
    assert records.validate_record(r) == []
    assert records.record_call(r) == ("read", {"path": "pkg/a.py"})


@pytest.mark.parametrize(
    "text",
    [
        "grep(pattern=x)",
        "```python\nimport os\n```",
        "read('a', 1, 2, 3)",
        "open('x')",
        "grep(**kw)",
    ],
)
def test_parse_code_call_rejects_non_literal_or_unknown_calls(text):
    assert records.parse_code_call(text) is None


def test_validate_reports_each_problem_with_its_field():
    r = records.tool_call_record("q?", "grep", {"pattern": "("}, META)
    r["messages"][1]["content"] = "  "
    r["meta"]["category"] = "read"
    problems = records.validate_record(r)
    assert "messages[1].content: missing or empty" in problems
    assert any(
        p.startswith("messages[2].tool_calls[0].function.arguments.pattern: does not compile")
        for p in problems
    )


def test_paths_escaping_the_repo_are_rejected():
    r = records.tool_call_record("q?", "read", {"path": "../etc/passwd"}, {**META, "category": "read"})
    assert records.validate_record(r) == [
        "messages[2].tool_calls[0].function.arguments.path: "
        "'../etc/passwd' must be relative to the repository root, without '..'"
    ]


def test_normalized_key_ignores_case_whitespace_and_meta():
    a = records.direct_record("What  is X?", "X is a thing.", {**META, "category": "direct"})
    b = records.direct_record(
        "what is x?", "x is a  thing.", {**META, "category": "direct", "source": "other"}
    )
    assert records.normalized_key(a) == records.normalized_key(b)
