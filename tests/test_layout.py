"""The project layout (mlx_tune.layout) and the benchmark's model list built from it."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_tune import bench, layout


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
