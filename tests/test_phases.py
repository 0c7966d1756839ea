from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, layout
from mlx_tune.cli import main
from mlx_tune.phases import available_phases, deep_merge, load_phase


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_shipped_phases_chain():
    d = layout.PHASES_DIR
    assert available_phases() == available_phases(d) == [5, 6, 7]
    p5, p6, p7 = (load_phase(n, d) for n in (5, 6, 7))
    assert [x.as_posix() for x in p5.inputs] == ["data/domain_examples/training_examples.jsonl"]
    assert p6.inputs == [*p5.inputs, Path("data/repos_examples/training_examples.jsonl")]
    assert p7.inputs == [*p6.inputs, Path("data/html_examples/training_examples.jsonl")]
    assert p5.split == p6.split == p7.split  # same split settings keep held-out records held out
    for p in (p5, p6, p7):
        assert p.train["model"] == "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"
        assert p.train["lora"]["rank"] == 8 and p.train["mask_prompt"] is True
        header = p.path.read_text().splitlines()[0]
        assert f"mlx-tune data merge --phase {p.number}" in header


def test_inheritance_merges_split_and_train(tmp_path):
    write(
        tmp_path / "phase1.yaml",
        "phase: 1\ninputs: [a.jsonl]\nsplit: {valid: 0.2, seed: 3}\n"
        "train: {iters: 10, lora: {rank: 4, alpha: 8}}\n",
    )
    write(
        tmp_path / "phase2.yaml",
        "phase: 2\nextends: 1\ninputs: [b.jsonl, a.jsonl]\nsplit: {test: 0.1}\ntrain: {lora: {rank: 16}}\n",
    )
    p = load_phase("2", tmp_path)
    assert p.number == 2
    assert p.inputs == [Path("a.jsonl"), Path("b.jsonl")]
    assert p.split == {"valid": 0.2, "test": 0.1, "seed": 3}
    assert p.train == {"iters": 10, "lora": {"rank": 16, "alpha": 8}}
    assert load_phase(tmp_path / "phase2.yaml").number == 2
    assert load_phase("phase1", tmp_path).split["test"] == 0.0


def test_all_problems_in_one_error(tmp_path):
    write(
        tmp_path / "phase3.yaml",
        "phase: 4\nextends: 8\ninputs: [1]\nsplit: {valid: 1.5, seed: x, foo: 1}\nbogus: 1\ntrain: [1]\n",
    )
    with pytest.raises(UserError) as e:
        load_phase(3, tmp_path)
    msg = str(e.value)
    for part in (
        "phase: says 4",
        "extends: phase 8",
        "inputs[0]",
        "split.valid",
        "split.seed",
        "split.foo",
        "bogus: unknown key",
        "train: expected a mapping",
    ):
        assert part in msg, part
    assert msg.count(str(tmp_path / "phase3.yaml")) >= 8


def test_unknown_phase_and_cycle(tmp_path):
    write(tmp_path / "phase5.yaml", "phase: 5\nextends: 6\ninputs: [a.jsonl]\n")
    write(tmp_path / "phase6.yaml", "phase: 6\nextends: 5\n")
    with pytest.raises(UserError, match=r"unknown phase 9: .*phase9.yaml does not exist \(have: 5, 6\)"):
        load_phase(9, tmp_path)
    with pytest.raises(UserError, match="cycle"):
        load_phase(6, tmp_path)


def test_missing_inputs_name_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "ph/phase7.yaml",
        "phase: 7\ninputs: [data/html_examples/training_examples.jsonl, cur.jsonl]\n",
    )
    assert load_phase(7, "ph").inputs  # without check_inputs the config alone loads
    with pytest.raises(UserError) as e:
        load_phase(7, "ph", check_inputs=True)
    assert "mlx-tune data html-examples" in str(e.value)
    assert "cur.jsonl does not exist (create it or remove it from inputs)" in str(e.value)


def test_bad_yaml_names_line(tmp_path):
    write(tmp_path / "phase1.yaml", "phase: 1\ninputs: [a\n  b: c\n")
    result = CliRunner().invoke(main, ["data", "merge", "--phase", "1", "--phases-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "phase1.yaml:" in result.output and "not valid YAML" in result.output
    assert "Traceback" not in result.output


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": 1}
    assert deep_merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 1}
    assert base == {"a": {"b": 1, "c": 2}, "d": 1}
