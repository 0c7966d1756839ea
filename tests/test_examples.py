"""Repository/domain example generation, end to end on a small fixture repository."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlx_tune.data
from mlx_tune import docstrings, fileio, records, tools
from mlx_tune.cli import main
from mlx_tune.data import data_quality, examples
from mlx_tune.data.repo_index import RepoIndex

ROUTES = '''"""HTTP routing for {pkg}: a router that maps request paths to handler functions."""
import json
import os.path
from functools import wraps
from {pkg}.models import {Model}
from typing import Any
from yaml import safe_load


class {Router}:
    """Collects routes and dispatches requests to their handlers."""

    def add_route(self, path: str, handler) -> None:
        """Register the handler function for the given request path."""
        if not path.startswith("/"):
            raise ValueError(path)
        self.routes[path] = handler

    async def dispatch(self, request: {Model}) -> Any:
        """Send the request to the handler of the matching route."""
        handler = self.routes.get(request.path)
        return await handler(request)


def route(path: str):
    """Decorator that registers a function as the handler of a path."""

    @wraps(route)
    def wrap(fn):
        return fn

    return wrap


@route("/items")
def list_items() -> list:
    """Return every stored item of the inventory as a list."""
    return []


@route("/users")
def list_users() -> list:
    return []


def describe(router) -> str:
    """Describe the routes a router knows, one per line of text."""
    return json.dumps(sorted(router.routes))


def strip_markup(text: str) -> str:
    """Strip the markup tags from a piece of :class:`str` text, keeping the words."""
    cleaned = text.replace("<", "").replace(">", "")
    return safe_load(cleaned)


def _private_helper():
    """Not public, never asked about."""
'''

MODELS = '''"""Data models for {pkg}."""
import json
from dataclasses import dataclass


@dataclass
class {Model}:
    """A request as the router sees it: method, path and body."""

    method: str
    path: str

    @property
    def size(self) -> int:
        return len(self.path)

    def to_json(self) -> str:
        """Serialize the request with all its fields to a JSON string."""
        return json.dumps(self.__dict__)


def parse_model(text: str) -> {Model}:
    """Build a request object from the JSON text of a message body."""
    return {Model}(**json.loads(text))


def describe(model) -> str:
    """Describe a model in one short human readable line."""
    return str(model)
'''


def make_repo(root: Path, pkg: str, router: str, model: str, outside: Path) -> None:
    (root / pkg).mkdir(parents=True)
    fmt = {"pkg": pkg, "Router": router, "Model": model}
    (root / pkg / "__init__.py").write_text(f"from {pkg}.routing import {router}\n")
    (root / pkg / "routing.py").write_text(ROUTES.format(**fmt))
    (root / pkg / "models.py").write_text(MODELS.format(**fmt))
    (root / "README.md").write_text(f"# {pkg}\n\nA tiny web framework.\n")
    (root / pkg / "broken.py").write_text("def oops(:\n    pass\n")
    (root / pkg / "latin.py").write_bytes("NAME = 'caf\xe9'\n".encode("latin-1"))
    (root / pkg / "huge.py").write_text("X = 1\n" * 200_000)
    os.symlink(outside, root / pkg / "escape.py")


@pytest.fixture
def repos_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside.py"
    outside.write_text("class Leaked:\n    '''Must never be used as a source.'''\n")
    base = tmp_path / "repos"
    make_repo(base / "alpha", "alpha", "AlphaRouter", "AlphaRequest", outside)
    make_repo(base / "beta", "beta", "BetaRouter", "BetaRequest", outside)
    return base


def fake_build_direct(n: int, *, seed: int = 0, fmt: str = "tools", pool: str = "repo") -> list[dict]:
    meta = {"category": "direct", "origin": "real", "source": "stdlib:json", "generator": "fake/1",
            "template": "direct.fake", "style": "direct", "shape": "direct"}  # fmt: skip
    return [
        records.direct_record(f"What does json.dumps do ({pool} {seed} {i})?", "It writes JSON.", meta, fmt)
        for i in range(n)
    ]


@pytest.fixture(autouse=True)
def fake_direct(monkeypatch):
    """Direct records come from mlx_tune.data.stdlib_direct (another module); a stand-in here."""
    fake = types.ModuleType("mlx_tune.data.stdlib_direct")
    fake.build_direct = fake_build_direct
    monkeypatch.setitem(sys.modules, "mlx_tune.data.stdlib_direct", fake)
    monkeypatch.setattr(mlx_tune.data, "stdlib_direct", fake, raising=False)


COUNTS = {"grep": 24, "read": 10, "direct": 4}
CITED = re.compile(r"`([\w./-]+\.py):(\d+)`")


def check_grounded(recs: list[dict], base: Path) -> None:
    """Every record valid; every tool message is what the tool returns on the repository;
    every grep hit matches its pattern; every path:line an answer cites was in a tool output."""
    for r in recs:
        assert records.validate_record(r) == [], r
        m = r["meta"]
        category = records.record_category(r)
        assert category == m["category"]
        if category == "direct":
            continue
        assert m["origin"] == "real" and m["generator"] == examples.GENERATOR and m["commit"]
        assert "root" not in m and m["template"] and m["style"] in examples.STYLES
        assert "Leaked" not in json.dumps(r) and "escape.py" not in json.dumps(r)
        root = base / m["repo"]
        if m["found"]:
            assert (root / m["path"]).is_file() and (root / m["defined_in"]).is_file() and m["line"] >= 1
        else:
            assert "path" not in m and m["shape"] in ("negative", "call-only")
        msgs = r["messages"]
        outputs = []
        for i, msg in enumerate(msgs):
            if msg["role"] != "tool":
                continue
            tool, args = records.message_call(msgs[i - 1])
            real = tools.execute(root, tool, args)
            assert real.ok and real.text == msg["content"], (tool, args)
            outputs.append(real.text)
            for hit in real.matches:
                line = (root / hit.path).read_text().splitlines()[hit.line - 1]
                assert re.search(args["pattern"], line)
        if outputs:
            answer = records.answer_of(r)["content"]
            assert answer.endswith((".", "!", "?")), answer
            for path, line in CITED.findall(answer):
                assert (root / path).is_file()
                assert any(f"{path}:{line}:" in o or f"{path} (lines" in o for o in outputs), (path, answer)
            if not m["found"]:
                assert outputs == ["No matches."]


def test_repo_examples_end_to_end(repos_dir, tmp_path):
    out = tmp_path / "out" / "examples.jsonl"
    result = examples.repo_examples(repos_dir, out, COUNTS, seed=3, progress=False)
    recs = fileio.read_jsonl(out)
    assert Counter(r["meta"]["category"] for r in recs) == COUNTS
    by_repo = Counter((r["meta"].get("repo"), r["meta"]["category"]) for r in recs)
    assert by_repo[("alpha", "grep")] == by_repo[("beta", "grep")] == 12  # spread evenly
    check_grounded(recs, repos_dir)
    assert len({records.normalized_key(r) for r in recs}) == len(recs)
    tool_recs = [r for r in recs if r["meta"]["category"] != "direct"]
    assert all(records.is_trajectory(r) and r["meta"]["style"] == "trajectory" for r in tool_recs)
    shapes = Counter(r["meta"]["shape"] for r in tool_recs)
    assert {"grep-answer", "grep-read-answer", "read-answer", "negative"} <= set(shapes), shapes
    assert result.files_parsed == 6
    assert result.skipped == {"syntax_error": 2, "not_utf8": 2, "symlink_outside": 2, "too_large": 2}
    symbols = [r["meta"].get("symbol") or "" for r in recs]
    assert not any(part.startswith("_") for s in symbols for part in s.split("."))
    assert "direct 4/4" in examples.format_summary(result)


def test_each_shape_on_a_larger_run(repos_dir):
    result = examples.generate(examples.find_repos(repos_dir), {"grep": 200, "read": 100}, progress=False)
    check_grounded(result.records, repos_dir)
    by_shape = {}
    for r in result.records:
        by_shape.setdefault(r["meta"]["shape"], []).append(r)
    assert {"grep-answer", "grep-read-answer", "read-answer", "negative", "ambiguous"} <= set(by_shape)
    two_call = by_shape["grep-read-answer"][0]
    assert [c[0] for c in records.record_calls(two_call)] == ["grep", "read"]
    read_args = records.record_calls(two_call)[1][1]
    assert read_args["path"] == two_call["meta"]["path"]
    assert read_args["start_line"] <= two_call["meta"]["line"] <= read_args["end_line"]
    ambiguous = by_shape["ambiguous"][0]
    assert ambiguous["meta"]["symbol"] == "describe"
    pkg = ambiguous["meta"]["repo"]
    assert f"`{pkg}/routing.py:" in records.answer_of(ambiguous)["content"]
    assert f"`{pkg}/models.py:" in records.answer_of(ambiguous)["content"]
    for r in by_shape["negative"]:
        assert r["meta"]["found"] is False and r["messages"][3]["content"] == "No matches."
    for r in by_shape["read-answer"]:
        assert records.record_category(r) == "read" and r["meta"]["path"] in r["messages"][1]["content"]
    # a behaviour question describes the code instead of naming it
    behaviour = [r for r in result.records if r["meta"]["template"].startswith("grep.behaviour.")]
    for r in behaviour:
        assert not re.search(rf"\b{r['meta']['symbol'].split('.')[-1]}\b", r["messages"][1]["content"])
    assert behaviour
    kinds = {r["meta"]["kind"] for r in result.records}
    assert {"import", "decorator", "file"} <= kinds
    # no standard-library import or decorator, no __future__
    for r in result.records:
        if r["meta"]["kind"] in ("import", "decorator"):
            assert not docstrings.is_python_decorator(r["meta"]["symbol"]), r["meta"]
            assert r["meta"]["symbol"].split(".")[0] not in (
                "json",
                "os",
                "functools",
                "typing",
                "dataclasses",
            )
    assert any(r["meta"]["kind"] == "import" and r["meta"]["symbol"] == "yaml" for r in result.records)
    defined = {r["meta"]["defined_in"] for r in result.records if r["meta"]["kind"] == "decorator"}
    assert defined <= {"alpha/routing.py", "beta/routing.py"}  # where @route is defined, not used
    assert len({r["meta"]["template"] for r in result.records}) >= 20
    # the targets, measured the way `data stats` measures them
    quality = data_quality.quality(result.records)
    assert quality["tool_trajectory_share"] >= 0.6 and quality["near_duplicate_share"] <= 0.4
    assert quality["literal_pattern_share"] <= 0.3 and quality["name_in_question_share"] <= 0.7


def test_same_seed_same_bytes_and_other_seed_differs(repos_dir, tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    examples.repo_examples(repos_dir, a, COUNTS, seed=1, progress=False)
    examples.repo_examples(repos_dir, b, COUNTS, seed=1, progress=False)
    examples.repo_examples(repos_dir, c, COUNTS, seed=2, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_index_output_is_the_tools_output(repos_dir):
    root = repos_dir / "alpha"
    (root / "crlf.py").write_bytes(b"def list_items():\r\n    return 1\r\n")
    (root / "dotted.py").write_text("\u0130 = 1  # list_items\nx = list_items()\n")
    index = RepoIndex(root)
    cases = [
        (r"def \w*items", ".", ("items",)),
        (r"(?i)def \w*ITEMS", "alpha", ("items",)),
        (r"def \w*(?:strip|remove)", ".", ("strip", "remove")),
        (r"(?:class|def) list_items\b", ".", ("list_items",)),
        (r"class \w*Router", ".", ("router",)),
        (r"(?i)markup.*tags", ".", ("markup",)),
        (r"^\s*(?:from|import) yaml\b", ".", ("yaml",)),
        (r"\blist_items\b", ".", ("list_items",)),
        (r"\blist_items\b", "alpha/routing.py", ("list_items",)),
        (r"(?i)kafka", ".", ("kafka",)),
        (r"return", ".", ()),
    ]
    for pattern, path, needles in cases:
        mine, real = index.grep(pattern, path, needles), tools.run_grep(root, pattern, path)
        assert (mine.text, mine.matches, mine.total_matches, mine.files) == (
            real.text,
            real.matches,
            real.total_matches,
            real.files,
        ), pattern
    assert index.read("alpha/routing.py", 5, 20).text == tools.run_read(root, "alpha/routing.py", 5, 20).text
    assert index.read("crlf.py").text == tools.run_read(root, "crlf.py").text


def test_call_only_style_and_cli(repos_dir, tmp_path):
    out = tmp_path / "call.jsonl"
    args = ["data", "repo-examples", "--repos", str(repos_dir), "-o", str(out), "--style", "call-only"]
    r = CliRunner().invoke(main, [*args, "--grep", "10", "--read", "4", "--direct", "2"])
    assert r.exit_code == 0, r.output
    assert "grep 10/10, read 4/4, direct 2/2" in r.output
    recs = fileio.read_jsonl(out)
    tool_recs = [x for x in recs if x["meta"]["category"] != "direct"]
    assert len(tool_recs) == 14
    for x in tool_recs:
        assert records.validate_record(x) == []
        assert not records.is_trajectory(x) and len(x["messages"]) == 3
        assert x["meta"]["style"] == x["meta"]["shape"] == "call-only"
    r = CliRunner().invoke(main, [*args[:-1], "both"])
    assert r.exit_code == 2 and "--style" in r.output


def test_code_format(repos_dir, tmp_path):
    out = tmp_path / "code.jsonl"
    examples.repo_examples(repos_dir, out, COUNTS, fmt="code", progress=False)
    recs = fileio.read_jsonl(out)
    check_grounded(recs, repos_dir)
    assert all("tools" not in r for r in recs)
    tool_recs = [r for r in recs if r["meta"]["category"] != "direct"]
    assert all(
        r["messages"][2]["content"].startswith(("```python\ngrep(", "```python\nread(")) for r in tool_recs
    )
    assert all(records.is_trajectory(r) for r in tool_recs)


def test_docstring_cleaning():
    doc = """Strip :func:`~ansi.codes` and ``ESC`` sequences from *styled* text.

    .. note::
       Never raises.

    >>> strip("x")
    'x'

    See `the docs <https://example.com>`_ for **more**.
    """
    assert docstrings.clean_docstring(doc) == (
        "Strip ansi.codes and ESC sequences from styled text.\n\nSee the docs for more."
    )
    summary = docstrings.summary(doc)
    assert summary == "Strip ansi.codes and ESC sequences from styled text."
    assert docstrings.phrases(summary)["third"] == "strips ansi.codes and ESC sequences from styled text"
    assert docstrings.phrases("Returns the list of items.")["inf"] == "return the list of items"
    assert docstrings.phrases("A request as the router sees it.") == {
        "noun": "a request as the router sees it"
    }
    assert docstrings.summary("Register handler for path.") is None  # too short to say anything
    assert docstrings.summary("pkg.module\n~~~~~~\n\nLexers for Python and related languages.") == (
        "Lexers for Python and related languages."
    )


def test_python_imports_and_decorators_are_recognised():
    assert docstrings.is_stdlib_module("os.path") and docstrings.is_stdlib_module("__future__")
    assert not docstrings.is_stdlib_module("yaml")
    for head in ("property", "staticmethod", "functools.wraps", "dataclass", "abc.abstractmethod"):
        assert docstrings.is_python_decorator(head)
    assert docstrings.is_python_decorator("cached", {"cached": "functools"})
    assert not docstrings.is_python_decorator("route") and not docstrings.is_python_decorator("app.get")


def test_manifest_commit_is_used(repos_dir):
    fileio.write_json(repos_dir / "manifest.json", {"repos": [{"name": "alpha", "commit": "abc123"}]})
    found = {r.name: r.commit for r in examples.find_repos(repos_dir)}
    assert found == {"alpha": "abc123", "beta": "unknown"}


def test_cli_repo_examples_and_errors(repos_dir, tmp_path):
    out = tmp_path / "cli.jsonl"
    args = ["data", "repo-examples", "--repos", str(repos_dir), "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--grep", "10", "--read", "4", "--direct", "4", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert "grep 10/10, read 4/4, direct 4/4" in r.output
    assert re.search(r"alpha\s+5\s+2\s+0", r.output) and re.search(r"beta\s+5\s+2\s+0", r.output)
    assert re.search(r"\(python\)\s+0\s+0\s+4", r.output)
    assert "files parsed 6; skipped: not_utf8 2, symlink_outside 2, syntax_error 2, too_large 2" in r.output
    assert len(fileio.read_jsonl(out)) == 18

    r = CliRunner().invoke(main, ["data", "repo-examples", "--repos", str(tmp_path / "none"), "-o", str(out)])
    assert r.exit_code == 1 and r.output.startswith("Error: --repos:") and "no such directory" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(
        main, ["data", "repo-examples", "--repos", str(tmp_path / "empty"), "-o", str(out)]
    )
    assert r.exit_code == 1 and "no repositories" in r.output
    assert len(fileio.read_jsonl(out)) == 18  # an error leaves the earlier output untouched
    r = CliRunner().invoke(main, [*args, "--grep", "-1"])
    assert r.exit_code == 2 and "--grep" in r.output


def test_cli_domain_examples(repos_dir, tmp_path):
    out = tmp_path / "domain.jsonl"
    args = ["data", "domain-examples", "--repo", str(repos_dir / "alpha"), "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--grep", "500", "--read", "3", "--direct", "2"])
    assert r.exit_code == 0, r.output
    assert "shortfall (not enough distinct symbols): grep" in r.output
    recs = fileio.read_jsonl(out)
    assert {x["meta"]["source"] for x in recs if x["meta"]["category"] != "direct"} == {"domain:alpha"}
    assert any("domain" in x["messages"][1]["content"] for x in recs if x["meta"]["category"] == "direct")
    check_grounded(recs, repos_dir)
    r = CliRunner().invoke(
        main, ["data", "domain-examples", "--repo", str(tmp_path / "gone"), "-o", str(out)]
    )
    assert r.exit_code == 1 and "Error: --repo:" in r.output and "no such directory" in r.output


def test_domain_default_is_this_projects_library():
    root = examples.default_domain_root()
    repo = examples.domain_repo()
    assert repo.source == "domain:mlx_tune" and repo.name == "mlx_tune"
    assert repo.root == root / "mlx_tune" and (repo.root / "data" / "examples.py").is_file()
    assert not (repo.root / "tests").exists()
