"""The embedded tiny model: builds offline, loads in mlx-lm and transformers, renders tools."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import TINY_TEST_SIZE, make_records

from mlx_tune import UserError, fileio, records
from mlx_tune.cli import main
from mlx_tune.models.tiny import (
    CHAT_TEMPLATE,
    build_tiny_model,
    count_parameters,
    render_chat,
)
from mlx_tune.training.train_config import load_preset

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _hf_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_loads_and_generates_in_mlx_lm(tiny_model):
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm import generate, load

    model, tok = load(str(tiny_model))
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["torch_dtype"] == "float32"
    assert isinstance(model.layers[0].self_attn.q_proj, nn.Linear)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert n_params == count_parameters(tiny_model) < 1_000_000
    assert tok.has_tool_calling and tok.tool_call_start == "<tool_call>"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tok.eos_token_ids
    text = generate(model, tok, "hello", max_tokens=8)
    assert isinstance(text, str) and text


def test_chat_template_renders_tools_and_calls_like_qwen(tiny_model):
    tok = _hf_tokenizer(tiny_model)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    grep, read, direct = make_records(3)
    for r in (grep, read, direct):
        assert tok.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False) == render_chat(
            r["messages"], r["tools"]
        )
    text = render_chat(grep["messages"], grep["tools"])
    assert text.startswith("<|im_start|>system\n" + records.SYSTEM_PROMPT + "\n\n# Tools\n")
    assert (
        "<tools>\n" + json.dumps(records.GREP_TOOL) + "\n" + json.dumps(records.READ_TOOL) + "\n</tools>"
        in text
    )
    call = grep["messages"][-1]["tool_calls"][0]["function"]
    assert isinstance(call["arguments"], dict)
    expected = (
        '<|im_start|>assistant\n<tool_call>\n{"name": "grep", "arguments": '
        + json.dumps(call["arguments"], ensure_ascii=False)
        + "}\n"
    )
    assert text.endswith(expected + "</tool_call><|im_end|>\n")
    # The emitted call is the JSON mlx-lm's json_tools parser reads back.
    body = text.rsplit("<tool_call>\n", 1)[1].split("\n</tool_call>")[0]
    assert json.loads(body) == {"name": "grep", "arguments": call["arguments"]}
    assert render_chat(direct["messages"], direct["tools"]).endswith(
        "<|im_start|>assistant\n" + direct["messages"][-1]["content"] + "<|im_end|>\n"
    )


def test_template_is_qwen25_unmodified_so_string_arguments_are_encoded_twice(tiny_model):
    # Qwen2.5's template applies tojson to arguments whatever they are: a JSON string comes out
    # as a quoted string (what a real Qwen2.5 does); records.templated_messages prevents that.
    tok = _hf_tokenizer(tiny_model)
    record = make_records(1)[0]
    as_string = json.loads(json.dumps(record))
    fn = as_string["messages"][-1]["tool_calls"][0]["function"]
    fn["arguments"] = json.dumps(fn["arguments"])
    raw = tok.apply_chat_template(as_string["messages"], tools=record["tools"], tokenize=False)
    assert '"arguments": "{\\"pattern' in raw
    fixed = records.templated_messages(as_string)
    with_dict = tok.apply_chat_template(record["messages"], tools=record["tools"], tokenize=False)
    assert tok.apply_chat_template(fixed, tools=record["tools"], tokenize=False) == with_dict
    assert "is string" not in CHAT_TEMPLATE


def test_generation_prompt_tool_role_and_no_tools():
    messages = [
        {"role": "user", "content": "Find it."},
        {"role": "assistant", "tool_calls": [{"function": {"name": "read", "arguments": {"path": "a.py"}}}]},
        {"role": "tool", "content": "x = 1"},
        {"role": "tool", "content": "y = 2"},
    ]
    text = render_chat(messages, add_generation_prompt=True)
    qwen = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert text.startswith(f"<|im_start|>system\n{qwen}<|im_end|>\n")
    assert "<|im_start|>user\n<tool_response>\nx = 1\n</tool_response>\n<tool_response>\ny = 2\n" in text
    assert text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert "# Tools" not in text


def test_special_tokens_are_single_ids_and_tool_tags_survive_decoding(tiny_model):
    tok = _hf_tokenizer(tiny_model)
    for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"):
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    ids = tok.encode('<tool_call>\n{"name": "read"}\n</tool_call><|im_end|>', add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == '<tool_call>\n{"name": "read"}\n</tool_call>'


def test_tokenizer_json_transformers_and_mlx_lm_tokenize_alike(tiny_model):
    # transformers rebuilds a qwen2 tokenizer with Qwen2's own pre-tokenizer; ours must match it.
    from mlx_lm import load
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    hf = _hf_tokenizer(tiny_model)
    _, wrapped = load(str(tiny_model))
    for r in make_records(6):
        text = render_chat(r["messages"], r["tools"]) + "  x = 12345\n\tdef f():\n"
        ids = raw.encode(text).ids
        assert hf.encode(text, add_special_tokens=False) == ids
        assert wrapped.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text


def test_same_seed_gives_identical_files_and_other_seed_other_weights(tiny_model, tmp_path):
    again = build_tiny_model(tmp_path / "again", pretrain_steps=0, **TINY_TEST_SIZE)
    for name in FILES:
        assert fileio.sha256_file(again / name) == fileio.sha256_file(tiny_model / name), name
    other = build_tiny_model(tmp_path / "other", seed=1, pretrain_steps=0, **TINY_TEST_SIZE)
    assert fileio.sha256_file(other / "tokenizer.json") == fileio.sha256_file(tiny_model / "tokenizer.json")
    assert fileio.sha256_file(other / "model.safetensors") != fileio.sha256_file(
        tiny_model / "model.safetensors"
    )


def test_4bit_variant_is_quantized_and_loads(tiny_model_4bit, tiny_model):
    import mlx.nn as nn
    from mlx_lm import generate, load

    config = json.loads((tiny_model_4bit / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    model, tok = load(str(tiny_model_4bit))
    assert isinstance(model.layers[0].mlp.down_proj, nn.QuantizedLinear)
    assert (tiny_model_4bit / "model.safetensors").stat().st_size < (
        tiny_model / "model.safetensors"
    ).stat().st_size
    assert isinstance(generate(model, tok, "hi", max_tokens=4), str)


def test_pretraining_is_cached_and_changes_weights(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("MLX_TUNE_CACHE", str(tmp_path / "cache"))
    first = build_tiny_model(tmp_path / "a", pretrain_steps=2, **TINY_TEST_SIZE)
    cached = list((tmp_path / "cache").rglob("model.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = build_tiny_model(tmp_path / "b", pretrain_steps=2, **TINY_TEST_SIZE)
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not retrained
    assert fileio.sha256_file(first / "model.safetensors") == fileio.sha256_file(second / "model.safetensors")
    assert fileio.sha256_file(first / "model.safetensors") != fileio.sha256_file(
        tiny_model / "model.safetensors"
    )


def test_jsonl_corpus_is_rendered_for_the_tokenizer(tmp_path):
    data = tmp_path / "train.jsonl"
    fileio.write_jsonl(data, make_records(6))
    out = build_tiny_model(tmp_path / "m", corpus=[data], pretrain_steps=0, **TINY_TEST_SIZE)
    info = json.loads((out / "mlx_tune_tiny.json").read_text())
    assert info["corpus"] == [str(data)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "no messages"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: messages"):
        build_tiny_model(tmp_path / "x", corpus=[bad], **TINY_TEST_SIZE)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_sizes": 4}, "unknown size option"),
        ({"bits": 7}, "--bits 7"),
        ({"hidden_size": 60, "num_attention_heads": 8}, "must divide"),
        ({"pretrain_steps": -1}, "--pretrain-steps"),
        ({"corpus": ["/nonexistent/file.txt"]}, "no such corpus file"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        build_tiny_model(tmp_path / "m", **kwargs)


def test_cli_build(tmp_path):
    out = tmp_path / "cli-model"
    result = CliRunner().invoke(
        main,
        [
            "tiny",
            "build",
            "--out",
            str(out),
            "--pretrain-steps",
            "0",
            "--vocab-size",
            "400",
            "--hidden-size",
            "64",
            "--layers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    bad = CliRunner().invoke(main, ["tiny", "build", "--out", str(tmp_path / "y"), "--bits", "3"])
    assert bad.exit_code != 0 and "--bits" in bad.output


def test_train_preset_resolves_and_validates():
    from mlx_tune.training.train_config import resolve_settings

    where = {"model": "m", "data": "d"}
    s = resolve_settings(preset="tiny", overrides=where)  # raises on any invalid setting
    assert (s.fine_tune_type, s.epochs, s.iters) == ("full", load_preset("tiny")["epochs"], None)
    assert resolve_settings(preset="tiny", overrides=where | {"iters": 20}).iters == 20
    assert "<tool_call>" in CHAT_TEMPLATE and "tool_call.name" in CHAT_TEMPLATE
