"""Repository/domain example generation, end to end on a small fixture repository."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import examples, fileio, records
from mlx_tune.cli import main

ROUTES = '''"""HTTP routing for {pkg}."""
from {pkg}.models import {Model}
from typing import Any


class {Router}:
    """Collects routes and dispatches requests to their handlers."""

    def add_route(self, path: str, handler) -> None:
        """Register handler for path."""

    async def dispatch(self, request: {Model}) -> Any:
        """Send the request to the matching route's handler."""


def route(path: str):
    """Decorator that registers a function as the handler of path."""


@route("/items")
def list_items() -> list:
    """Return every stored item as a list."""
    return []


@route("/users")
def list_users() -> list:
    return []


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

    def to_json(self) -> str:
        """Serialize the request to a JSON string."""
        return json.dumps(self.__dict__)


def parse_model(text: str) -> {Model}:
    """Build a {Model} from JSON text."""
    return {Model}(**json.loads(text))
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


COUNTS = {"grep": 24, "read": 10, "direct": 8}


def check_grounded(recs: list[dict], base: Path) -> None:
    for r in recs:
        assert records.validate_record(r) == [], r
        m = r["meta"]
        assert m["origin"] == "real" and m["generator"] == "repo-examples/1"
        assert m["kind"] in ("class", "function", "method", "decorator", "import", "usage", "file")
        root = Path(m["root"])
        assert not root.is_absolute() and root.resolve() == (base / m["repo"]).resolve()
        assert m["commit"] and "Leaked" not in json.dumps(r) and "escape.py" not in m["path"]
        call = records.record_call(r)
        category = records.record_category(r)
        assert category == m["category"]
        if category == "grep":
            tool, args = call
            lines = (root / m["path"]).read_text().splitlines()
            assert any(re.search(args["pattern"], line) for line in lines), (args, m["path"])
            if "path" in args:
                assert m["path"] == args["path"] or m["path"].startswith(args["path"] + "/")
        elif category == "read":
            assert call[1]["path"] == m["path"] and (root / m["path"]).is_file()
            assert m["path"] in r["messages"][1]["content"] or m["path"].endswith(".py")
        else:
            assert call is None and m["symbol"]
            answer = r["messages"][-1]["content"]
            assert answer.endswith((".", "!", "?")) and f"`{m['path']}`" in answer


def test_repo_examples_end_to_end(repos_dir, tmp_path):
    out = tmp_path / "out" / "examples.jsonl"
    result = examples.repo_examples(repos_dir, out, COUNTS, seed=3, progress=False)
    recs = fileio.read_jsonl(out)
    assert len(recs) == sum(COUNTS.values())
    assert Counter(r["meta"]["category"] for r in recs) == COUNTS
    by_repo = Counter((r["meta"]["repo"], r["meta"]["category"]) for r in recs)
    assert by_repo[("alpha", "grep")] == by_repo[("beta", "grep")] == 12  # spread evenly
    check_grounded(recs, repos_dir)
    assert len({records.normalized_key(r) for r in recs}) == len(recs)
    kinds = Counter(r["meta"]["kind"] for r in recs if r["meta"]["category"] == "grep")
    assert len(kinds) >= 5, kinds  # class, function, method, decorator, import, usage
    assert result.files_parsed == 6
    assert result.skipped == {"syntax_error": 2, "not_utf8": 2, "symlink_outside": 2, "too_large": 2}
    assert all(not r["meta"]["symbol"] or not r["meta"]["symbol"].startswith("_") for r in recs)


def test_direct_answers_quote_the_docstring(repos_dir, tmp_path):
    result = examples.generate(
        examples.find_repos(repos_dir), {"grep": 0, "read": 0, "direct": 100}, progress=False
    )
    docs = {
        "AlphaRouter": "Collects routes and dispatches requests to their handlers.",
        "AlphaRouter.add_route": "Register handler for path.",
        "parse_model": "Build a AlphaRequest from JSON text.",
    }
    answers = {
        r["meta"]["symbol"]: r["messages"][-1]["content"]
        for r in result.records
        if r["meta"]["repo"] == "alpha"
    }
    for symbol, doc in docs.items():
        assert doc in answers[symbol]
    assert "`add_route(self, path: str, handler) -> None`" in answers["AlphaRouter.add_route"]
    assert "async method" in answers["AlphaRouter.dispatch"]
    assert "list_users" not in answers  # no docstring: nothing to explain from
    assert result.shortfall == {"direct": 100 - len(result.records)}


def test_same_seed_same_bytes_and_other_seed_differs(repos_dir, tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    examples.repo_examples(repos_dir, a, COUNTS, seed=1, progress=False)
    examples.repo_examples(repos_dir, b, COUNTS, seed=1, progress=False)
    examples.repo_examples(repos_dir, c, COUNTS, seed=2, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_phrasing_varies_but_category_stays_inferable(repos_dir, tmp_path):
    result = examples.generate(
        examples.find_repos(repos_dir), {"grep": 60, "read": 20, "direct": 20}, progress=False
    )
    questions = {
        c: [r["messages"][1]["content"] for r in result.records if r["meta"]["category"] == c]
        for c in records.CATEGORIES
    }
    for c, qs in questions.items():
        first_words = Counter(q.split()[0] for q in qs)
        assert len(first_words) >= 4, (c, first_words)
    assert not any(q.startswith(("Show", "Open", "Display")) for q in questions["grep"] + questions["direct"])
    assert not any(re.match(r"(Where|Which|Find|Locate|Search)\b", q) for q in questions["read"])


def test_code_format(repos_dir, tmp_path):
    out = tmp_path / "code.jsonl"
    examples.repo_examples(repos_dir, out, COUNTS, fmt="code", progress=False)
    recs = fileio.read_jsonl(out)
    check_grounded(recs, repos_dir)
    assert all("tools" not in r for r in recs)
    assert any(r["messages"][-1]["content"].startswith("```python\ngrep(") for r in recs)


def test_manifest_commit_is_used(repos_dir, tmp_path):
    fileio.write_json(repos_dir / "manifest.json", {"repos": [{"name": "alpha", "commit": "abc123"}]})
    found = {r.name: r.commit for r in examples.find_repos(repos_dir)}
    assert found == {"alpha": "abc123", "beta": "unknown"}


def test_cli_repo_examples_and_errors(repos_dir, tmp_path):
    out = tmp_path / "cli.jsonl"
    args = ["data", "repo-examples", "--repos", str(repos_dir), "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--grep", "10", "--read", "4", "--direct", "4", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert "grep 10/10, read 4/4, direct 4/4" in r.output
    assert re.search(r"alpha\s+5\s+2\s+2", r.output) and re.search(r"beta\s+5\s+2\s+2", r.output)
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
    assert {x["meta"]["source"] for x in recs} == {"domain:alpha"}
    check_grounded(recs, repos_dir)
    r = CliRunner().invoke(
        main, ["data", "domain-examples", "--repo", str(tmp_path / "gone"), "-o", str(out)]
    )
    assert r.exit_code == 1 and "Error: --repo:" in r.output and "no such directory" in r.output


def test_domain_default_is_this_project():
    root = examples.default_domain_root()
    assert (root / "mlx_tune" / "examples.py").is_file()
    repo = examples.domain_repo()
    assert repo.source == "domain:mlx_tune" and repo.root == root
