import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, records
from mlx_tune.cli import main
from mlx_tune.fileio import read_jsonl, write_jsonl
from mlx_tune.merge import assign_splits, dedupe, group_key, merge_files, merge_phase, unit_hash


def many(make, n: int, repo: str = "demo", files: int | None = None) -> list[dict]:
    """``n`` records of ``repo``; with ``files``, several records share each source file."""
    out = []
    for i, r in enumerate(make(n)):
        r["meta"]["repo"] = repo
        r["meta"]["source"] = f"repo:{repo}"
        if files:
            r["meta"]["path"] = f"{repo}/mod{i % files}.py"
        # make every record unique across repos (the conversation names the repo)
        r["messages"][1]["content"] += f" ({repo})"
        out.append(r)
    return out


def phase_setup(root: Path, make) -> None:
    write_jsonl(root / "in/a.jsonl", many(make, 60, "alpha", files=25))
    write_jsonl(root / "in/b.jsonl", many(make, 45, "beta"))
    (root / "ph").mkdir()
    (root / "ph/phase5.yaml").write_text(
        "phase: 5\ninputs: [in/a.jsonl]\nsplit: {valid: 0.15, test: 0.1, seed: 1}\n"
    )
    (root / "ph/phase6.yaml").write_text("phase: 6\nextends: 5\ninputs: [in/b.jsonl]\n")


def located(path: Path) -> dict[str, list[dict]]:
    return {
        s: read_jsonl(path / f"{s}.jsonl")
        for s in ("train", "valid", "test")
        if (path / f"{s}.jsonl").exists()
    }


def test_duplicates_dropped_and_counted(tmp_path, sample_records):
    recs = sample_records(9)
    exact = json.loads(json.dumps(recs[0]))
    exact["meta"]["generator"] = "other/1"  # meta does not matter for duplicates
    norm = json.loads(json.dumps(recs[2]))
    norm["messages"][1]["content"] = "  WHAT does   thing2 do? "
    write_jsonl(tmp_path / "a.jsonl", recs)
    write_jsonl(tmp_path / "b.jsonl", [exact, norm, recs[1]])
    m = merge_files([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out", valid=0.2, seed=0)
    assert m["duplicates_dropped"] == {"exact": 2, "normalized": 1}
    assert m["records"] == 9
    out = [r for rs in located(tmp_path / "out").values() for r in rs]
    assert len(out) == 9
    assert not (tmp_path / "out/test.jsonl").exists()
    assert [i["records"] for i in m["inputs"]] == [9, 3]


def test_split_is_leakage_free_and_non_empty(tmp_path, sample_records):
    write_jsonl(tmp_path / "a.jsonl", many(sample_records, 90, files=30))
    m = merge_files([tmp_path / "a.jsonl"], tmp_path / "out", valid=0.1, test=0.1, seed=0)
    splits = located(tmp_path / "out")
    assert set(splits) == {"train", "valid", "test"} and all(splits.values())
    assert sum(map(len, splits.values())) == 90 == sum(f["records"] for f in m["files"].values())
    files = {s: {(r["meta"]["repo"], r["meta"]["path"]) for r in rs} for s, rs in splits.items()}
    symbols = {s: {(r["meta"]["path"], r["meta"]["symbol"]) for r in rs} for s, rs in splits.items()}
    for held in ("valid", "test"):
        assert not files[held] & files["train"]
        assert not symbols[held] & symbols["train"]
    assert not files["valid"] & files["test"]
    for s, rs in splits.items():
        assert m["counts"][s]["records"] == len(rs)
        assert sum(m["counts"][s]["category"].values()) == len(rs)


def test_split_stable_across_phases_and_deterministic(tmp_path, sample_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phase_setup(tmp_path, sample_records)
    m5 = merge_phase(5, phases_dir="ph")
    m6 = merge_phase(6, phases_dir="ph")
    assert m5["phase"] == 5 and m6["phase"] == 6
    p5, p6 = located(tmp_path / "data/phase5"), located(tmp_path / "data/phase6")
    where6 = {records.normalized_key(r): s for s, rs in p6.items() for r in rs}
    for s, rs in p5.items():
        for r in rs:
            assert where6[records.normalized_key(r)] == s
    assert sum(map(len, p6.values())) == 105
    # byte-identical on a rerun, into a fresh dir
    merge_phase(6, out="again", phases_dir="ph")
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "data/phase6" / name).read_bytes()
    # a different seed gives a different split
    m = merge_files([Path("in/a.jsonl")], "seed2", valid=0.15, test=0.1, seed=2)
    assert m["files"]["train.jsonl"]["sha256"] != m5["files"]["train.jsonl"]["sha256"]


def test_manifest_contents(tmp_path, sample_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phase_setup(tmp_path, sample_records)
    merge_phase(6, phases_dir="ph")
    m = json.loads((tmp_path / "data/phase6/manifest.json").read_text())
    assert m["phase"] == 6 and m["seed"] == 1 and m["split"] == {"valid": 0.15, "test": 0.1}
    assert [i["path"] for i in m["inputs"]] == ["in/a.jsonl", "in/b.jsonl"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert set(m["counts"]["train"]) == {"records", "category", "origin", "source"}
    assert set(m["counts"]["train"]["source"]) <= {"repo:alpha", "repo:beta"}
    assert m["duplicates_dropped"] == {"exact": 0, "normalized": 0}


def test_small_inputs_still_get_valid_and_test(tmp_path, sample_records):
    write_jsonl(tmp_path / "a.jsonl", sample_records(3))
    for seed in range(6):
        m = merge_files([tmp_path / "a.jsonl"], tmp_path / f"o{seed}", valid=0.1, test=0.1, seed=seed)
        assert all(f["records"] == 1 for f in m["files"].values()), (seed, m["files"])
    write_jsonl(tmp_path / "b.jsonl", sample_records(2))
    m = merge_files([tmp_path / "b.jsonl"], tmp_path / "ob", valid=0.1, seed=0)
    assert m["files"]["train.jsonl"]["records"] == 1 == m["files"]["valid.jsonl"]["records"]


def test_assign_splits_moves_smallest_group():
    keys = [("r", "path", f"f{i}") for i in range(4)]
    sizes = {k: 10 - i for i, k in enumerate(keys)}
    where, moves = assign_splits(keys, sizes, valid=1e-9, test=0.0, seed=0)
    assert list(where.values()).count("valid") == 1 and len(moves) == 1
    assert moves[0]["group"] == ["r", "path", "f3"]  # the smallest group moved
    assert 0 <= unit_hash(0, keys[0]) < 1


def test_group_key_fallbacks(sample_records):
    r = sample_records(1)[0]
    assert group_key(r) == ("demo", "path", "demo/mod0.py")
    del r["meta"]["path"]
    assert group_key(r) == ("demo", "symbol", "Thing0")
    del r["meta"]["symbol"]
    assert group_key(r)[1] == "record"


def test_dedupe_keeps_first(sample_records):
    from mlx_tune.datacheck import Located

    recs = sample_records(2)
    items = [Located(Path("a"), i, r) for i, r in enumerate([recs[0], recs[1], recs[0]], 1)]
    kept, exact, norm = dedupe(items)
    assert [k.line for k in kept] == [1, 2] and (exact, norm) == (1, 0)


def test_cli_errors_name_file_and_line(tmp_path, sample_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = sample_records(3)
    bad = json.loads(json.dumps(good[1]))
    del bad["messages"][1]["content"]
    lines = [json.dumps(good[0]), "{not json", json.dumps(bad), json.dumps(good[2])]
    Path("bad.jsonl").write_text("\n".join(lines) + "\n")
    Path("empty.jsonl").write_text("\n")
    (tmp_path / "ph").mkdir()
    Path("ph/phase1.yaml").write_text("phase: 1\ninputs: [bad.jsonl, empty.jsonl]\n")
    Path("ph/phase2.yaml").write_text("phase: 2\ninputs: [data/repos_examples/training_examples.jsonl]\n")
    runner = CliRunner()
    r = runner.invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", "ph"])
    assert r.exit_code == 1, r.output
    assert "bad.jsonl:2: record: not valid JSON" in r.output
    assert "bad.jsonl:3: messages[1].content: missing or empty" in r.output
    assert "empty.jsonl: empty: no records" in r.output
    assert "Traceback" not in r.output and not Path("data/phase1").exists()
    r = runner.invoke(main, ["data", "merge", "--phase", "9", "--phases-dir", "ph"])
    assert r.exit_code == 1 and "unknown phase 9" in r.output and "(have: 1, 2)" in r.output
    r = runner.invoke(main, ["data", "merge", "--phase", "2", "--phases-dir", "ph"])
    assert r.exit_code == 1 and "mlx-tune data repo-examples" in r.output


def test_cli_merge_ok(tmp_path, sample_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phase_setup(tmp_path, sample_records)
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "6", "--phases-dir", "ph", "--out", "o"])
    assert r.exit_code == 0, r.output
    assert "phase 6: 105 records -> o/" in r.output and "0 exact, 0 normalised" in r.output
    assert (tmp_path / "o/manifest.json").is_file()


def test_merge_files_errors(tmp_path):
    with pytest.raises(UserError, match="no input files"):
        merge_files([], tmp_path / "o")
    with pytest.raises(UserError, match="nope.jsonl: does not exist"):
        merge_files([tmp_path / "nope.jsonl"], tmp_path / "o")


def test_script_runs_the_merge_command(tmp_path, sample_records):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts/merge_phase_data.py"
    phase_setup(tmp_path, sample_records)
    r = subprocess.run(
        [sys.executable, str(script), "--phase", "5", "--phases-dir", "ph"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "phase 5: 60 records -> data/phase5/" in r.stdout
    r = subprocess.run(
        [sys.executable, str(script), "--phase", "9"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 1 and "Error: unknown phase 9" in r.stderr and "Traceback" not in r.stderr
