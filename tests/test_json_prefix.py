import json
import random

import pytest

from mlx_tune.eval.json_prefix import JsonPrefix


def broken(text: str, pieces: int = 1) -> bool:
    checker = JsonPrefix()
    step = max(1, len(text) // pieces)
    for i in range(0, len(text), step):
        checker.feed(text[i : i + step])
    return checker.broken


def random_json(rng: random.Random, depth: int = 0) -> str:
    ws = lambda: rng.choice(["", "", " ", "\n  ", "\t", "\r\n"])  # noqa: E731
    kind = rng.choice(["obj", "arr", "str", "num", "lit"] if depth < 4 else ["str", "num", "lit"])
    if kind == "obj":
        items = [
            f"{ws()}{random_json_string(rng)}{ws()}:{ws()}{random_json(rng, depth + 1)}{ws()}"
            for _ in range(rng.randint(0, 3))
        ]
        return "{" + (",".join(items) if items else ws()) + "}"
    if kind == "arr":
        items = [f"{ws()}{random_json(rng, depth + 1)}{ws()}" for _ in range(rng.randint(0, 3))]
        return "[" + (",".join(items) if items else ws()) + "]"
    if kind == "str":
        return random_json_string(rng)
    if kind == "lit":
        return rng.choice(["true", "false", "null", "NaN", "Infinity", "-Infinity"])
    sign = rng.choice(["", "-"])
    whole = rng.choice(["0", str(rng.randint(1, 10**6))])
    frac = rng.choice(["", "", f".{rng.randint(0, 999)}"])
    exp = rng.choice(["", "", f"e{rng.randint(0, 9)}", f"E-{rng.randint(0, 99)}", f"e+{rng.randint(0, 9)}"])
    return sign + whole + frac + exp


def random_json_string(rng: random.Random) -> str:
    parts = ['"']
    for _ in range(rng.randint(0, 6)):
        parts.append(
            rng.choice(
                [
                    "a",
                    " ",
                    "def x",
                    "é",
                    "日本",
                    "<tool_call>",
                    "\\n",
                    '\\"',
                    "\\\\",
                    "\\/",
                    "\\u00e9",
                    "\\uD83D\\uDE00",
                    ":",
                    "{",
                    "]",
                ]
            )
        )
    return "".join(parts) + '"'


def test_every_prefix_of_a_valid_document_is_still_possible():
    rng = random.Random(0)
    for _ in range(400):
        doc = rng.choice(["", " ", "\n"]) + random_json(rng) + rng.choice(["", " ", "\n\t "])
        json.loads(doc)  # the generator makes only documents json.loads accepts
        for end in range(len(doc) + 1):
            assert not broken(doc[:end]), (doc, end)
        assert not broken(doc, pieces=3)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "grep", "arguments": {"pattern": "def getname": "path"',  # the tiny model's kind
        '{"name": "grep",, ',
        '{"name": "grep"}}',
        '{"name": "read", "arguments": {"path": "a.py"}} x',
        '{"a": 1,}',
        "[1, 2,]",
        '{"a": tru}',
        '{"a": 01}',
        '{"a": 1.}',
        '{"a": 1e}',
        '{"a": --1}',
        '{"a": "x\\q"}',
        '{"a": "line\nbreak"}',
        "{'name': 'grep'}",
        "grep(pattern='x')",
        '{"a" 1}',
        "{1: 2}",
    ],
)
def test_broken_json_is_found(text):
    assert broken(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "grep"}\n</tool_call>',  # the answer parser cuts at the closer
        '{"name": "grep"}\u00a0',  # and strips any whitespace before it
        '{"a": 1.5 <',
        '{"a": \ufffd',  # part of a character split over tokens: not judged
        '{"a": "\\u12',
        '{"a": -Infin',
        '{"a": NaN, "b": [Infinity, -Infinity], "c": 1E+5}',
    ],
)
def test_unsure_or_valid_text_is_never_called_broken(text):
    assert not broken(text)


def test_broken_stays_broken():
    checker = JsonPrefix()
    assert checker.feed('{"a":: ')
    assert checker.feed("1}")


def test_no_short_continuation_repairs_what_is_called_broken():
    alphabet = list('{}[]",: 1.e-0tNI\\u') + ["rue", "aN", "nfinity", "\n"]
    continuations = [""] + alphabet + [a + b for a in alphabet for b in alphabet]
    rng = random.Random(1)
    checked = 0
    while checked < 60:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        if not broken(text):
            continue
        checked += 1
        for tail in continuations:
            with pytest.raises(json.JSONDecodeError):
                json.loads(text + tail)
