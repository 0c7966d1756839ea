import pytest

from mlx_tune import records
from mlx_tune.data import data_quality as dq
from mlx_tune.data import datacheck


def meta(category: str, symbol: str | None = None, **kw) -> dict:
    m = {"category": category, "origin": "real", "source": "repo:demo", "generator": "test/1", **kw}
    if symbol:
        m["symbol"] = symbol
    return m


def grep(question: str, pattern: str, symbol: str | None = None, output: str | None = None, **kw) -> dict:
    steps = [("grep", {"pattern": pattern}, output)]
    answer = "Found it in a.py:3." if output is not None else None
    return records.trajectory_record(question, steps, answer, meta("grep", symbol, **kw))


def read(question: str, path: str, symbol: str | None = None, **kw) -> dict:
    return records.tool_call_record(question, "read", {"path": path}, meta("read", symbol, **kw))


def direct(question: str, **kw) -> dict:
    return records.direct_record(question, "A plain answer.", meta("direct", **kw))


def test_mask_question():
    m = dq.mask_question
    assert m("Where is Sandbox.execute defined?", ["execute", "Sandbox"]) == "where is NAME defined?"
    assert m("Where is `strip_ansi` in mlx_tune/tools.py, line 12?") == "where is NAME in PATH, line 0?"
    assert m("Who calls HTMLParser and parseArgs and os.path.join() in setup.cfg?") == (
        "who calls NAME and NAME and NAME in PATH?"
    )
    # plain words, abbreviations and acronyms stay; case and whitespace are normalised
    assert (
        m("What does  the JSON module do, e.g. in Python?") == "what does the json module do, e.g. in python?"
    )
    # a symbol part is masked in any case, but only as a whole word
    assert m("Where is the tokenizer built?", ["Tokenizer"]) == "where is the NAME built?"
    assert m("Where are tokenizers built?", ["Tokenizer"]) == "where are tokenizers built?"
    # a masked name inside a longer token keeps its placeholder
    assert (
        m("Where is @cached applied? cached's FILENAME", ["cached"])
        == "where is @NAME applied? NAME's filename"
    )


def test_near_duplicate_share():
    recs = [
        grep("Where is class Foo defined?", r"class Foo\b", "pkg.Foo"),
        grep("Where is class Bar defined?", r"class Bar\b", "Bar"),  # same as the first once masked
        grep("Where is class load_all defined?", r"class load_all\b"),  # identifier masked: same again
        grep("Which code strips ANSI colours from a string?", r"ansi", "unstyle"),
        direct("What does the with statement do in Python?"),
    ]
    assert dq.near_duplicate_share(recs) == pytest.approx(3 / 5)
    assert dq.near_duplicate_share(recs[3:]) == 0.0
    assert dq.near_duplicate_share([]) == 0.0
    assert datacheck.near_duplicate_share is dq.near_duplicate_share  # the name generators import


def test_literal_patterns():
    literal = [
        r"class Foo\b",
        r"def foo\(",
        "def foo",
        r"^class Foo",
        r"^\s*def foo_bar\b",
        r"async def run\(",
    ]
    other = [
        r"def (foo|bar)\(",
        r"class Foo\b|def bar",
        r"@app\.route\(",
        r"strip.*ansi",
        r"class Foo\(Base\)",
        "def",
    ]
    assert all(map(dq.is_literal_pattern, literal))
    assert not any(map(dq.is_literal_pattern, other))
    # a two-call trajectory counts its second grep too; read calls and direct records do not count
    two = records.trajectory_record(
        "q?",
        [
            ("grep", {"pattern": r"class Foo\b"}, "No matches."),
            ("grep", {"pattern": "foo|bar"}, "No matches."),
        ],
        "Nothing found.",
        meta("grep"),
    )
    recs = [two, grep("a?", r"def foo\("), grep("b?", "cache"), read("c?", "a.py"), direct("d?")]
    assert dq.grep_patterns(recs) == [r"class Foo\b", "foo|bar", r"def foo\(", "cache"]
    assert dq.literal_pattern_share(recs) == 0.5
    assert dq.literal_pattern_share([direct("d?")]) == 0.0


def test_name_in_question():
    recs = [
        grep("Where is the Sandbox class?", r"class Sandbox\b", "tools.Sandbox"),  # last part, as a word
        grep("Where is sandbox set up?", "sandbox", "tools.Sandbox"),  # any case
        grep("Where are sandboxes made?", "sandbox", "tools.Sandbox"),  # not as a word
        read("Show me how runs are timed.", "a.py", "run_timed"),
        read("Show me a.py.", "a.py"),  # no symbol: not counted
        direct("What is Sandbox?", symbol="Sandbox"),  # not a grep/read record: not counted
    ]
    assert [dq.name_in_question(r) for r in recs] == [True, True, False, False, None, True]
    assert dq.name_in_question_share(recs) == 0.5


def test_multi_turn_templates_shapes_balance():
    recs = [
        grep("a?", "x", output="a.py:3:x = 1", template="grep.t.1", shape="grep-answer", style="trajectory"),
        grep("b?", "y", template="grep.t.1", shape="call-only", style="call-only"),
        read("c?", "a.py", template="read.t.2", shape="call-only", style="call-only"),
        direct("d?", template="direct.t.1", shape="direct", style="direct"),
        direct("e?"),
    ]
    assert dq.multi_turn_share(recs) == pytest.approx(1 / 5)
    assert dq.multi_turn_share(recs, tool_only=True) == pytest.approx(1 / 3)
    assert dq.template_count(recs) == 3
    assert dq.meta_counts(recs, "shape") == {"call-only": 2, "direct": 1, "grep-answer": 1, "unknown": 1}
    assert dq.balance(recs) == {"tool_share": 0.6, "direct_share": 0.4}
    assert dq.balance([]) == {"tool_share": 0.0, "direct_share": 0.0}
    q = dq.quality(recs)
    assert q["templates"] == 3 and q["grep_calls"] == 2 and q["style"]["call-only"] == 2
    assert q["multi_turn_share"] == 0.2 and q["tool_trajectory_share"] == 0.3333
