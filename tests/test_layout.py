"""The project layout (mlx_tune.layout) and the benchmark's model list built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_records

from mlx_tune import UserError, layout
from mlx_tune.eval import bench
from mlx_tune.fileio import write_jsonl
from mlx_tune.phases import available_phases, load_phase
from mlx_tune.training.train_config import resolve_settings, validate_settings


def _adapter(root: Path, d: Path, base: str | None = None) -> None:
    (root / d).mkdir(parents=True)
    (root / d / "adapters.safetensors").write_bytes(b"")
    (root / d / "adapter_config.json").write_text(json.dumps({"model": base} if base else {}))


def _fused(root: Path, d: Path) -> None:
    (root / d).mkdir(parents=True)
    (root / d / "config.json").write_text("{}")


def test_layout_names_the_project_paths():
    assert layout.phase_data_dir(6) == Path("data/phase6")
    assert layout.query_file() == Path("data/phase7/test.jsonl")
    assert layout.adapter_dir(7) == Path("adapters/phase7")
    assert layout.adapter_dir(5, "qlora") == Path("adapters/phase5-qlora")
    assert layout.fused_model_dir(5) == Path("models/phase5-fused-8bit")
    assert layout.fused_model_dir(5, "qlora", bits=4) == Path("models/phase5-qlora-fused-4bit")
    assert layout.examples_file("repos") == Path("data/repos_examples/training_examples.jsonl")
    assert [layout.examples_file(k).parent.name for k in layout.EXAMPLE_SETS] == [
        "domain_examples",
        "repos_examples",
        "html_examples",
    ]


def test_project_models_is_the_demo_list_in_table_order(tmp_path):
    _adapter(tmp_path, layout.adapter_dir(5), base="org/other")  # trained on another base: kept
    models = bench.project_models("org/base", tmp_path, qlora=True)
    assert list(models) == [
        "base",
        "phase5",
        "phase5-fused-8bit",
        "phase6",
        "phase7",
        "phase7-fused-8bit",
        "phase5-qlora",
        "phase5-qlora-fused-8bit",
    ]
    assert models["phase5"] == "org/other@adapters/phase5"
    assert models["phase6"] == "org/base@adapters/phase6"
    assert models["phase7-fused-8bit"] == "models/phase7-fused-8bit"
    # qlora=None: the QLoRA pair only when its adapter folder exists.
    assert "phase5-qlora" not in bench.project_models("org/base", tmp_path)
    _adapter(tmp_path, layout.adapter_dir(5, "qlora"), base="models/tiny-4bit")
    assert (
        bench.project_models("org/base", tmp_path)["phase5-qlora"] == "models/tiny-4bit@adapters/phase5-qlora"
    )
    # No base: only adapters that name theirs.
    assert list(bench.project_models(None, tmp_path, qlora=False)) == [
        "phase5",
        "phase5-fused-8bit",
        "phase7-fused-8bit",
    ]


def test_default_models_keeps_what_exists_plus_other_phases(tmp_path):
    _adapter(tmp_path, layout.adapter_dir(7), base="org/seven")
    _adapter(tmp_path, Path("adapters/phase9"), base="org/nine")  # not in the plan, found anyway
    _fused(tmp_path, layout.fused_model_dir(7))
    _fused(tmp_path, Path("models/phase9-fused-4bit"))
    (tmp_path / "adapters/phase6").mkdir()  # no weights: skipped
    models = bench.default_models(tmp_path)
    models.pop("base", None)  # whatever the phase configs name
    assert models == {
        "phase7": "org/seven@adapters/phase7",
        "phase7-fused-8bit": "models/phase7-fused-8bit",
        "phase9": "org/nine@adapters/phase9",
        "phase9-fused-4bit": "models/phase9-fused-4bit",
    }
    assert list(models) == ["phase7", "phase7-fused-8bit", "phase9", "phase9-fused-4bit"]


# ---------------------------------------------------------------- shipped configs (package data)

SHIPPED = [("phase", n) for n in available_phases()] + [("preset", name) for name in layout.preset_names()]


def test_the_shipped_configs_are_there():
    assert [n for kind, n in SHIPPED if kind == "phase"] == list(layout.PHASES)
    assert {"qlora", "tiny"} <= set(layout.preset_names())


@pytest.mark.parametrize("kind, name", SHIPPED)
def test_every_shipped_config_validates_from_any_directory(kind, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: read from the package
    where = {} if kind == "phase" else {"model": "m", "data": "d"}
    notes: list[str] = []
    s = resolve_settings(**{kind: name}, overrides=where, notes=notes)  # raises on any problem
    assert validate_settings(s) == [] and notes == []
    if kind == "phase":
        assert load_phase(name).path == layout.phase_config_path(name)
        assert (s.data, s.adapter_path) == (str(layout.phase_data_dir(name)), str(layout.adapter_dir(name)))


def test_the_wheel_ships_every_config():
    import fnmatch

    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["mlx_tune"]
    package = Path(layout.__file__).parent
    configs = sorted(p.relative_to(package).as_posix() for p in layout.CONFIGS_DIR.rglob("*") if p.is_file())
    assert configs and all(any(fnmatch.fnmatch(c, pat) for pat in patterns) for c in configs), configs


def test_users_own_preset_and_phase_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("fine_tune_type: dora\nrank: 4\niters: 5\n")
    s = resolve_settings(preset="mine.yaml", overrides={"model": "m", "data": "d"})
    assert (s.fine_tune_type, s.rank, s.iters) == ("dora", 4, 5)
    with pytest.raises(UserError, match="unknown preset 'nope' \\(have: .*qlora.*tiny"):
        resolve_settings(preset="nope", overrides={"model": "m", "data": "d"})
    # A user's phase 8 in a folder of its own extends the shipped phase 7.
    own = tmp_path / "phases" / "phase8.yaml"
    own.parent.mkdir()
    own.write_text("phase: 8\nextends: 7\ninputs: [data/mine.jsonl]\ntrain: {iters: 3}\n")
    p7, p8 = load_phase(7), load_phase(str(own))
    assert p8.inputs == [*p7.inputs, Path("data/mine.jsonl")] and p8.split == p7.split
    assert p8.train == {**p7.train, "iters": 3}
    assert load_phase(8, phases_dir=own.parent).number == 8


def test_data_merge_runs_from_any_directory(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlx_tune.cli import main

    monkeypatch.chdir(tmp_path)
    write_jsonl(layout.examples_file("domain"), make_records(30))
    result = CliRunner().invoke(main, ["data", "merge", "--phase", "5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((layout.phase_data_dir(5) / "manifest.json").read_text())
    assert (
        manifest["phase"] == 5 and manifest["inputs"][0]["path"] == layout.examples_file("domain").as_posix()
    )
