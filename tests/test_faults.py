"""Fault battery (issue 12): hostile inputs and a full disk are one-line errors or counted skips,
never tracebacks, and never destroy what was there before."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, fileio
from mlx_tune.cli import main
from mlx_tune.data.datacheck import load_checked
from mlx_tune.data.extract import extract_files, extract_source
from tests.conftest import make_records, one_line_error

# ---------------------------------------------------------------- helpers


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` with the hash of its bytes."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders that an atomic write left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- fuse onto its own inputs


@pytest.fixture
def fuse_inputs(tmp_path, monkeypatch):
    """A fake base, adapter and data folder (the path checks run before any model loads)."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "qwen2"}\n')
    (base / "model.safetensors").write_bytes(b"base weights")
    data = tmp_path / "data" / "phase1"
    fileio.write_jsonl(data / "train.jsonl", make_records(3))
    fileio.write_jsonl(data / "valid.jsonl", make_records(2))
    adapter = tmp_path / "adapters" / "phase1"
    adapter.mkdir(parents=True)
    (adapter / "adapters.safetensors").write_bytes(b"adapter weights")
    cfg = {"model": str(base), "data": str(data), "fine_tune_type": "lora"}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    return tmp_path, base, adapter, data


@pytest.mark.parametrize(
    "save, how",
    [
        ("adapters/phase1", "is --adapter-path"),
        ("adapters", "contains --adapter-path"),
        ("adapters/phase1/fused", "lies inside --adapter-path"),
        ("models/base", "is --model"),
        ("models", "contains --model"),
        ("models/base/fused", "lies inside --model"),
        ("data/phase1", "is the training data"),
        ("data", "contains the training data"),
        ("via-link", "is --adapter-path"),  # a symlink to the adapter folder
    ],
)
@pytest.mark.parametrize("force", [True, False])
def test_fuse_refuses_save_path_on_its_inputs(fuse_inputs, save, how, force):
    root, base, adapter, data = fuse_inputs
    (root / "via-link").symlink_to(adapter, target_is_directory=True)
    before = snapshot(root)
    args = ["fuse", "--adapter-path", "adapters/phase1", "--save-path", save] + (["--force"] if force else [])
    line = one_line_error(CliRunner().invoke(main, args))
    assert line.startswith(f"Error: --save-path: {save} {how} "), line
    assert snapshot(root) == before  # nothing deleted, nothing written
    assert not leftovers(root) and not leftovers(root / "adapters") and not leftovers(root / "models")


@pytest.mark.parametrize("save, how", [(".", "is"), ("..", "contains")])
def test_fuse_refuses_the_current_folder(fuse_inputs, monkeypatch, save, how):
    root, _, adapter, _ = fuse_inputs
    work = root / "elsewhere" / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    args = ["fuse", "--adapter-path", str(adapter), "--save-path", save, "--force"]
    line = one_line_error(CliRunner().invoke(main, args))
    assert line.startswith(f"Error: --save-path: {save} {how} the current folder "), line
    assert (work / "notes.txt").read_text() == "mine"


def test_fuse_allows_a_sibling_save_path(fuse_inputs):
    """The check refuses only real overlaps: a sibling whose name shares a prefix passes it."""
    from mlx_tune.training.fuse import resolve

    root, base, adapter, _ = fuse_inputs
    model, got_adapter, out, cfg = resolve(None, "adapters/phase1", "adapters/phase1-fused", None, 8)
    assert (model, got_adapter, out) == (str(base), Path("adapters/phase1"), Path("adapters/phase1-fused"))
    assert cfg["fine_tune_type"] == "lora"


def test_fuse_adapter_path_naming_a_file(fuse_inputs):
    root, _, adapter, _ = fuse_inputs
    for given in ("adapters/phase1/adapters.safetensors", "adapters/phase1/adapter_config.json"):
        line = one_line_error(
            CliRunner().invoke(main, ["fuse", "--adapter-path", given, "--save-path", "out"])
        )
        assert (
            line == f"Error: --adapter-path: {given} is a file; give the folder holding adapters.safetensors"
        )


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"model": "x"\xff}', "not UTF-8"),
        (b"[" * 100_000, "not valid JSON: nested too deeply"),
        (b'{"model": 5}', "--model: required"),
    ],
)
def test_fuse_hostile_adapter_config(fuse_inputs, content, problem):
    root, _, adapter, _ = fuse_inputs
    (adapter / "adapter_config.json").write_bytes(content)
    line = one_line_error(
        CliRunner().invoke(main, ["fuse", "--adapter-path", "adapters/phase1", "--save-path", "o"])
    )
    assert problem in line


def test_fuse_save_path_that_is_a_file(fuse_inputs):
    root, *_ = fuse_inputs
    (root / "out").write_text("keep me")
    args = ["fuse", "--adapter-path", "adapters/phase1", "--save-path", "out", "--force"]
    line = one_line_error(CliRunner().invoke(main, args))
    assert line.startswith("Error: --save-path: out is a file, not a model folder")
    assert (root / "out").read_text() == "keep me"


# ---------------------------------------------------------------- hostile JSONL


def hostile_jsonl(path: Path) -> dict[int, str]:
    """A file of good records around hostile lines; returns {line: expected problem}."""
    good = [fileio.dumps_record(r).encode() for r in make_records(2)]
    lines = [
        good[0],
        b'{"messages": [], "x": "caf\xe9"}',  # Latin-1, not UTF-8
        b"[" * 100_000,  # overflows the JSON decoder's recursion
        b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}",  # parses, but far deeper than any record
        b'{"messages": [], "x": "\\udc80"}',  # a lone surrogate: cannot be written back as UTF-8
        b"{bad",
        good[1],
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {
        2: "record: not UTF-8: byte 0xe9 at column 27",
        3: f"record: not valid JSON: nested deeper than {fileio.MAX_JSON_DEPTH} levels",
        4: f"record: not valid JSON: nested deeper than {fileio.MAX_JSON_DEPTH} levels",
        5: "record: not UTF-8: a string holds a lone surrogate",
        6: "record: not valid JSON: Expecting property name enclosed in double quotes",
    }


def test_load_checked_reports_hostile_lines_and_keeps_the_rest(tmp_path):
    f = tmp_path / "h.jsonl"
    expected = hostile_jsonl(f)
    good, problems = load_checked([f])
    assert [g.line for g in good] == [1, 7]
    assert len(problems) == len(expected)
    for problem, (line, what) in zip(problems, expected.items(), strict=True):
        assert problem.startswith(f"{f}:{line}: {what}"), problem


def test_read_jsonl_names_the_first_hostile_line(tmp_path):
    f = tmp_path / "h.jsonl"
    hostile_jsonl(f)
    with pytest.raises(UserError, match=rf"^{f}:2: not UTF-8: byte 0xe9 at column 27$"):
        fileio.read_jsonl(f)
    f.write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(UserError, match=rf"^{f}:1: not valid JSON: nested deeper than"):
        fileio.read_jsonl(f)


@pytest.mark.parametrize("command", [["data", "validate"], ["data", "stats"]])
def test_data_commands_on_hostile_jsonl_are_errors_not_tracebacks(tmp_path, command):
    f = tmp_path / "h.jsonl"
    expected = hostile_jsonl(f)
    r = CliRunner().invoke(main, [*command, str(f)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    for line, what in expected.items():
        assert f"{f}:{line}: {what}" in r.output, r.output


def test_merge_on_hostile_jsonl_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = hostile_jsonl(tmp_path / "h.jsonl")
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_text("phase: 1\ninputs: [h.jsonl]\n")
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", "ph"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    for line, what in expected.items():
        assert f"h.jsonl:{line}: {what}" in r.output, r.output
    assert not (tmp_path / "data/phase1").exists()


# ---------------------------------------------------------------- hostile Python sources


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "1+" * 200_000 + "1\n",  # RecursionError while building the ast
        "x = " + "-" * 100_000 + "1\n",  # MemoryError in the parser
        "x = f" + "()" * 100_000 + "\n",  # RecursionError
        "x = " + "(" * 300 + "1" + ")" * 300 + "\n",  # SyntaxError: too many nested parentheses
    ],
)
def test_extract_skips_sources_too_deep_for_ast(tmp_path, source):
    info = extract_source(source, "deep.py")
    assert info.status in ("too_complex", "syntax_error") and not info.functions and not info.classes
    root = tmp_path / "repo"
    root.mkdir()
    (root / "deep.py").write_text(source)
    (root / "ok.py").write_text("class Kept:\n    def run(self):\n        pass\n")
    infos = extract_files([(str(root), "deep.py"), (str(root), "ok.py")], jobs=1, progress=False)
    assert [i.status for i in infos] == [info.status, "ok"]
    assert [c.name for c in infos[1].classes] == ["Kept"]


def test_examples_run_counts_the_skipped_file(tmp_path):
    """One hostile file among good ones: the example run goes on and counts it as skipped."""
    from mlx_tune.data.examples import Repo, generate

    root = tmp_path / "pkg"
    root.mkdir()
    (root / "deep.py").write_text("x = " + "1+" * 200_000 + "1\n")
    for i in range(3):
        (root / f"mod{i}.py").write_text(
            f'def handle_item{i}(value):\n    """Return value plus {i}."""\n    return value + {i}\n'
        )
    result = generate([Repo("pkg", root)], {"grep": 2, "read": 2}, jobs=1, progress=False)
    assert result.skipped["too_complex"] == 1 and result.files_parsed == 3


# ---------------------------------------------------------------- full disk


class _FullDisk:
    """A file object whose writes fail with ENOSPC after ``room`` bytes (a filling disk)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, text):
        if len(text) > self.room:
            self.f.write(text[: self.room])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(text)
        return self.f.write(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_write_jsonl_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "train.jsonl"
    fileio.write_jsonl(target, make_records(3))
    before = target.read_bytes()
    monkeypatch.setattr(fileio, "open", lambda *a, **k: _FullDisk(open(*a, **k), 300), raising=False)
    with pytest.raises(UserError) as e:
        fileio.write_jsonl(target, make_records(6))
    assert str(e.value) == f"{target}: cannot write: no space left on device (nothing was replaced)"
    assert target.read_bytes() == before and not leftovers(tmp_path)


def test_write_text_and_folders_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    fileio.write_json(target, {"old": True})
    real_write_text = Path.write_text

    def full_write_text(self, text, *a, **k):
        real_write_text(self, text[:5], *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_write_text)
    with pytest.raises(UserError, match="report.json: cannot write: no space left on device"):
        fileio.write_json(target, {"new": True})
    # A folder (a model, an adapter) that fills the disk half-way through.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_bytes(b"old weights")
    with pytest.raises(UserError, match="model: cannot write: no space left on device"):
        with fileio.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_bytes(b"new")
            (tmp / "config.json").write_text("{}")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in folder.iterdir()] == ["weights"] and (
        folder / "weights"
    ).read_bytes() == b"old weights"
    assert not leftovers(tmp_path)


def test_quota_and_other_os_errors(tmp_path, monkeypatch):
    """EDQUOT reads like a full disk; any other OSError is not disguised as one."""
    target = tmp_path / "f.txt"
    for code, expected in ((errno.EDQUOT, UserError), (errno.EACCES, PermissionError)):

        def failing(self, *a, code=code, **k):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(Path, "write_text", failing)
        with pytest.raises(expected):
            fileio.write_text(target, "x")
        monkeypatch.undo()
        assert not target.exists() and not leftovers(tmp_path)


def test_folder_swap_failing_half_way_restores_the_old_folder(tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "weights").write_bytes(b"old")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new folder onto the path, after the old one was moved aside
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match="adapter: cannot write"):
        with fileio.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_bytes(b"new")
    monkeypatch.undo()
    assert (folder / "weights").read_bytes() == b"old" and not leftovers(tmp_path)


def test_atomic_path_refuses_to_swap_a_folder_onto_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(UserError, match="out: exists and is a file"):
        with fileio.atomic_path(target) as tmp:
            tmp.mkdir()
    assert target.read_text() == "a file" and not leftovers(tmp_path)
