import json
import re
import subprocess
import sys
import textwrap

import pytest

from mlx_tune import UserError, records
from mlx_tune.data.stdlib_direct import (
    FACT_SHARE,
    POOLS,
    all_entries,
    build_direct,
    clean_paragraph,
    describe,
    pool_entries,
    pool_of,
    python_facts,
)
from mlx_tune.models.tiny import render_chat  # Qwen2.5-Instruct's template, unmodified

MARKUP = re.compile(r"``|:\w+:`|>>>|\.\. \w+::|\*\*\w")


@pytest.fixture()
def fake_stdlib(tmp_path):
    """A library folder with one module holding good, marked-up and unusable docstrings."""
    source = '''
        __all__ = ["dedent", "roles", "Box", "short", "doctest", "legacy"]

        def dedent(text):
            """Remove any common leading whitespace from every line in ``text``.

            >>> dedent("  a")
            'a'
            """

        def roles(a, b=None, _cache={}):
            """Return the sum of :func:`first` and :class:`~pkg.Second` for the *given* inputs.
            The result is cached."""

        def _private(x):
            """Remove this private function from the public listing entirely."""

        def unlisted(x):
            """Return a value that is defined but not exported by the module."""

        def short():
            """Too short."""

        def doctest():
            """>>> doctest() returns nothing useful for the reader at all"""

        def legacy():
            """Return the old value of the setting, for older callers.

            Deprecated since 3.1."""

        class Box:
            """Container for holding several values together in one place."""

            def get(self, key, default=None):
                """Return the value stored under the given key in the box."""

            @property
            def size(self):
                """Return the number of values that the box holds now."""
        '''
    (tmp_path / "textwrap.py").write_text(textwrap.dedent(source))
    all_entries.cache_clear()
    yield str(tmp_path)
    all_entries.cache_clear()


def test_entries_from_docstrings(fake_stdlib):
    entries = {e.symbol: e for e in all_entries(fake_stdlib)}
    assert sorted(entries) == ["textwrap.Box", "textwrap.Box.get", "textwrap.dedent", "textwrap.roles"]
    dedent = entries["textwrap.dedent"]
    assert (dedent.kind, dedent.signature) == ("function", "(text)")
    assert describe(dedent) == (
        "`textwrap.dedent(text)` removes any common leading whitespace from every line in `text`."
    )
    roles = entries["textwrap.roles"]
    assert roles.signature == "(a, b=None)"  # the private _cache parameter is left out
    assert describe(roles) == (
        "`textwrap.roles(a, b=None)` returns the sum of `first` and `Second` for the given inputs. "
        "The result is cached."
    )
    assert describe(entries["textwrap.Box"]).startswith("`textwrap.Box` is a container for holding")
    assert entries["textwrap.Box.get"].signature == "(key, default=None)"  # self dropped
    assert entries["textwrap.Box.get"].kind == "method"


def test_clean_paragraph_rejects_what_is_not_prose():
    assert clean_paragraph("Example::\n\n    code()") is None
    assert clean_paragraph("Return a value.\n\n>>> f()\n1") == "Return a value."
    assert clean_paragraph(".. note:: something is said here") is None
    assert clean_paragraph("Formats the value as one of:") is None
    assert clean_paragraph("Unbalanced `quote in the text of this docstring") is None
    assert clean_paragraph("Return `a`_ link and **bold** words") == "Return a link and bold words."


def test_real_library_has_enough_for_both_pools():
    entries = all_entries()
    counts = {pool: len(pool_entries(pool)) for pool in POOLS}
    assert min(counts.values()) >= 200, counts
    assert sum(counts.values()) == len(entries)
    assert {e.kind for e in entries} == {"function", "class", "method"}
    assert len({e.module for e in entries}) >= 30


def test_records_valid_clean_and_rendered():
    shapes = set()
    for pool in POOLS:
        recs = build_direct(1000, seed=1, pool=pool)
        facts = [f for f in python_facts() if f["pool"] == pool]
        assert len(recs) == len(pool_entries(pool)) + len(facts)
        assert len({r["meta"]["symbol"] for r in recs}) == len(recs)
        for r in recs:
            assert records.validate_record(r) == []
            assert records.record_category(r) == "direct" and records.record_call(r) is None
            meta = r["meta"]
            assert meta["category"] == "direct" and meta["style"] == meta["shape"] == "direct"
            assert not {"repo", "path", "root", "line", "defined_in"} & set(meta)
            question, answer = r["messages"][1]["content"], records.answer_of(r)["content"]
            if meta["source"] == "python:language":  # a hand-written fact
                assert meta["origin"] == "synthetic" and meta["template"].startswith("direct.python.")
                assert meta["symbol"] in {f["topic"] for f in facts} and len(answer) > 150
            else:
                assert meta["origin"] == "real" and meta["source"].startswith("stdlib:")
                assert meta["symbol"].startswith(meta["source"].removeprefix("stdlib:") + ".")
                assert f"`{meta['symbol']}" in answer  # the answer names what it explains
            assert not MARKUP.search(re.sub(r"`[^`]*`", "", question + answer)), (question, answer)
            assert "``" not in question + answer
            assert (
                answer.count("`") % 2 == 0
                and (answer[0].isupper() or answer[0] == "`")
                and answer[-1] in ".!?)"
            )
            shapes.add(meta["template"])
            text = render_chat(records.templated_messages(r), r["tools"])
            assert answer in text and "<tool_call>" not in text.split("<|im_start|>assistant")[-1]
    assert len(shapes) >= 10
    # questions that describe the need do not name what they are about (a verb such as "encode"
    # may coincide with base64.encode's name, but not often)
    need = [r for r in recs if ".need-" in r["meta"]["template"]]
    assert len(need) >= len(recs) // 5
    named = 0
    for r in need:
        question = r["messages"][1]["content"]
        assert r["meta"]["symbol"] not in question
        named += r["meta"]["symbol"].rsplit(".", 1)[-1] in re.findall(r"\w+", question)
    assert named < len(need) // 4, named


def test_pools_are_disjoint():
    repo = {r["meta"]["symbol"] for r in build_direct(1000, pool="repo")}
    domain = {r["meta"]["symbol"] for r in build_direct(1000, pool="domain")}
    assert repo and domain and not repo & domain
    assert {pool_of(s) for s in repo if "." in s} == {"repo"}
    assert {pool_of(s) for s in domain if "." in s} == {"domain"}
    questions = [r["messages"][1]["content"] for p in POOLS for r in build_direct(1000, pool=p, seed=5)]
    assert len(questions) == len(set(questions))


def test_fact_share():
    for n in (8, 40):
        recs = build_direct(n, seed=2, pool="repo")
        facts = [r for r in recs if r["meta"]["source"] == "python:language"]
        assert len(recs) == n and len(facts) == round(n * FACT_SHARE)
        # the facts are mixed in, not all at the front
        assert records.answer_of(recs[0]) and {r["meta"]["source"] for r in recs[: n // 2]} != {
            "python:language"
        }


def test_deterministic_and_seeded():
    a = json.dumps(build_direct(60, seed=3, pool="domain"))
    all_entries.cache_clear()
    assert json.dumps(build_direct(60, seed=3, pool="domain")) == a
    assert json.dumps(build_direct(60, seed=4, pool="domain")) != a
    assert len(build_direct(5)) == 5 and build_direct(0) == []


def test_code_format_and_errors():
    recs = build_direct(5, fmt="code")
    assert all("tools" not in r and records.validate_record(r) == [] for r in recs)
    assert recs[0]["messages"][0]["content"] == records.CODE_SYSTEM_PROMPT
    with pytest.raises(UserError, match="pool: 'tests' is not one of repo, domain"):
        build_direct(5, pool="tests")
    with pytest.raises(UserError, match="--format"):
        build_direct(5, fmt="xml")


def test_nothing_is_imported():
    """The library is read as text: building the records imports none of the modules it reads."""
    code = (
        "import json, sys\n"
        "from mlx_tune.data import stdlib_direct as s\n"
        "s.python_facts()\n"  # its package-data reader (importlib.resources) may import zipfile
        "before = set(sys.modules)\n"
        "n = len(s.build_direct(1000, pool='repo')) + len(s.build_direct(1000, pool='domain'))\n"
        "watched = [m for m in s.MODULES if m not in before]\n"
        "print(json.dumps([n, watched, sorted(set(sys.modules) - before)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    n, watched, imported = json.loads(out)
    assert n > 400
    assert len(watched) >= 5, watched  # modules the check can see being imported
    assert not set(watched) & set(imported)
