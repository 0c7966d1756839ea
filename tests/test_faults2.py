"""Fault battery, part two (issue 12): hostile text given to ``ast`` and to JSON decoders inside
records, whole-or-nothing multi-file outputs, a corrupt repository manifest, a real full disk, and
hostile inputs to the CLI. Each is a one-line error or a counted skip, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlx_tune import fileio, metrics, records, stdlib_direct
from mlx_tune.cli import main
from tests.conftest import make_records

# Texts that ``ast.parse`` cannot take, each failing in a different way.
DEEP_SOURCES = {
    "parens": "(" * 5000 + ")" * 5000,  # SyntaxError: too many nested parentheses
    "brackets": "[" * 100_000,  # SyntaxError, unclosed
    "sum": "grep(" + "1+" * 200_000 + "1)",  # RecursionError while building the tree
    "unary": "grep(" + "-" * 100_000 + "1)",  # MemoryError in the parser
    "calls": "grep(f" + "()" * 100_000 + ")",  # RecursionError
    "null": "grep('a\x00b')",  # SyntaxError: source code cannot contain null bytes
    "digits": "read(path='a.py', start_line=" + "9" * 5000 + ")",  # int too large to convert
}


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# ---------------------------------------------------------------- ast on untrusted text


@pytest.mark.parametrize("name", sorted(DEEP_SOURCES))
@pytest.mark.parametrize("fenced", [False, True])
def test_parse_code_call_of_hostile_text_is_none(name, fenced):
    text = DEEP_SOURCES[name]
    assert records.parse_code_call(f"```python\n{text}\n```" if fenced else text) is None


def test_parse_code_call_still_parses_a_good_call():
    """The guard changes nothing for a real call (the control for the test above)."""
    text = "```python\nread(path='pkg/a.py', start_line=3)\n```"
    assert records.parse_code_call(text) == ("read", {"path": "pkg/a.py", "start_line": 3})


@pytest.mark.parametrize("name", sorted(DEEP_SOURCES))
def test_a_hostile_code_answer_is_scored_invalid(name):
    pred = metrics.parse_prediction(f"```python\n{DEEP_SOURCES[name]}\n```", fmt="code")
    assert (pred.category, pred.attempted_call, pred.valid) == ("invalid", True, False)


@pytest.mark.parametrize(
    "answer",
    [
        "<tool_call>" + "[" * 100_000 + "</tool_call>",
        '<tool_call>{"name": "grep", "arguments": "' + "[" * 100_000 + '"}</tool_call>',
        '<tool_call>{"name": "grep", "arguments": {"pattern": "' + "(" * 5000 + '"}}</tool_call>',
    ],
)
def test_a_hostile_tool_answer_is_scored_invalid(answer):
    pred = metrics.parse_prediction(answer, fmt="tools")
    assert pred.attempted_call and not pred.valid and pred.problems


def _deep_argument_record() -> dict:
    record = make_records(1)[0]
    for m in record["messages"]:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = "[" * 100_000  # a JSON string too deep to decode
            return record
    raise AssertionError("make_records gave no tool call")


def test_record_readers_survive_arguments_too_deep_to_decode():
    record = _deep_argument_record()
    problems = records.validate_record(record)
    assert any(
        p.endswith(".function.arguments: not valid JSON: nested deeper than 64 levels") for p in problems
    )
    tool, arguments = records.record_call(record)
    assert tool in records.TOOL_CATEGORIES and arguments == {}
    assert records.record_category(record) == tool
    assert isinstance(records.normalized_key(record), str)
    call = next(m for m in records.templated_messages(record) if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["arguments"] == "[" * 100_000  # left as it was, not crashed on


def test_data_validate_reports_arguments_too_deep_to_decode(tmp_path):
    f = tmp_path / "deep.jsonl"
    fileio.write_jsonl(f, [make_records(1)[0], _deep_argument_record()])
    r = CliRunner().invoke(main, ["data", "validate", str(f)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert f"{f}:2: messages[2].tool_calls[0].function.arguments: not valid JSON: nested deeper" in r.output


GOOD_MODULE = (
    'def shorten(text, width):\n    """Collapse and truncate the given text to fit in the width."""\n'
)


@pytest.mark.parametrize(
    "source, kept",
    [
        ("x = " + "1+" * 200_000 + "1\n", []),  # too deep for the parser
        ("def f(a=" + "-" * 900 + "1):\n    pass\n", []),  # parses, but too deep for ast.unparse
        ("def f(:\n", []),  # not Python
        ("x = 1\0\n", []),  # a null byte
        ("__all__ = 5\n" + GOOD_MODULE, ["json.shorten"]),  # an __all__ that is no list: ignored
    ],
)
def test_stdlib_module_that_ast_cannot_take_gives_no_entries(tmp_path, source, kept):
    assert [e.symbol for e in stdlib_direct.module_entries("json", source)] == kept
    # One hostile module file among good ones: the others still give their entries.
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text(source)
    (tmp_path / "textwrap.py").write_text(GOOD_MODULE.replace("Collapse and truncate", "Wrap and cut"))
    entries = stdlib_direct.all_entries(str(tmp_path))
    assert sorted(e.symbol for e in entries) == sorted(["textwrap.shorten", *kept])
