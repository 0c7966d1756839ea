import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, records
from mlx_tune.cli import main
from mlx_tune.fileio import read_jsonl
from mlx_tune.html_examples import (
    DIRECT_POOL,
    GREP_POOL,
    READ_POOL,
    build_examples,
    generate_html_examples,
    write_pages,
)


def test_cli_writes_30_grounded_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["data", "html-examples"])
    assert r.exit_code == 0, r.output
    assert "wrote 30 examples (grep 9, read 5, direct 16)" in r.output
    recs = read_jsonl("data/html_examples/training_examples.jsonl")
    assert len(recs) == 30
    assert Counter(r["meta"]["category"] for r in recs) == {"grep": 9, "read": 5, "direct": 16}
    for rec in recs:
        assert records.validate_record(rec) == []
        meta = rec["meta"]
        assert meta["source"] == "html" and meta["repo"] == "html" and meta["root"] == "data/html"
        assert meta["generator"] == "html-examples/1"
        assert records.record_category(rec) == meta["category"]
        call = records.record_call(rec)
        if meta["category"] == "grep":
            assert meta["origin"] == "real"
            lines = (Path(meta["root"]) / meta["path"]).read_text().splitlines()
            assert any(re.search(call[1]["pattern"], line) for line in lines), meta
            searched = Path(meta["root"]) / call[1].get("path", ".")
            assert (Path(meta["root"]) / meta["path"]).resolve().is_relative_to(searched.resolve())
        elif meta["category"] == "read":
            assert meta["origin"] == "real"
            assert call[1]["path"] == meta["path"]
            assert (Path(meta["root"]) / meta["path"]).is_file()
        else:
            assert meta["origin"] == "synthetic" and call is None
    # questions are not all the same phrasing and no two records are duplicates
    assert len({records.normalized_key(r) for r in recs}) == 30


def test_deterministic_and_seeded(tmp_path):
    a = generate_html_examples(tmp_path / "a.jsonl", tmp_path / "html", seed=0)
    generate_html_examples(tmp_path / "b.jsonl", tmp_path / "html", seed=0)
    generate_html_examples(tmp_path / "c.jsonl", tmp_path / "html", seed=1)
    assert a == {"grep": 9, "read": 5, "direct": 16}
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_every_pool_entry_is_grounded(tmp_path):
    write_pages(tmp_path)
    recs = build_examples(tmp_path, len(GREP_POOL), len(READ_POOL), len(DIRECT_POOL), seed=3)
    assert len(recs) == len(GREP_POOL) + len(READ_POOL) + len(DIRECT_POOL)
    for _, _, path, _, _ in GREP_POOL:
        assert (tmp_path / path).is_file()
    topics = [t for t, _, _ in DIRECT_POOL]
    assert len(topics) == len(set(topics)) >= 16
    for _, questions, answer in DIRECT_POOL:
        assert len(questions) >= 2 and len(answer) > 120


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


def test_too_many_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--direct: at most"):
        generate_html_examples(tmp_path / "x.jsonl", tmp_path / "html", n_direct=999)
    assert not (tmp_path / "html").exists()  # nothing written
    r = CliRunner().invoke(main, ["data", "html-examples", "--grep", "500", "-o", str(tmp_path / "y.jsonl")])
    assert r.exit_code == 1 and "Error: --grep: at most" in r.output


def test_meta_root_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate_html_examples("o.jsonl", "somewhere/pages", 1, 1, 1)
    roots = {json.loads(line)["meta"]["root"] for line in Path("o.jsonl").read_text().splitlines()}
    assert roots == {"somewhere/pages"}
