"""Fault battery, part three (issue 12): reading results and configs. A hostile ``results.json`` is a
one-line error naming the field; a benchmark run's folder is replaced whole (a reader sees the old run
or the new one, and a concurrent run's staging folder is left alone); a hostile first training line
never stops a model card; a missing local model is reported as missing, not as a network error."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import records
from mlx_tune.cli import main
from mlx_tune.data import datacheck
from mlx_tune.eval import bench, bench_report, bench_score, metrics
from mlx_tune.fileio import write_jsonl
from mlx_tune.training import model_card
from tests.conftest import make_records, one_line_error
from tests.test_datacheck import tokenizer_dir  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]
NO_SUCH_PID = 99_999_999  # above any kernel's pid_max: never a running process


# ---------------------------------------------------------------- bench report on a hostile results.json


def full_results() -> dict:
    """A ``results.json`` object shaped as ``mlx-tune bench`` writes it: a measured model with an
    unseen-phrasing subset, its fused copy, a failed model and a baseline."""
    acc = dict.fromkeys(metrics.ACCURACY_KEYS, 0.5)
    ci = dict.fromkeys(metrics.ACCURACY_KEYS, [0.25, 0.75])
    model = {"name": "m", "kind": "model", "spec": "models/tiny", "error": None}
    model |= dict.fromkeys(bench_score.MEASURED_KEYS + bench_score.AGENT_KEYS, 1.5)
    model |= {"size_bytes": 12_345_678, "adapter_bytes": 34_567, "trainable_params": 4096}
    model |= {"accuracy": acc, "ci": ci, "confusion": metrics.confusion([]), "counts": {"queries": 6}}
    model["subsets"] = {"unseen_template": {"n": 2, "accuracy": acc, "ci": ci}}
    failed = {"name": "gone", "kind": "model", "spec": "models/gone", "error": "no such folder"}
    failed |= dict.fromkeys(bench_score.MEASURED_KEYS + ("confusion", "subsets"))
    failed |= {"accuracy": dict.fromkeys(metrics.ACCURACY_KEYS), "ci": dict.fromkeys(metrics.ACCURACY_KEYS)}
    baseline = {**model, "name": "never-call", "kind": "baseline", "spec": None, "subsets": None}
    baseline |= dict.fromkeys(bench_score.MEASURED_KEYS)
    results = {
        "machine": {"platform": "Linux", "mlx_device": "Device(cpu, 0)"},
        "versions": {"mlx": "0.1", "mlx_lm": "0.2", "mlx_tune": "0.1.0"},
        "settings": {
            "queries": "test.jsonl",
            "n_queries": 6,
            "repeats": 1,
            "max_tokens": 64,
            "batch_size": 4,
            "missing_repos": ["other"],
            "repos_dir": "repos",
            "html_dir": "html",
        },  # fmt: skip
        "models": [model, {**model, "name": "m-fused-8bit"}, failed, baseline],
        "fused_agreement": {"m-fused-8bit": {"adapter": "m", "identical": 0.75, "queries": 6}},
    }
    return json.loads(json.dumps(results))  # as read from a file: no part shared by two models


def test_a_full_results_file_renders_every_section(tmp_path):
    """The control for the battery below: the file it corrupts one field at a time is valid."""
    results = full_results()
    assert bench_report.results_problems(results) == []
    (tmp_path / "results.json").write_text(json.dumps(results))
    r = CliRunner().invoke(bench.command, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "results.md").read_text()
    for part in ("## Speed", "Fused vs adapter: m-fused-8bit", "## Unseen phrasing (2", "## m: confusion",
                 "## Failures", "no folder for repositories other", "| never-call (baseline) |"):  # fmt: skip
        assert part in md, part
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["a$\\foo$b", "$x^{$", "cost $5", "a\\$b"])
def test_a_name_that_looks_like_math_text_is_drawn_as_it_is(tmp_path, name):
    """matplotlib reads ``$...$`` in a label as math text; an unknown symbol there failed the chart
    (and with it the end of a whole benchmark run)."""
    results = full_results()
    results["models"][0]["name"] = name
    (tmp_path / "results.json").write_text(json.dumps(results))
    r = CliRunner().invoke(bench.command, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert f"| {name} |" in (tmp_path / "results.md").read_text()


# (where in the file, the value put there, the message naming it)
HOSTILE_FIELDS = [
    (["settings"], 5, "settings: expected an object or null, got 5"),
    (["versions"], 5, "versions: expected an object or null, got 5"),
    (["machine"], [], "machine: expected an object or null, got a list"),
    (["fused_agreement"], 5, "fused_agreement: expected an object or null, got 5"),
    (["fused_agreement"], {"a": 5}, "fused_agreement.a: expected an object, got 5"),
    (["fused_agreement", "m-fused-8bit", "identical"], "all",
     "fused_agreement.m-fused-8bit.identical: expected a finite number, got a string"),  # fmt: skip
    (["settings", "missing_repos"], "other", "settings.missing_repos: expected a list or null, got a string"),
    (["settings", "missing_repos"], [1], "settings.missing_repos[0]: expected a string, got 1"),
    (["models"], {"m": {}}, "models: expected a list, got an object"),
    (["models", 0], 5, "models[0]: expected an object with a 'name', got 5"),
    (["models", 0, "name"], None, "models[0].name: expected a string, got null"),
    (["models", 0, "error"], 5, "models[0].error: expected a string or null, got 5"),
    (["models", 0, "subsets"], 5, "models[0].subsets: expected an object or null, got 5"),
    (["models", 0, "subsets", "unseen_template", "n"], None,
     "models[0].subsets.unseen_template.n: expected an integer, got null"),  # fmt: skip
    (["models", 0, "subsets", "unseen_template", "ci"], None,
     "models[0].subsets.unseen_template.ci: expected an object, got null"),  # fmt: skip
    (["models", 0, "confusion"], 5, "models[0].confusion: expected an object or null, got 5"),
    (["models", 0, "confusion"], {"a": 5}, "models[0].confusion.a: expected an object, got 5"),
    (["models", 0, "confusion", "grep", "read"], "x", "models[0].confusion.grep.read: expected an integer, got a string"),
    (["models", 0, "generation_tps"], "fast", "models[0].generation_tps: expected a number or null, got a string"),
    (["models", 0, "size_bytes"], "x", "models[0].size_bytes: expected a number or null, got a string"),
    (["models", 0, "size_bytes"], 10**400, "models[0].size_bytes: expected a number or null, got a number too large"),
    (["models", 0, "accuracy", "macro_f1"], float("inf"),
     "models[0].accuracy.macro_f1: expected a finite number or null, got inf"),  # fmt: skip
    (["models", 0, "ci", "macro_f1"], [0.1],
     "models[0].ci.macro_f1: expected an interval [low, high] or null, got a list"),  # fmt: skip
    (["models", 3, "confusion", "grep"], None, "models[3].confusion.grep: expected an object, got null"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "value", "message"), HOSTILE_FIELDS, ids=[m.split(":")[0] for *_, m in HOSTILE_FIELDS]
)
def test_report_of_a_hostile_field_is_one_line_naming_it(tmp_path, where, value, message):  # fmt: skip
    results = full_results()
    parent = results
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    (tmp_path / "results.json").write_text(json.dumps(results))
    line = one_line_error(CliRunner().invoke(bench.command, ["report", str(tmp_path)]))
    assert line == f"Error: {tmp_path / 'results.json'}: {message}"
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "chart.png").exists()


def _paths(value, path=()):
    """The path of every part of a JSON value (its keys and list indexes), depth first."""
    if path:
        yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, part in items:
        yield from _paths(part, (*path, key))


def test_any_one_field_of_any_type_is_a_problem_or_renders():
    """The variants the list above does not name: every part of the file replaced by a value of
    each JSON type is either a located problem or renders without an exception."""
    base = full_results()
    checked = rendered = 0
    for path in _paths(base):
        for value in (5, "x", None, True, float("inf"), {"a": 1}, ["a"], [[]]):
            results = copy.deepcopy(base)
            parent = results
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            checked += 1
            if not bench_report.results_problems(results):
                bench_report.format_markdown(results)
                bench_report.format_table(results)
                rendered += 1
    assert checked > 2000 and 0 < rendered < checked


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"models": [{"name": "\xff"}]}', "not a results file: not UTF-8 (byte 0xff at offset 22)"),
        (b"[" * 100_000, "not a results file: nested too deeply"),
        (
            b'{"models": [{"name": "m", "x": ' + b"[" * 100 + b"]" * 100 + b"}]}",
            "not a results file: not valid JSON: nested deeper than 64 levels",
        ),  # fmt: skip
        (
            b'{"models": [{"name": "\\ud800"}]}',
            "not a results file: not UTF-8: a string holds a lone surrogate",
        ),
        (
            b'{"models": [{"name": "m", "size_bytes": ' + b"1" * 5000 + b"}]}",
            "not a results file: Exceeds the limit",
        ),
        (b'{"models": [{"name": "m"}]', "not a results file: line 1 column 27: Expecting ',' delimiter"),
        (b"[]", "not a results file: expected an object, got a list"),
    ],
)
def test_report_of_a_hostile_file_is_one_line(tmp_path, content, message):
    (tmp_path / "results.json").write_bytes(content)
    line = one_line_error(CliRunner().invoke(bench.command, ["report", str(tmp_path)]))
    assert line.startswith(f"Error: {tmp_path / 'results.json'}: {message}"), line


def test_report_names_every_bad_field_at_once(tmp_path):
    results = full_results()
    results["settings"] = 5
    results["models"][1]["confusion"] = 5
    (tmp_path / "results.json").write_text(json.dumps(results))
    r = CliRunner().invoke(bench.command, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{tmp_path / 'results.json'}: 2 problems:" in r.output
    assert (
        "  settings: expected an object" in r.output
        and "  models[1].confusion: expected an object" in r.output
    )


# ---------------------------------------------------------------- a benchmark run's folder, replaced whole


def _publish(out: Path, text: str) -> None:
    """A stand-in benchmark run: every file a run writes, then the swap."""
    with bench_score.staged_output(out) as stage:
        write_jsonl(stage / "predictions" / "m.jsonl", [{"text": text}])
        (stage / "results.json").write_text(json.dumps({"models": [], "run": text}))


def _run(out: Path) -> str | None:
    """Which run ``out`` holds (its results.json and predictions agree), ``None`` for none."""
    if not (out / "results.json").exists():
        return None
    run = json.loads((out / "results.json").read_text())["run"]
    assert json.loads((out / "predictions" / "m.jsonl").read_text())["text"] == run
    return run


def test_a_concurrent_runs_staging_folder_is_left_alone(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        theirs = tmp_path / f".out.{live.pid}.abc.tmp"  # another run, still going, stages here
        (theirs / "out").mkdir(parents=True)
        (theirs / "out" / "results.json").write_text("{}")
        dead = tmp_path / f".out.{NO_SUCH_PID}.abc.tmp"  # a killed run's leftover
        dead.mkdir()
        _publish(tmp_path / "out", "new")
        assert (theirs / "out" / "results.json").read_text() == "{}"
        assert not dead.exists() and _run(tmp_path / "out") == "new"
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_publish_interrupted_at_any_rename_leaves_the_old_run_or_the_new(tmp_path, monkeypatch, fail_at):
    out = tmp_path / "out"
    _publish(out, "old")
    (out / "notes.txt").write_text("mine")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(src, dst)

    try:
        with bench_score.staged_output(out) as stage:
            write_jsonl(stage / "predictions" / "m.jsonl", [{"text": "new"}])
            (stage / "results.json").write_text(json.dumps({"models": [], "run": "new"}))
            monkeypatch.setattr(os, "replace", replace)  # from here on: the publish
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert _run(out) == ("old" if fail_at <= 2 else "new")  # the publish is two renames
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_killed_run_leaves_the_old_run_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "out"
    _publish(out, "old")
    child = (
        "import sys, time\n"
        "from mlx_tune.eval.bench_score import staged_output\n"
        "with staged_output(sys.argv[1]) as stage:\n"
        "    (stage / 'results.json').write_text('{}')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(f".out.{proc.pid}.")]
    assert len(leftovers) == 1 and _run(out) == "old"
    _publish(out, "new")
    assert not leftovers[0].exists() and _run(out) == "new"


# ---------------------------------------------------------------- model card from hostile data


@pytest.mark.parametrize(
    "first_line",
    [
        b'{"messages": [], "x": "\xff"}',
        b"[" * 100_000,
        b'{"a": ' + b"1" * 5000 + b"}",
        b"{not json",
        b"5",
        b'"a string"',
        b"[1, 2]",
    ],
    ids=["not-utf8", "deep", "long-number", "not-json", "number", "string", "list"],
)
def test_tools_spec_of_a_hostile_first_line(tmp_path, first_line):
    (tmp_path / "train.jsonl").write_bytes(first_line + b"\n")
    assert model_card.tools_spec(str(tmp_path))["format"] == "tools"  # as for no data
    code = make_records(1, fmt="code")[0]
    write_jsonl(tmp_path / "valid.jsonl", [code])  # the next file's first record decides
    assert model_card.tools_spec(str(tmp_path)) == {
        "format": "code",
        "system": records.CODE_SYSTEM_PROMPT,
        "tools": [],
    }


def test_tools_spec_still_reads_a_good_first_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", make_records(2, fmt="code"))
    assert model_card.tools_spec(str(tmp_path))["format"] == "code"
    write_jsonl(tmp_path / "train.jsonl", make_records(2))
    assert model_card.tools_spec(str(tmp_path))["tools"] == records.TOOLS


@pytest.mark.parametrize(
    "card",
    [
        b"---\nlicense: mit\xff\n---\n",
        b"---\n" + b"[" * 100_000 + b"\n---\n",
        b"---\nbase_model: [" + b"{a: " * 2000 + b"\n---\n",
        b"---\nlicense: {a: 1}\nbase_model: 5\n---\n",
    ],
    ids=["not-utf8", "deep", "deep-mapping", "not-strings"],
)
def test_a_hostile_base_model_card_names_nothing(tmp_path, card):
    (tmp_path / "README.md").write_bytes(card)
    assert model_card.base_metadata(str(tmp_path)) == (None, None)
    (tmp_path / "README.md").write_text("---\nbase_model: org/base\nlicense: mit\n---\n")  # the control
    assert model_card.base_metadata(str(tmp_path)) == ("org/base", "mit")


# ---------------------------------------------------------------- data validate --model: folder or Hub id


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; any attempt to reach the network fails the test."""
    import socket

    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def no_network(*a, **kw):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("nope", "cannot load a tokenizer from nope: no such folder"),
        ("./nope", "cannot load a tokenizer from ./nope: no such folder"),
        ("models/a/b", "cannot load a tokenizer from models/a/b: no such folder"),
        ("data.jsonl", "cannot load a tokenizer from data.jsonl: not a folder"),
        ("~/nope", "cannot load a tokenizer from ~/nope: no such folder"),
        ("an owner/a name", "cannot load a tokenizer from an owner/a name: no such folder"),
        ("owner/name", "owner/name: not in the local Hugging Face cache (nothing is downloaded here)"),
    ],
)
def test_validate_with_a_model_that_is_not_here(tmp_path, monkeypatch, hub_cache, spec, problem):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data.jsonl", make_records(2))
    r = CliRunner().invoke(main, ["data", "validate", "data.jsonl", "--model", spec])
    assert one_line_error(r).startswith(f"Error: --model: {problem}")


def test_validate_with_a_hub_id_in_the_local_cache(tmp_path, monkeypatch, hub_cache, tokenizer_dir):  # noqa: F811
    snapshot = hub_cache / "models--owner--name" / "snapshots" / "abc123"
    shutil.copytree(tokenizer_dir, snapshot)
    (snapshot / "config.json").write_text('{"model_type": "qwen2"}')  # every Hub model has one
    (hub_cache / "models--owner--name" / "refs").mkdir()
    (hub_cache / "models--owner--name" / "refs" / "main").write_text("abc123")
    write_jsonl(tmp_path / "data.jsonl", make_records(2))
    monkeypatch.chdir(tmp_path)
    assert datacheck.validate_files(["data.jsonl"], model="owner/name", max_seq_length=100_000) == 2
    # a local folder of the same name wins over the cache
    shutil.copytree(tokenizer_dir, tmp_path / "owner" / "name")
    shutil.rmtree(hub_cache / "models--owner--name")
    assert datacheck.validate_files(["data.jsonl"], model="owner/name", max_seq_length=100_000) == 2
