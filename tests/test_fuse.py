"""QLoRA on the 4-bit tiny model, fused to 8 bits; the fused model loads and agrees with base + adapter."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from mlx_tune import UserError, records
from mlx_tune.cli import main
from mlx_tune.training.fuse import fuse
from mlx_tune.training.train import train
from tests.conftest import train_settings, write_data


@pytest.fixture(scope="module")
def qlora_adapter(tiny_model_4bit, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    data = write_data(root / "data", 12, 4)
    out = root / "adapters"
    s = train_settings(
        tiny_model_4bit,
        data,
        out,
        iters=4,
        learning_rate=1e-2,
        alpha=8,
        target_modules=["q_proj", "v_proj"],
        steps_per_eval=4,
    )
    summary = train(s, progress=False)
    return out, summary


def test_qlora_trains_and_fuses_to_8_bits(qlora_adapter, tmp_path):
    import mlx_lm

    adapter, summary = qlora_adapter
    assert summary["val_loss_best"] < summary["val_loss_first"]
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    out = tmp_path / "fused"
    report = fuse(adapter_path=str(adapter), save_path=str(out), verify_prompts=3, max_tokens=12)
    assert report["greedy_agreement"] == 1.0 and report["verify_prompts"] == 3
    assert report["base_bits"] == 4 and report["bits"] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    card = (out / "README.md").read_text()
    assert "100% of 3 validation prompts identical" in card and "train 12, valid 4" in card
    model, tok = mlx_lm.load(str(out))  # a plain mlx-lm model directory
    assert isinstance(mlx_lm.generate(model, tok, prompt="hi", max_tokens=3), str)


def test_fused_folder_is_ready_for_local_use(qlora_adapter, tmp_path):
    import mlx_lm
    from huggingface_hub import ModelCard

    adapter, _ = qlora_adapter
    out = tmp_path / "fused"
    fuse(adapter_path=str(adapter), save_path=str(out), verify_prompts=2, max_tokens=8)
    meta = ModelCard.load(out / "README.md").data.to_dict()
    assert meta["library_name"] == "mlx" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "mit"  # from the tiny base's own card
    assert meta["tags"] == ["mlx", "lora", "tool-use", "code", "qlora"]
    assert meta["mlx_tune"]["examples"] == {"train": 12, "valid": 4}
    assert meta["mlx_tune"]["greedy_agreement"] == 1.0
    assert "base_model" not in meta  # a local base with no Hub id: no invalid metadata
    spec = json.loads((out / "tools.json").read_text())
    assert spec == {"format": "tools", "system": records.SYSTEM_PROMPT, "tools": records.TOOLS}
    card = (out / "README.md").read_text()
    assert "mlx_lm.server --model" in card and "tools: $t[0].tools" in card
    assert 'tokenizer.apply_chat_template(messages, tools=spec["tools"]' in card
    if shutil.which("jq"):  # the card's server request, as written, is the OpenAI-style body
        jq = next(line for line in card.splitlines() if line.startswith("jq -n")).removesuffix(" |")
        body = json.loads(subprocess.run(jq, shell=True, capture_output=True, text=True, check=True).stdout)
        assert body["tools"] == records.TOOLS and body["messages"][0]["content"] == records.SYSTEM_PROMPT
    # The card's Python snippet, as written, prompts the fused model the way it was trained.
    model, tok = mlx_lm.load(str(out))
    messages = [{"role": "system", "content": spec["system"]}, {"role": "user", "content": "Where is X?"}]
    prompt = tok.apply_chat_template(messages, tools=spec["tools"], add_generation_prompt=True)
    assert tok.decode(prompt).startswith("<|im_start|>system\n" + records.SYSTEM_PROMPT + "\n\n# Tools")


def test_card_metadata_for_a_hub_base_and_a_license_option():
    from mlx_tune.training.model_card import front_matter

    report = {"base": "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", "base_bits": 4, "phase": 7, "bits": 8}
    report |= {"fine_tune_type": "lora", "data": {"train": 5}, "greedy_agreement": None}
    meta = front_matter(report, license="apache-2.0")
    assert meta["base_model"] == report["base"] and meta["license"] == "apache-2.0"
    assert front_matter(report)["license"] == "other" and meta["mlx_tune"]["phase"] == 7


def test_a_chat_or_dot_model_gets_a_plain_card_and_no_tools(tmp_path):
    """A model trained on another task's records (meta.task) is described as that task: its own
    system prompt (or none) in tools.json, no tool schemas, its task as a tag, a plain request."""
    import yaml

    from mlx_tune import fileio
    from mlx_tune.training import model_card

    system = "You write Graphviz DOT."
    dot = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "classes of m"},
                        {"role": "assistant", "content": 'digraph "G" {}'}], "meta": {"task": "dot"}}  # fmt: skip
    fileio.write_jsonl(tmp_path / "train.jsonl", [dot])
    spec = model_card.tools_spec(str(tmp_path))
    assert spec == {"format": "plain", "task": "dot", "system": system, "tools": []}
    report = {"base": "models/tiny", "base_bits": 4, "phase": 20, "bits": 8, "fine_tune_type": "lora"}
    report |= {"data": {"train": 1}, "greedy_agreement": None, "save_path": "models/dot-fused-8bit"}
    report |= {"adapter_path": "adapters/phase20", "group_size": 64, "verify_prompts": 0, "max_tokens": 32}
    report |= {"fused_bytes": 1, "base_bytes": 1, "adapter_bytes": 1, "fuse_seconds": 1, "total_seconds": 1}
    card = model_card.model_card(report, spec)
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["tags"] == ["mlx", "lora", "dot", "qlora"] and "tool-use" not in card
    request = card[card.index("-d '") + 4 : card.rindex("'")]
    assert json.loads(request)["messages"][0] == {"role": "system", "content": system}
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    fileio.write_jsonl(tmp_path / "train.jsonl", [chat | {"meta": {"task": "chat"}}])
    assert model_card.tools_spec(str(tmp_path))["system"] is None
    assert "without a system prompt" in model_card.model_card(report, model_card.tools_spec(str(tmp_path)))


class _Hub:
    """Stands in for huggingface_hub.HfApi; records the calls."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        if self.fail:
            raise self.fail
        self.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))


def test_upload_pushes_the_folder_with_our_card(tmp_path, monkeypatch):
    import huggingface_hub

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\nlibrary_name: mlx\n---\n# ours\n")
    monkeypatch.setattr(huggingface_hub, "HfApi", _Hub)
    monkeypatch.setattr(_Hub, "calls", [])
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    r = CliRunner().invoke(main, ["upload", str(folder), "me/tiny-tools", "--private"])
    assert r.exit_code == 0, r.output
    assert "https://huggingface.co/me/tiny-tools" in r.output
    init, create, up = _Hub.calls
    assert init == ("init", "hf_test")
    assert create == (
        "create_repo",
        "me/tiny-tools",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert up[1]["folder_path"] == str(folder) and up[1]["repo_id"] == "me/tiny-tools"
    assert (folder / "README.md").read_text().endswith("# ours\n")  # our card, untouched


def test_upload_errors_are_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("# card\n")
    monkeypatch.setattr(huggingface_hub, "HfApi", _Hub)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    r = CliRunner().invoke(main, ["upload", str(folder), "me/x"])
    assert r.exit_code == 1 and "no Hugging Face token: run `hf auth login` or set HF_TOKEN" in r.output
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(_Hub, "fail", ConnectionError("Failed to resolve 'huggingface.co'\nmore detail"))
    r = CliRunner().invoke(main, ["upload", str(folder), "me/x"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        "Error: upload to me/x failed: Failed to resolve 'huggingface.co'"
    ]
    r = CliRunner().invoke(main, ["upload", str(tmp_path), "me/x"])
    assert r.exit_code == 1 and "has no config.json, README.md" in r.output
    r = CliRunner().invoke(main, ["upload", str(folder), "no-owner"])
    assert r.exit_code == 1 and "not of the form owner/name" in r.output


def test_fuse_refuses_existing_output_and_mismatched_adapter(qlora_adapter, tiny_model_4bit, tmp_path):
    adapter, _ = qlora_adapter
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists \\(pass --force"):
        fuse(adapter_path=str(adapter), save_path=str(out))
    assert (out / "keep.txt").is_file()
    bad = tmp_path / "bad_adapter"
    shutil.copytree(adapter, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["lora_parameters"]["rank"] = 2
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not match the base"):
        fuse(adapter_path=str(bad), save_path=str(tmp_path / "o"), verify_prompts=0)
    assert not (tmp_path / "o").exists()


def test_fuse_cli_errors(tmp_path, qlora_adapter):
    runner = CliRunner()
    r = runner.invoke(
        main, ["fuse", "--adapter-path", str(tmp_path / "none"), "--save-path", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and "has no adapters.safetensors" in r.output
    adapter, _ = qlora_adapter
    r = runner.invoke(
        main,
        [
            "fuse",
            "--model",
            str(tmp_path / "nomodel"),
            "--adapter-path",
            str(adapter),
            "--save-path",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 1 and "--model:" in r.output and "does not exist" in r.output
    r = runner.invoke(main, ["fuse", "--phase", "99"])
    assert r.exit_code == 1 and "adapters/phase99" in r.output and "mlx-tune train --phase 99" in r.output
