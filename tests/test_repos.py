"""Collecting repositories: walking files, cloning (local file:// URLs only), local and installed
sources, and the manifest."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess

import pytest
from click.testing import CliRunner

from mlx_tune import UserError
from mlx_tune.cli import main
from mlx_tune.data import repos

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]


def make_git_repo(path, files: dict[str, str]) -> str:
    """A git checkout at ``path`` with ``files`` committed; returns the commit sha."""
    path.mkdir(parents=True)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    subprocess.run([*GIT, "init", "-q", str(path)], check=True)
    subprocess.run([*GIT, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-q", "-m", "init"], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def messy_tree(tmp_path):
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "latin.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (root / "big.py").write_text("#" * (repos.MAX_FILE_BYTES + 1))
    (root / "README.md").write_text("# hi\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.py").write_text("H = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "c.py").write_text("C = 1\n")
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    os.symlink(outside, root / "escape.py")
    os.symlink(tmp_path, root / "escape_dir")
    os.symlink(root / "pkg" / "a.py", root / "inside.py")
    return root


def test_iter_repo_files_skips_and_counts(messy_tree):
    stats = repos.WalkStats()
    files = list(repos.iter_repo_files(messy_tree, stats=stats))
    assert files == ["README.md", "inside.py", "pkg/a.py", "pkg/latin.py"]
    assert stats.skipped == {"symlink_outside": 2, "too_large": 1}
    assert list(repos.iter_repo_files(messy_tree, suffixes=(".md",))) == ["README.md"]


def test_clone_local_success_failure_and_skip(tmp_path):
    sha = make_git_repo(tmp_path / "upstream", {"lib/core.py": "def f():\n    pass\n", "README.md": "x\n"})
    dest = tmp_path / "repos"
    targets = {"good": (tmp_path / "upstream").as_uri(), "bad": (tmp_path / "missing.git").as_uri()}
    results = repos.clone_repos(dest, targets, jobs=2, progress=False)
    assert [(r.name, r.status) for r in results] == [("good", "cloned"), ("bad", "failed")]
    assert "does not appear to be a git repository" in results[1].reason
    assert (dest / "good" / "lib" / "core.py").is_file() and not (dest / "bad").exists()
    manifest = json.loads((dest / "manifest.json").read_text())
    [entry] = manifest["repos"]
    assert entry["name"] == "good" and entry["commit"] == sha and entry["py_files"] == 1
    assert entry["url"] == targets["good"] and entry["bytes"] > 0
    assert not [p for p in os.listdir(dest) if p.startswith(".")]  # temp folders cleaned up

    again = repos.clone_repos(dest, {"good": targets["good"]}, progress=False)
    assert again[0].status == "present" and again[0].entry["commit"] == sha


def test_clone_cli_reports_git_reason_and_exit_code(tmp_path):
    make_git_repo(tmp_path / "up", {"m.py": "X = 1\n"})
    args = ["repos", "clone", "--dest", str(tmp_path / "r"), "--repo", f"ok={(tmp_path / 'up').as_uri()}"]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "cloned  ok (1 .py files)" in ok.output
    bad = CliRunner().invoke(main, [*args, "--repo", f"nope={(tmp_path / 'nope').as_uri()}"])
    assert bad.exit_code == 1
    assert "present  ok" in bad.output and "failed  nope: fatal:" in bad.output
    assert "1 of 2 failed to clone: nope" in bad.output
    odd = CliRunner().invoke(main, ["repos", "clone", "--dest", str(tmp_path / "r"), "--repo", "nourl"])
    assert odd.exit_code == 1 and "Error: --repo: 'nourl': expected NAME=URL" in odd.output
    unknown = CliRunner().invoke(main, ["repos", "clone", "--dest", str(tmp_path / "r"), "--only", "zzz"])
    assert unknown.exit_code == 1 and "unknown repository zzz" in unknown.output


def test_clone_targets_defaults_replacement_and_narrowing():
    assert repos.clone_targets() == repos.POPULAR_REPOS and repos.clone_targets() is not repos.POPULAR_REPOS
    first, second = list(repos.POPULAR_REPOS)[:2]
    narrowed = repos.clone_targets(only=[second, first])
    assert narrowed == {second: repos.POPULAR_REPOS[second], first: repos.POPULAR_REPOS[first]}
    assert list(narrowed) == [second, first]  # in the order --only names them
    extra = ["a=file:///x/a", "b=https://example.com/b.git?x=1"]
    assert repos.clone_targets(extra=extra) == {"a": "file:///x/a", "b": "https://example.com/b.git?x=1"}
    assert repos.clone_targets(only=["b"], extra=extra) == {"b": "https://example.com/b.git?x=1"}
    for bad in ("nourl", "=file:///x", "a="):
        with pytest.raises(UserError, match=rf"^--repo: '{re.escape(bad)}': expected NAME=URL$"):
            repos.clone_targets(extra=[bad])
    with pytest.raises(UserError, match=r"^--only: unknown repository zzz, yyy; choose from a, b$"):
        repos.clone_targets(only=["a", "zzz", "yyy"], extra=extra)
    with pytest.raises(UserError, match=rf"^--only: unknown repository zzz; choose from {first}, "):
        repos.clone_targets(only=["zzz"])


def test_add_path_copies_text_and_records_commit(tmp_path, messy_tree):
    dest = tmp_path / "repos"
    entry = repos.add_path(messy_tree, dest, name="messy")
    assert entry["commit"] == "unknown" and entry["source"] == "path"
    assert entry["skipped"] == {"not_utf8": 1, "symlink_outside": 2, "too_large": 1}
    copied = sorted(
        p.relative_to(dest / "messy").as_posix() for p in (dest / "messy").rglob("*") if p.is_file()
    )
    assert copied == ["README.md", "inside.py", "pkg/a.py"]

    sha = make_git_repo(tmp_path / "checkout", {"x.py": "X = 1\n"})
    e2 = repos.add_path(tmp_path / "checkout", dest)
    assert e2["name"] == "checkout" and e2["commit"] == sha and not (dest / "checkout" / ".git").exists()
    names = [e["name"] for e in json.loads((dest / "manifest.json").read_text())["repos"]]
    assert names == ["checkout", "messy"]  # merged, sorted

    with pytest.raises(UserError, match="already exists; pass --force"):
        repos.add_path(tmp_path / "checkout", dest)
    assert repos.add_path(tmp_path / "checkout", dest, force=True)["commit"] == sha
    with pytest.raises(UserError, match="no such directory"):
        repos.add_path(tmp_path / "nowhere", dest)


def test_add_path_into_a_dest_inside_the_source(tmp_path):
    project = tmp_path / "proj"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "m.py").write_text("M = 1\n")
    dest = project / "data" / "repos"
    repos.add_path(project, dest, name="first")
    repos.add_path(project, dest, name="second")  # the repos folder (manifest) is not copied into itself
    files = sorted(p.relative_to(dest / "second").as_posix() for p in (dest / "second").rglob("*.py"))
    assert files == ["pkg/m.py"]


def test_add_installed_records_version(tmp_path):
    dest = tmp_path / "repos"
    [entry] = repos.add_installed(["click"], dest)
    version = importlib.metadata.version("click")
    assert entry["name"] == "click" and entry["version"] == version and entry["commit"] == version
    assert (dest / "click" / "click" / "core.py").is_file()
    assert entry["py_files"] > 5
    assert not list((dest / "click").rglob("*.dist-info"))
    with pytest.raises(UserError, match="no installed distribution"):
        repos.add_installed(["no-such-dist-xyz"], dest)


def test_add_cli_commands(tmp_path, messy_tree):
    dest = str(tmp_path / "repos")
    r = CliRunner().invoke(main, ["repos", "add", str(messy_tree), "--name", "m", "--dest", dest])
    assert r.exit_code == 0, r.output
    assert "added m: 2 .py files" in r.output and "symlink_outside 2" in r.output
    r = CliRunner().invoke(main, ["repos", "add", str(tmp_path / "nope"), "--dest", dest])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "no such directory" in r.output
    r = CliRunner().invoke(main, ["repos", "add", str(messy_tree), "--name", "../x", "--dest", dest])
    assert r.exit_code == 1 and "--name" in r.output
    r = CliRunner().invoke(main, ["repos", "add-installed", "attrs", "--dest", dest])
    assert r.exit_code == 0 and f"added attrs {importlib.metadata.version('attrs')}" in r.output
    r = CliRunner().invoke(main, ["repos", "add-installed", "nope-nope", "--dest", dest])
    assert r.exit_code == 1 and "Error: nope-nope: no installed distribution" in r.output


def test_bad_manifest_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json: not a repository manifest"):
        repos.load_manifest(tmp_path)
