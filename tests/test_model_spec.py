"""The one model loader (mlx_tune.models.model_spec): spec parsing, the Hugging Face id rule, errors that
name what is wrong and keep their cause. No test touches the network."""

from __future__ import annotations

import json

import mlx_lm
import pytest

from mlx_tune import UserError
from mlx_tune.models import model_spec
from mlx_tune.models.model_spec import ModelSpec, is_hf_id, parse_spec


@pytest.mark.parametrize(
    "name, hub",
    [
        ("mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", True),
        ("Qwen/Qwen2.5-0.5B", True),
        ("org/name", True),
        ("models/tiny", False),  # a layout folder: a missing local path, not a repo
        ("adapters/phase7", False),
        ("./org/name", False),
        ("/abs/org/name", False),
        ("org/name/extra", False),
        ("org", False),
        ("org/", False),
        ("-org/name", False),
        ("org/na..me", False),
        ("org/na--me", False),
        ("org/name.", False),
        ("", False),
    ],
)
def test_hugging_face_id_rule(name, hub):
    assert is_hf_id(name) is hub


def test_a_local_folder_is_never_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hf_id("org/name")
    (tmp_path / "org").mkdir()
    assert not is_hf_id("org/name")  # org/ is here: org/name is a (missing) local path


def test_parse_spec(tmp_path):
    assert parse_spec("org/base") == ModelSpec("org/base")
    assert parse_spec("models/tiny@adapters/phase7") == ModelSpec("models/tiny", "adapters/phase7")
    assert str(parse_spec("a@b")) == "a@b"
    odd = tmp_path / "model@v2"
    odd.mkdir()
    assert parse_spec(str(odd)) == ModelSpec(str(odd))  # an existing path is not split at "@"
    for bad in ("model@", "@adapter", ""):
        with pytest.raises(UserError, match="expected MODEL or MODEL@ADAPTER_DIR"):
            parse_spec(bad)


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if mlx-lm is asked to load (or fetch) anything."""

    def refuse(*a, **k):
        raise AssertionError(f"mlx_lm.load called with {a}")

    monkeypatch.setattr(mlx_lm, "load", refuse)


def test_missing_local_path_is_reported_as_missing(tmp_path, no_load):
    for name in (str(tmp_path / "missing"), "models/not-built-yet", "./x/y"):
        with pytest.raises(UserError, match=r"^model: .* does not exist \(not a local folder"):
            model_spec.load_model(name)


def test_folder_without_config_and_file_paths(tmp_path, no_load):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model folder \\(no config.json\\)"):
        model_spec.load_model(str(tmp_path / "empty"))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="is a file; give the model folder"):
        model_spec.load_model(str(tmp_path / "weights.safetensors"))


def test_adapter_naming_a_file_is_one_line(tiny_model, tmp_path, no_load):
    f = tmp_path / "adapters.safetensors"
    f.write_bytes(b"")
    with pytest.raises(UserError) as e:
        model_spec.load_model(f"{tiny_model}@{f}")
    assert str(e.value) == f"adapter: {f} is a file; give the folder holding adapters.safetensors"
    with pytest.raises(UserError, match="--adapter-path: .* is a file"):
        model_spec.check_adapter(str(f), "--adapter-path")
    with pytest.raises(UserError, match="has no adapters.safetensors \\+ adapter_config.json"):
        model_spec.load_model(f"{tiny_model}@{tmp_path}")


def test_hub_failure_keeps_its_cause(monkeypatch):
    cause = OSError("We couldn't connect to 'https://huggingface.co'")

    def offline(*a, **k):
        raise cause

    monkeypatch.setattr(mlx_lm, "load", offline)
    with pytest.raises(UserError, match="org/name is not a local folder, and as a Hugging Face id") as e:
        model_spec.load_model("org/name", labels=("--model", "--adapter-path"))
    assert e.value.__cause__ is cause and str(e.value).startswith("--model: ")
    assert "\n" not in str(e.value)


def test_local_load_failure_keeps_its_cause(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UserError, match=f"^model: could not load {bad}: ") as e:
        model_spec.load_model(str(bad))
    assert e.value.__cause__ is not None and "\n" not in str(e.value)


def test_loads_base_and_adapter_and_names_a_mismatch(tiny_model, tmp_path):
    import mlx.core as mx

    model, tokenizer, config = model_spec.load_model(str(tiny_model), return_config=True)
    assert config["model_type"] == "qwen2" and tokenizer.encode("def")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    lora = {"rank": 2, "scale": 1.0, "dropout": 0.0}
    (adapter / "adapter_config.json").write_text(json.dumps({"num_layers": 1, "lora_parameters": lora}))
    mx.save_safetensors(str(adapter / "adapters.safetensors"), {"no.such.lora_a": mx.zeros((2, 2))})
    with pytest.raises(UserError, match=f"^adapter: {adapter} does not match the base {tiny_model}: ") as e:
        model_spec.load_model(f"{tiny_model}@{adapter}")
    assert isinstance(e.value.__cause__, ValueError)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserError, match="could not read it: JSONDecodeError") as e:
        model_spec.load_model(f"{tiny_model}@{adapter}")
    assert e.value.__cause__ is not None
