import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, records, tools
from mlx_tune.cli import main
from mlx_tune.data.html_examples import (
    DIRECT_POOL,
    GREP_POOL,
    READ_POOL,
    build_examples,
    generate_html_examples,
    write_pages,
)
from mlx_tune.fileio import read_jsonl
from mlx_tune.models.tiny import render_chat  # Qwen2.5-Instruct's template, unmodified


def check_grounded(root: Path, rec: dict) -> None:
    """Every path:line a tool message shows exists in the pages (and matches the grep pattern),
    and every file:line the final answer cites is one the tool output showed."""
    meta = rec["meta"]
    shown: set[tuple[str, int]] = set()
    msgs = rec["messages"]
    for call_msg, tool_msg in zip(msgs, msgs[1:], strict=False):
        if tool_msg.get("role") != "tool":
            continue
        tool, args = records.message_call(call_msg)
        assert tool_msg["name"] == tool and tool_msg["content"] == tools.execute(root, tool, args).text
        if tool == "grep":
            for line in tool_msg["content"].splitlines():
                m = re.match(r"([^:]+):(\d+):(.*)$", line)
                if m:
                    path, n = m.group(1), int(m.group(2))
                    page = (root / path).read_text().splitlines()
                    assert page[n - 1].rstrip() == m.group(3).rstrip()
                    assert re.search(args["pattern"], page[n - 1])
                    shown.add((path, n))
                else:
                    assert line == "No matches." or line.startswith("... ")
        else:
            head, *body = tool_msg["content"].splitlines()
            path = head.split(" (lines ")[0]
            page = (root / path).read_text().splitlines()
            for line in body:
                m = re.match(r"\s*(\d+)\| (.*)$", line)
                if m:
                    assert page[int(m.group(1)) - 1].rstrip() == m.group(2).rstrip()
                    shown.add((path, int(m.group(1))))
    answer = records.answer_of(rec)["content"]
    if meta["shape"] == "negative":
        assert not meta["found"] and "path" not in meta and shown == set()
        assert re.match(r"(No|None)\b", answer)
        return
    assert (root / meta["path"]).is_file() and meta["defined_in"] == meta["path"]
    assert (meta["path"], meta["line"]) in shown
    cited = {int(n) for n in re.findall(r"\blines? (\d+)", answer)}
    cited |= {
        int(n)
        for group in re.findall(r"\blines ((?:\d+, )*\d+ and \d+)", answer)
        for n in re.findall(r"\d+", group)
    }
    assert cited and all(any(n == line for _, line in shown) for n in cited), (cited, shown)


def test_cli_writes_30_grounded_trajectories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["data", "html-examples"])
    assert r.exit_code == 0, r.output
    assert "wrote 30 examples (grep 9, read 5, direct 16)" in r.output
    recs = read_jsonl("data/html_examples/training_examples.jsonl")
    assert Counter(r["meta"]["category"] for r in recs) == {"grep": 9, "read": 5, "direct": 16}
    for rec in recs:
        assert records.validate_record(rec) == []
        meta = rec["meta"]
        assert meta["source"] == "html" and meta["generator"] == "html-examples/2" and "root" not in meta
        assert records.record_category(rec) == meta["category"] and meta["template"].startswith("html.")
        if meta["category"] == "direct":
            assert meta["origin"] == "synthetic" and meta["style"] == meta["shape"] == "direct"
            assert not records.is_trajectory(rec) and "repo" not in meta
        else:
            assert meta["origin"] == "real" and meta["repo"] == "html" and meta["style"] == "trajectory"
            assert records.is_trajectory(rec)
            check_grounded(Path("data/html"), rec)
    assert len({records.normalized_key(r) for r in recs}) == 30


def test_every_pool_entry_is_grounded_and_renders(tmp_path):
    write_pages(tmp_path)
    shapes = Counter()
    for seed in range(4):  # every entry, with different question phrasings
        recs = build_examples(tmp_path, len(GREP_POOL), len(READ_POOL), len(DIRECT_POOL), seed=seed)
        assert len(recs) == len(GREP_POOL) + len(READ_POOL) + len(DIRECT_POOL)
        for rec in recs:
            assert records.validate_record(rec) == []
            shapes[rec["meta"]["shape"]] += 1
            if rec["meta"]["category"] != "direct":
                check_grounded(tmp_path, rec)
            text = render_chat(records.templated_messages(rec), rec["tools"])
            assert records.answer_of(rec)["content"] in text
    assert {"grep-answer", "read-answer", "negative", "direct"} <= set(shapes)
    multi = [r for r in recs if len(records.record_calls(r)) == 2]
    assert multi and all(c[0] == "read" for r in multi for c in records.record_calls(r))
    windows = [r for r in recs if "start_line" in (records.record_call(r) or ("", {}))[1]]
    assert windows and all("line" in r["messages"][1]["content"] for r in windows)
    topics = [d["topic"] for d in DIRECT_POOL]
    assert len(topics) == len(set(topics)) >= 16
    for d in DIRECT_POOL:
        assert len(d["questions"]) >= 2 and len(d["answer"]) > 120


def test_call_only_style(tmp_path):
    r = CliRunner().invoke(
        main,
        ["data", "html-examples", "-o", str(tmp_path / "c.jsonl"), "--html-dir", str(tmp_path / "html")]
        + ["--style", "call-only", "--grep", "20", "--read", "7"],
    )
    assert r.exit_code == 0, r.output
    recs = read_jsonl(tmp_path / "c.jsonl")
    for rec in recs:
        assert records.validate_record(rec) == []
        meta = rec["meta"]
        if meta["category"] == "direct":
            continue
        assert meta["style"] == meta["shape"] == "call-only" and not records.is_trajectory(rec)
        assert records.first_turn_index(rec) == len(rec["messages"]) - 1
        tool, args = records.record_call(rec)
        out = tools.execute(tmp_path / "html", tool, args)
        assert out.ok and (meta.get("path") in out.files) == meta["found"]


def test_deterministic_and_seeded(tmp_path):
    a = generate_html_examples(tmp_path / "a.jsonl", tmp_path / "html", seed=0)
    generate_html_examples(tmp_path / "b.jsonl", tmp_path / "html", seed=0)
    generate_html_examples(tmp_path / "c.jsonl", tmp_path / "html", seed=1)
    assert a == {"grep": 9, "read": 5, "direct": 16}
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_pages_are_well_formed(tmp_path):
    write_pages(tmp_path)
    for page in tmp_path.rglob("*.html"):
        text = page.read_text()
        assert text.startswith('<!DOCTYPE html>\n<html lang="en">')
        ids = set(re.findall(r'\bid="([^"]+)"', text))
        for ref in re.findall(r'(?:for|aria-describedby|aria-labelledby|aria-controls)="([^"]+)"', text):
            assert ref in ids, (page, ref)
        for src in re.findall(r'(?:src|href)="(\.\./)?([^"#:/][^"]*)"', text):
            if src[1].startswith(("contact", "pricing", "index", "blog/", "img/", "account/")):
                base = page.parent / (src[0] or "")
                assert (base / src[1]).is_file(), (page, src)


def test_code_format(tmp_path):
    write_pages(tmp_path)
    recs = build_examples(tmp_path, 3, 2, 2, fmt="code")
    assert all("tools" not in r for r in recs)
    calls = [records.record_call(r) for r in recs]
    assert sorted(c[0] for c in calls if c) == ["grep", "grep", "grep", "read", "read"]
    assert all(records.validate_record(r) == [] for r in recs)
    assert all(records.is_trajectory(r) for r in recs if records.record_call(r))


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--direct: at most"):
        generate_html_examples(tmp_path / "x.jsonl", tmp_path / "html", n_direct=999)
    with pytest.raises(UserError, match="--style: 'chat' is not one of trajectory, call-only"):
        generate_html_examples(tmp_path / "x.jsonl", tmp_path / "html", style="chat")
    assert not (tmp_path / "html").exists()  # nothing written
    r = CliRunner().invoke(main, ["data", "html-examples", "--grep", "500", "-o", str(tmp_path / "y.jsonl")])
    assert r.exit_code == 1 and "Error: --grep: at most" in r.output
