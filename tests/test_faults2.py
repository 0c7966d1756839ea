"""Fault battery, part two (issue 12): hostile text given to ``ast`` and to JSON decoders inside
records, whole-or-nothing multi-file outputs, a corrupt repository manifest, a real full disk, and
hostile inputs to the CLI. Each is a one-line error or a counted skip, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, fileio, records
from mlx_tune.cli import main
from mlx_tune.data import repos, stdlib_direct
from mlx_tune.data.merge import merge_files
from mlx_tune.eval import metrics
from tests.conftest import make_records, one_line_error

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


# ---------------------------------------------------------------- a phase folder, whole or not at all


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temps(folder: Path) -> list[str]:
    """Temporary folders of atomic writes (live or left by a killed writer) in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def full_disk_write_text(path, text):
    """``fileio.write_text`` on a disk that is full."""
    with fileio.atomic_path(path):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def phase(tmp_path):
    """Merged inputs in ``data/phase1`` (train, valid, test, manifest) plus a user's own note."""
    fileio.write_jsonl(tmp_path / "in.jsonl", make_records(30))
    out = tmp_path / "data" / "phase1"
    merge_files([tmp_path / "in.jsonl"], out, valid=0.2, test=0.2, seed=0)
    (out / "NOTES.md").write_text("mine\n")
    return tmp_path / "in.jsonl", out


def test_phase_folder_failing_half_way_is_left_as_it_was(phase, monkeypatch):
    """A full disk after the new splits, before the manifest: the old folder is untouched."""
    inputs, out = phase
    fileio.write_jsonl(inputs, make_records(24))  # different inputs: every file would change
    before = snapshot(out)

    monkeypatch.setattr(fileio, "write_text", full_disk_write_text)
    with pytest.raises(UserError, match=rf"^{out}/manifest.json: cannot write: no space left on device"):
        merge_files([inputs], out, valid=0.2, test=0.2, seed=0)
    assert snapshot(out) == before and not temps(out.parent)


def test_phase_folder_is_replaced_whole_and_keeps_the_users_files(phase):
    inputs, out = phase
    old_train = (out / "train.jsonl").read_bytes()
    fileio.write_jsonl(inputs, make_records(24))
    m = merge_files([inputs], out, valid=0.2, test=0.0, seed=0)  # no test split this time
    assert sorted(p.name for p in out.iterdir()) == [
        "NOTES.md",
        "manifest.json",
        "train.jsonl",
        "valid.jsonl",
    ]
    assert (out / "NOTES.md").read_text() == "mine\n"
    assert (out / "train.jsonl").read_bytes() != old_train
    assert m["files"]["train.jsonl"]["sha256"] == fileio.sha256_file(out / "train.jsonl")
    assert json.loads((out / "manifest.json").read_text())["files"] == m["files"]
    assert not temps(out.parent) and not temps(out)


def test_a_killed_merge_leaves_the_old_folder_and_the_next_run_cleans_up(phase):
    """SIGKILL while the new splits are being written: the old folder is intact; the killed run's
    temporary folder is removed by the next merge, while a live writer's is left alone."""
    inputs, out = phase
    before = snapshot(out)
    fileio.write_jsonl(inputs, make_records(24))
    code = (
        "import sys, time\n"
        "from mlx_tune import fileio; from mlx_tune.data import merge\n"
        "real = fileio.write_jsonl\n"
        "def slow(path, recs):\n"
        "    real(path, recs)\n"
        "    print('wrote', flush=True)\n"
        "    time.sleep(600)\n"
        "fileio.write_jsonl = slow\n"
        "merge.merge_files([sys.argv[1]], sys.argv[2], valid=0.2, test=0.2, seed=0)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(inputs), str(out)], cwd=root, env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline() == b"wrote\n"
    finally:
        proc.kill()
        proc.wait()
    assert snapshot(out) == before
    left = temps(out.parent)
    assert left and all(f".phase1.{proc.pid}." in name for name in left)
    live = out.parent / f".phase1.{os.getppid()}.abcd1234.tmp"  # a writer that is still running
    live.mkdir()
    (out / f".train.jsonl.{dead_pid()}.abcd1234.tmp").mkdir()  # an older killed writer's, inside
    merge_files([inputs], out, valid=0.2, test=0.2, seed=0)
    assert temps(out.parent) == [live.name] and not temps(out)
    assert snapshot(out) != before and (out / "NOTES.md").read_text() == "mine\n"


def test_temp_dir_removes_only_dead_writers_leftovers(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    for name in (
        f".a.jsonl.{dead}.x1.tmp",
        f".a.jsonl.{alive}.x2.tmp",
        f".b.jsonl.{dead}.x3.tmp",
        ".a.jsonl.x4.tmp",
    ):
        (tmp_path / name).mkdir()
    new = fileio.temp_dir(tmp_path, "a.jsonl")
    assert new.name.startswith(f".a.jsonl.{os.getpid()}.") and new.name.endswith(".tmp")
    # another name's and unstamped folders are not this writer's to judge
    assert temps(tmp_path) == sorted(
        [f".a.jsonl.{alive}.x2.tmp", f".b.jsonl.{dead}.x3.tmp", ".a.jsonl.x4.tmp", new.name]
    )


def test_merge_into_the_current_folder_or_onto_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fileio.write_jsonl(tmp_path / "in.jsonl", make_records(12))
    (tmp_path / "f.txt").write_text("keep")
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_text("phase: 1\ninputs: [in.jsonl]\n")
    before = snapshot(tmp_path)
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", "ph", "--out", "."])
    assert one_line_error(r) == "Error: .: is or contains the current folder; choose a folder of its own"
    with pytest.raises(UserError, match="^f.txt: exists and is a file; remove it or choose another folder$"):
        merge_files(["in.jsonl"], "f.txt")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- the repositories manifest

CORRUPT_MANIFESTS = {
    "not json": (b"{not json", "not valid JSON: Expecting property name"),
    "not utf-8": (b'{"repos": ["caf\xe9"]}', "not UTF-8: byte 0xe9"),
    "too deep": (b"[" * 100_000, "not valid JSON: nested deeper than"),
    "a list": (b"[1, 2]", 'expected {"repos": [{"name": ...}, ...]}'),
    "repos not a list": (b'{"repos": 5}', 'expected {"repos": [{"name": ...}, ...]}'),
    "entry without name": (b'{"repos": [{"url": "x"}]}', "repos[0].name: None is not a plain folder name"),
    "escaping name": (b'{"repos": [{"name": "../../etc"}]}', "repos[0].name: '../../etc' is not a plain"),
    "name with newline": (b'{"repos": [{"name": "a\\n"}]}', "repos[0].name: 'a\\n' is not a plain"),
    "empty": (b"", "not valid JSON: Expecting value"),
}


@pytest.fixture
def source_tree(tmp_path):
    src = tmp_path / "proj"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "core.py").write_text("def run():\n    pass\n")
    return src


@pytest.mark.parametrize("kind", sorted(CORRUPT_MANIFESTS))
def test_corrupt_manifest_is_one_line_and_nothing_is_copied(tmp_path, source_tree, kind):
    content, problem = CORRUPT_MANIFESTS[kind]
    dest = tmp_path / "repos"
    dest.mkdir()
    (dest / "manifest.json").write_bytes(content)
    r = CliRunner().invoke(main, ["repos", "add", str(source_tree), "--dest", str(dest)])
    line = one_line_error(r)
    assert line.startswith(f"Error: {dest / 'manifest.json'}: not a repository manifest ({problem}")
    assert line.endswith("); delete it or fix it")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json"]  # no unrecorded copy
    with pytest.raises(UserError, match="not a repository manifest"):
        repos.clone_repos(dest, {"x": (tmp_path / "nowhere").as_uri()}, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("name", ["manifest.json", "a\n", "..", "-x"])
def test_repository_names_that_are_not_plain_folder_names(tmp_path, source_tree, name):
    with pytest.raises(UserError, match="is not a usable folder name"):
        repos.add_path(source_tree, tmp_path / "repos", name=name)
    assert not (tmp_path / "repos").exists()


def test_manifest_that_is_a_folder(tmp_path, source_tree):
    dest = tmp_path / "repos"
    (dest / "manifest.json").mkdir(parents=True)
    with pytest.raises(UserError, match=r"manifest.json: not a repository manifest \(Is a directory\)"):
        repos.add_path(source_tree, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json"]


def test_full_disk_while_recording_leaves_no_copy_and_the_old_one_intact(tmp_path, source_tree, monkeypatch):
    dest = tmp_path / "repos"
    repos.add_path(source_tree, dest, name="proj")
    before = snapshot(dest)
    (source_tree / "pkg" / "more.py").write_text("X = 2\n")

    monkeypatch.setattr(fileio, "write_text", full_disk_write_text)
    for name, force in (("other", False), ("proj", True)):  # a new repository; a replaced one
        with pytest.raises(UserError, match="manifest.json: cannot write: no space left on device"):
            repos.add_path(source_tree, dest, name=name, force=force)
        assert snapshot(dest) == before and not temps(dest)
    monkeypatch.undo()
    entry = repos.add_path(source_tree, dest, name="proj", force=True)
    assert entry["py_files"] == 2 and (dest / "proj" / "pkg" / "more.py").is_file()


def test_a_file_vanishing_during_the_copy_is_counted(tmp_path, source_tree, monkeypatch):
    real = repos.iter_repo_files

    def walk_then_delete(root, *a, **k):
        out = list(real(root, *a, **k))
        (source_tree / "pkg" / "core.py").unlink()
        return iter(out)

    (source_tree / "keep.py").write_text("K = 1\n")
    monkeypatch.setattr(repos, "iter_repo_files", walk_then_delete)
    monkeypatch.setattr(repos, "describe_repo", lambda root: {"py_files": 1, "bytes": 6, "skipped": {}})
    entry = repos.add_path(source_tree, tmp_path / "repos")
    assert entry["skipped"] == {"unreadable": 1}
    assert sorted(p.name for p in (tmp_path / "repos" / "proj").iterdir()) == ["keep.py"]


def test_a_killed_clones_folder_is_removed_by_the_next_clone(tmp_path):
    from tests.test_repos import make_git_repo

    make_git_repo(tmp_path / "up", {"m.py": "X = 1\n"})
    dest = tmp_path / "repos"
    stale = dest / f".up.{dead_pid()}.abcd1234.clone"
    (stale / "up").mkdir(parents=True)
    [r] = repos.clone_repos(dest, {"up": (tmp_path / "up").as_uri()}, progress=False)
    assert r.status == "cloned" and not stale.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "up"]


# ---------------------------------------------------------------- a real full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (a disk that fills up for real), where this machine lets the tests mount one."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_jsonl_onto_a_full_disk_keeps_the_old_file(tiny_disk):
    target = tiny_disk / "train.jsonl"
    fileio.write_jsonl(target, make_records(3))
    before = target.read_bytes()
    with pytest.raises(UserError) as e:
        fileio.write_jsonl(target, make_records(400))  # far more than 64 KiB
    assert str(e.value) == f"{target}: cannot write: no space left on device (nothing was replaced)"
    assert target.read_bytes() == before and sorted(p.name for p in tiny_disk.iterdir()) == ["train.jsonl"]
    fileio.write_jsonl(target, make_records(6))  # the space of the failed attempt was given back
    assert len(fileio.read_jsonl(target)) == 6


def test_phase_merge_onto_a_full_disk_is_one_line_and_keeps_the_old_phase(tmp_path, tiny_disk, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fileio.write_jsonl(tmp_path / "in.jsonl", make_records(12))
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_text(
        "phase: 1\ninputs: [in.jsonl]\nsplit: {valid: 0.2, test: 0.2, seed: 0}\n"
    )
    out = tiny_disk / "phase1"
    args = ["data", "merge", "--phase", "1", "--phases-dir", "ph", "--out", str(out)]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    before = snapshot(out)
    fileio.write_jsonl(tmp_path / "in.jsonl", make_records(400))
    line = one_line_error(CliRunner().invoke(main, args))
    assert line.startswith(f"Error: {out}/") and line.endswith(
        ": cannot write: no space left on device (nothing was replaced)"
    ), line
    assert snapshot(out) == before and sorted(p.name for p in tiny_disk.iterdir()) == ["phase1"]


def test_a_linked_phase_folder_stays_a_link(phase):
    inputs, out = phase
    link = out.parent / "current"
    link.symlink_to(out.name, target_is_directory=True)
    fileio.write_jsonl(inputs, make_records(24))
    m = merge_files([inputs], link, valid=0.2, test=0.2, seed=0)
    assert link.is_symlink() and m["files"]["train.jsonl"]["sha256"] == fileio.sha256_file(
        out / "train.jsonl"
    )
    assert (out / "NOTES.md").read_text() == "mine\n" and not temps(out.parent)


# ---------------------------------------------------------------- the CLI on hostile inputs


def hostile_files(folder: Path) -> list[str]:
    """Files no data command should take, each wrong in its own way; returns their names."""
    good = fileio.dumps_record(make_records(1)[0]).encode()
    huge = json.loads(good)
    huge["messages"][1]["content"] = "x" * 5_000_000
    files = {
        "empty.jsonl": b"",
        "blank.jsonl": b"\n \n",
        "binary.jsonl": bytes(range(256)) * 8,
        "nul.jsonl": b'{"a": 1}\x00\n',
        "bom.jsonl": b"\xef\xbb\xbf" + good + b"\n",
        "scalars.jsonl": b'5\n[]\n"s"\nnull\n',
        "shapes.jsonl": b'{"messages": 5}\n{"messages": [5]}\n{"messages": [{"role": ["user"]}]}\n'
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [5]}]}\n'
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "meta": 5}\n',
        "huge.jsonl": fileio.dumps_record(huge).encode() + b"\n" + b"{" * 3_000_000 + b"\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "adir").mkdir()
    (folder / "loop.jsonl").symlink_to("loop.jsonl")
    return [*files, "adir", "loop.jsonl", "missing.jsonl"]


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fileio.write_jsonl("good.jsonl", make_records(12))
    fileio.write_jsonl("answers.jsonl", [{"text": "I do not know."}] * 12)
    (tmp_path / "ph").mkdir()
    return hostile_files(tmp_path)


def test_data_and_bench_commands_on_hostile_files(hostile):
    """Every command that reads JSONL, on every hostile file: a clean error, never a traceback
    (the huge file's good record passes validation; its last line does not)."""
    for name in hostile:
        Path("ph/phase1.yaml").write_text(f"phase: 1\ninputs: [{name}]\n")
        for args in (
            ["data", "validate", name],
            ["data", "stats", name],
            ["data", "merge", "--phase", "1", "--phases-dir", "ph", "--out", "out"],
            ["bench", "score", "--queries", name, "--predictions", "answers.jsonl", "--out", "b"],
            ["bench", "score", "--queries", "good.jsonl", "--predictions", name, "--out", "b"],
        ):
            r = CliRunner().invoke(main, args)
            no_traceback(r)
            assert r.exit_code in (1, 2), (args, r.output)
    assert not Path("out").exists() and not Path("b/results.json").exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"phase: 1\ninputs: [\xff]\n", "ph/phase1.yaml: not UTF-8: byte 0xff at offset 18"),
        (b"a: [" * 5000, "ph/phase1.yaml: not valid YAML: nested too deeply"),
        (
            b"\x00",
            'ph/phase1.yaml: not valid YAML: unacceptable character #x0000: special characters are not allowed in "<unicode string>", position 0',
        ),
        (b"a: b: c", "ph/phase1.yaml:1: not valid YAML: mapping values are not allowed here"),
    ],
)
def test_hostile_phase_config_is_one_line(tmp_path, monkeypatch, content, problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_bytes(content)
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", "ph"])
    assert one_line_error(r) == f"Error: {problem}"


@pytest.mark.parametrize("out", ["afile/phase1", "afile/deeper/phase1"])
def test_outputs_under_a_file_are_one_line_errors(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    fileio.write_jsonl("in.jsonl", make_records(12))
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_text("phase: 1\ninputs: [in.jsonl]\n")
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", "ph", "--out", out])
    assert one_line_error(r) == f"Error: {out}: cannot write: afile is a file, not a folder"
    with pytest.raises(UserError, match=f"^{out}/x.jsonl: cannot write: afile is a file, not a folder$"):
        fileio.write_jsonl(f"{out}/x.jsonl", [])
    assert (tmp_path / "afile").read_text() == "keep"


def test_extract_reads_a_source_with_a_byte_order_mark(tmp_path):
    """Python runs a file that starts with a UTF-8 BOM; extraction must not call it a syntax error."""
    from mlx_tune.data.extract import extract_files

    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbfclass Marked:\n    def run(self):\n        pass\n")
    [info] = extract_files([(str(tmp_path), "bom.py")], jobs=1, progress=False)
    assert info.status == "ok" and [c.name for c in info.classes] == ["Marked"]


def test_a_huge_integer_is_a_line_problem_not_a_crash():
    value, problem = fileio.parse_json_line('{"n": ' + "9" * 5000 + "}")
    assert value is None and problem.startswith("not valid JSON: Exceeds the limit")


def test_a_writer_killed_between_the_swap_renames_loses_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("old")
    # What a writer killed after moving the old folder aside (and before moving the new one in) leaves:
    dead = tmp_path / ".run.999999999.abc.tmp"
    dead.mkdir()
    os.replace(out, dead / "run.old")
    with fileio.atomic_path(out) as tmp:
        assert (out / "results.json").read_text() == "old"  # restored before the new write
        tmp.mkdir()
        (tmp / "results.json").write_text("new")
    assert (out / "results.json").read_text() == "new" and not dead.exists()
