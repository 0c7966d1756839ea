import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, records
from mlx_tune.cli import main
from mlx_tune.data.merge import (
    assign_splits,
    components,
    dedupe,
    format_manifest,
    group_key,
    hashed_split,
    leaks,
    merge_files,
    merge_phase,
    unit_hash,
    unseen_template,
)
from mlx_tune.fileio import read_jsonl, write_jsonl


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
    assert m["phase"] == 6 and m["seed"] == 1
    assert m["split"] == {"valid": 0.15, "test": 0.1, "unseen_templates": 0.15}
    assert [i["path"] for i in m["inputs"]] == ["in/a.jsonl", "in/b.jsonl"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert set(m["counts"]["train"]) == {"records", "category", "origin", "source"}
    assert set(m["counts"]["train"]["source"]) <= {"repo:alpha", "repo:beta"}
    assert m["duplicates_dropped"] == {"exact": 0, "normalized": 0}
    assert m["leaks"] == {"symbols": 0, "files": 0}
    assert m["unseen_templates"] == [] and m["unseen_template_dropped"] == 0  # no meta.template here
    assert sum(m["groups"].values()) == 25 + 45 and m["components"] == m["groups"]


def test_small_inputs_still_get_valid_and_test(tmp_path, sample_records):
    write_jsonl(tmp_path / "a.jsonl", sample_records(3))
    for seed in range(6):
        m = merge_files([tmp_path / "a.jsonl"], tmp_path / f"o{seed}", valid=0.1, test=0.1, seed=seed)
        assert all(f["records"] == 1 for f in m["files"].values()), (seed, m["files"])
    write_jsonl(tmp_path / "b.jsonl", sample_records(2))
    m = merge_files([tmp_path / "b.jsonl"], tmp_path / "ob", valid=0.1, seed=0)
    assert m["files"]["train.jsonl"]["records"] == 1 == m["files"]["valid.jsonl"]["records"]


def test_assign_splits_moves_smallest_group():
    keys = [("r", "path", f"f{i}") for i in range(5)]
    sizes = {k: 10 - i for i, k in enumerate(keys)}
    where, moves = assign_splits(keys, sizes, valid=1e-9, test=0.0, seed=0)
    assert list(where.values()).count("valid") == 1 and len(moves) == 1
    assert moves[0]["group"] == ["r", "path", "f4"] and moves[0]["groups"] == 1  # the smallest group moved
    assert 0 <= unit_hash(0, keys[0]) < 1
    # linked groups move together: f3 and f4 (sizes 7 + 6) outweigh f2 (8), which moves alone
    linked = {k: k for k in keys} | {keys[4]: keys[3]}
    where, moves = assign_splits(keys, sizes, valid=1e-9, test=0.0, seed=0, component=linked)
    assert [k for k in keys if where[k] == "valid"] == [keys[2]] and moves[0]["groups"] == 1
    small = {k: 10 for k in keys} | {keys[3]: 2, keys[4]: 1}
    linked = {k: k for k in keys} | {keys[4]: keys[3]}
    where, moves = assign_splits(keys, small, valid=1e-9, test=0.0, seed=0, component=linked)
    assert [k for k in keys if where[k] == "valid"] == keys[3:] and moves[0]["groups"] == 2


def test_group_key_fallbacks(sample_records):
    r = sample_records(1)[0]
    assert group_key(r) == ("demo", "path", "demo/mod0.py")
    r["meta"]["defined_in"] = "demo/defs.py"  # the defining file wins over the cited one
    assert group_key(r) == ("demo", "path", "demo/defs.py")
    del r["meta"]["defined_in"]
    del r["meta"]["path"]
    assert group_key(r) == ("demo", "symbol", "Thing0")
    del r["meta"]["symbol"]
    assert group_key(r)[1] == "record"


def test_dedupe_keeps_first(sample_records):
    from mlx_tune.data.datacheck import Located

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


def cluster_records(n_files: int, repo: str = "demo", extra: str = "") -> list[dict]:
    """For each file ``fI.py`` defining ``SymI``: a definition record, a usage record cited from
    ``useI.py`` and an import record cited from ``impI.py`` (both ``defined_in`` fI.py), and a
    record of another symbol ``OtherI`` defined in ``useI.py``."""
    from mlx_tune.records import tool_call_record

    out = []
    for i in range(n_files):
        base = {
            "origin": "real",
            "source": f"repo:{repo}",
            "repo": repo,
            "generator": "t/1",
            "category": "grep",
        }
        for j, (path, defined_in, symbol) in enumerate(
            [(f"f{i}.py", f"f{i}.py", f"Sym{i}"), (f"use{i}.py", f"f{i}.py", f"Sym{i}"),
             (f"imp{i}.py", f"f{i}.py", f"Sym{i}"), (f"use{i}.py", f"use{i}.py", f"Other{i}")]
        ):  # fmt: skip
            meta = {**base, "path": path, "defined_in": defined_in, "symbol": symbol, "template": f"t{j}"}
            q = f"Question {j} about {symbol} in {path}{extra}?"
            out.append(tool_call_record(q, "grep", {"pattern": symbol}, meta))
    return out


def split_of_names(splits: dict[str, list[dict]]) -> dict[tuple, set[str]]:
    """Every (repo, symbol) and (repo, file) mentioned in meta -> the splits it appears in."""
    where: dict[tuple, set[str]] = {}
    for s, rs in splits.items():
        for r in rs:
            m = r["meta"]
            names = [("symbol", m["symbol"])] + [("file", m[k]) for k in ("path", "defined_in") if m.get(k)]
            for kind, name in names:
                where.setdefault((m["repo"], kind, name), set()).add(s)
    return where


def test_symbol_defined_in_one_file_used_in_another_stays_in_one_split(tmp_path):
    recs = cluster_records(40)
    write_jsonl(tmp_path / "a.jsonl", recs)
    for seed in range(4):
        m = merge_files([tmp_path / "a.jsonl"], tmp_path / f"o{seed}", valid=0.15, test=0.15, seed=seed,
                        unseen_templates=0.0)  # fmt: skip
        splits = located(tmp_path / f"o{seed}")
        for name, where in split_of_names(splits).items():
            assert len(where) == 1, (seed, name, where)  # every symbol and file in one split only
        assert m["leaks"] == {"symbols": 0, "files": 0} == leaks(splits)
        # groups are the defining files fI.py and useI.py; no name is shared, so no group is joined
        assert sum(m["groups"].values()) == 80 == sum(m["components"].values()) and m["moved_groups"] == []
        # the usage and import records go with SymI's definition, or are dropped when the file they
        # cite hashes elsewhere (impI.py defines nothing: its own hash decides)
        home = {
            f: hashed_split(seed, ("demo", "path", f), 0.15, 0.15) for r in recs for f in [r["meta"]["path"]]
        }
        dropped = [r for r in recs if home[r["meta"]["path"]] != home[r["meta"]["defined_in"]]]
        assert dropped and m["cross_split_dropped"] == len(dropped)
        assert m["records"] == 160 - len(dropped) == sum(map(len, splits.values()))
        for s, rs in splits.items():
            assert all(home[r["meta"]["defined_in"]] == s for r in rs)
        # every definition record is kept
        assert sum(r["meta"]["path"].startswith("f") for rs in splits.values() for r in rs) == 40


def test_components_join_groups_through_shared_names():
    from mlx_tune.data.merge import cited_file
    from mlx_tune.records import direct_record

    recs = cluster_records(2)
    comp = components(recs)
    assert set(comp) == {("demo", "path", p) for p in ("f0.py", "use0.py", "f1.py", "use1.py")}
    assert len(set(comp.values())) == 4  # a usage record does not join the using file's group
    assert [cited_file(r) for r in recs[:4]] == [
        None,
        ("demo", "path", "use0.py"),
        ("demo", "path", "imp0.py"),
        None,
    ]
    # the same name defined in two files joins their groups; so does a record of a name without a file
    twin = json.loads(json.dumps(recs[0]))
    twin["meta"].update(path="g0.py", defined_in="g0.py")
    lone = direct_record("Is there a Sym1?", "No.", {"repo": "demo", "symbol": "Sym1", "category": "direct"})
    comp = components([*recs, twin, lone])
    assert comp[("demo", "path", "g0.py")] == comp[("demo", "path", "f0.py")]
    assert comp[group_key(lone)] == comp[("demo", "path", "f1.py")] != comp[("demo", "path", "f0.py")]
    # leaks() counts shared names between train and valid/test
    assert leaks({"train": recs[:1], "valid": recs[1:2], "test": []}) == {"symbols": 1, "files": 1}


def test_component_goes_to_its_most_held_out_split():
    keys = [("r", "path", f"f{i}.py") for i in range(60)]
    split = {k: hashed_split(3, k, 0.2, 0.2) for k in keys}
    train, valid, test = ([k for k in keys if split[k] == s][0] for s in ("train", "valid", "test"))
    sizes = dict.fromkeys(keys, 1)
    where, _ = assign_splits(keys, sizes, 0.2, 0.2, 3, {k: k for k in keys} | {test: train, valid: train})
    assert where[train] == where[valid] == where[test] == "test"
    where, _ = assign_splits(keys, sizes, 0.2, 0.2, 3, {k: k for k in keys} | {valid: train})
    assert where[train] == where[valid] == "valid" and where[test] == "test"


def test_phase_stability_when_new_inputs_join_groups(tmp_path):
    from mlx_tune.records import tool_call_record

    phase1 = cluster_records(40)
    # phase 2 adds a second definition of SymI in f(I+1).py, joining the two files' groups
    twins = []
    for i in range(0, 40, 2):
        meta = {"origin": "real", "source": "repo:demo", "repo": "demo", "generator": "t/1", "category": "grep",
                "path": f"f{i + 1}.py", "defined_in": f"f{i + 1}.py", "symbol": f"Sym{i}"}  # fmt: skip
        twins.append(tool_call_record(f"Which files define Sym{i}?", "grep", {"pattern": f"Sym{i}"}, meta))
    write_jsonl(tmp_path / "p1.jsonl", phase1)
    write_jsonl(tmp_path / "p2.jsonl", twins)
    moved = 0
    for seed in range(3):
        kw = dict(valid=0.15, test=0.15, seed=seed, unseen_templates=0.3)
        m1 = merge_files([tmp_path / "p1.jsonl"], tmp_path / f"a{seed}", **kw)
        m2 = merge_files([tmp_path / "p1.jsonl", tmp_path / "p2.jsonl"], tmp_path / f"b{seed}", **kw)
        assert m1["moved_groups"] == m2["moved_groups"] == []  # the only exception to phase stability
        s1, s2 = located(tmp_path / f"a{seed}"), located(tmp_path / f"b{seed}")
        where2 = {records.normalized_key(r): s for s, rs in s2.items() for r in rs}
        for s, rs in s1.items():
            for r in rs:
                if s != "train":
                    assert where2.get(records.normalized_key(r)) != "train", (seed, s, r["meta"])
                moved += where2.get(records.normalized_key(r), s) != s
        assert m2["leaks"] == {"symbols": 0, "files": 0}
        assert sum(m2["components"].values()) == 60 and sum(m1["components"].values()) == 80
    assert moved > 0  # the new definitions did join components that hashed to different splits


def test_unseen_templates_are_test_only(tmp_path):
    recs = cluster_records(50)
    # records without a template (and citing no other file) are never dropped
    untemplated = [
        r
        for r in cluster_records(10, repo="plain", extra=" (plain)")
        if r["meta"]["template"] in ("t0", "t3")
    ]
    for r in untemplated:
        del r["meta"]["template"]
    write_jsonl(tmp_path / "a.jsonl", recs + untemplated)
    share = 0.5
    unseen = sorted(t for t in ("t0", "t1", "t2", "t3") if unseen_template(7, t, share))
    assert 0 < len(unseen) < 4  # seed 7 holds out some but not all of the four templates
    m = merge_files(
        [tmp_path / "a.jsonl"], tmp_path / "o", valid=0.2, test=0.2, seed=7, unseen_templates=share
    )
    splits = located(tmp_path / "o")
    assert m["unseen_templates"] == unseen and m["split"]["unseen_templates"] == share
    for s in ("train", "valid"):
        assert not any(r["meta"].get("template") in unseen for r in splits[s])
        assert not any("unseen_template" in r["meta"] for r in splits[s])
    marked = [r for r in splits["test"] if r["meta"].get("unseen_template")]
    assert marked and all(r["meta"]["template"] in unseen for r in marked)
    assert all(r["meta"].get("template") not in unseen for r in splits["test"] if r not in marked)
    assert m["unseen_template_test_records"] == len(marked)
    kept = sum(map(len, splits.values()))
    assert m["unseen_template_dropped"] > 0 and m["records"] == kept
    assert m["unseen_template_dropped"] + m["cross_split_dropped"] == 220 - kept
    assert sum(r["meta"]["repo"] == "plain" for rs in splits.values() for r in rs) == 20
    text = format_manifest(m, "o")
    assert f"{len(unseen)} question templates test-only ({len(marked)} test records" in text
    assert f"{m['unseen_template_dropped']} train/valid records dropped" in text
    assert f"dropped {m['cross_split_dropped']} records citing a file of another split" in text
    assert "leaks into train: 0 symbols, 0 files of valid/test" in text
    # without a test split nothing is held out or dropped for its template
    m = merge_files([tmp_path / "a.jsonl"], tmp_path / "n", valid=0.2, seed=7, unseen_templates=share)
    assert m["unseen_templates"] == [] and m["unseen_template_dropped"] == 0
    assert m["records"] + m["cross_split_dropped"] == 220
    with pytest.raises(UserError, match="unseen_templates: expected a share"):
        merge_files([tmp_path / "a.jsonl"], tmp_path / "x", unseen_templates=1.0)


def test_phase_config_unseen_templates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", cluster_records(30))
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph/phase1.yaml").write_text(
        "phase: 1\ninputs: [in.jsonl]\nsplit: {valid: 0.1, test: 0.2, unseen_templates: 0.0}\n"
    )
    (tmp_path / "ph/phase2.yaml").write_text("phase: 2\nextends: 1\nsplit: {unseen_templates: 1.5}\n")
    assert merge_phase(1, phases_dir="ph")["split"]["unseen_templates"] == 0.0
    r = CliRunner().invoke(main, ["data", "merge", "--phase", "2", "--phases-dir", "ph"])
    assert r.exit_code == 1 and "split.unseen_templates: expected a share in [0, 1), got 1.5" in r.output


def test_warning_when_shared_names_chain_files(tmp_path):
    from mlx_tune.records import tool_call_record

    recs = cluster_records(40)
    for i in range(25):  # old-style usage records: no meta.defined_in, so the using file is the group
        meta = {"origin": "real", "source": "repo:demo", "repo": "demo", "generator": "t/1", "category": "grep",
                "path": f"f{i}.py", "symbol": "Common"}  # fmt: skip
        recs.append(tool_call_record(f"Where does f{i}.py use Common?", "grep", {"pattern": "Common"}, meta))
    write_jsonl(tmp_path / "a.jsonl", recs)
    m = merge_files([tmp_path / "a.jsonl"], tmp_path / "o", valid=0.1, test=0.1, seed=0)
    assert m["components"]["train"] + m["components"]["valid"] + m["components"]["test"] == 80 - 24
    assert len(m["warnings"]) == 1 and "(configured 20%)" in m["warnings"][0]
    assert "warning: valid and test hold" in format_manifest(m, "o")
    write_jsonl(tmp_path / "b.jsonl", cluster_records(40))
    assert merge_files([tmp_path / "b.jsonl"], tmp_path / "q", valid=0.1, test=0.1, seed=0)["warnings"] == []
