"""The embedded default model: a tiny Qwen2 built from local files only (see DESIGN.md).

``build_tiny_model`` writes a real mlx-lm model directory (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that ``mlx_lm.load``,
``mlx_lm generate``/``server`` and ``transformers.AutoTokenizer`` load offline:

- a byte-level BPE tokenizer (Qwen2's pre-tokenizer and special tokens) trained with
  ``tokenizers`` on local text: the ``.py``/``.md`` files of a few installed packages plus any
  files given (JSONL records are rendered through the chat template first);
- Qwen2.5-Instruct's chat template, unmodified (:data:`CHAT_TEMPLATE`): it renders ``tools``,
  assistant ``tool_calls`` (``arguments`` as JSON objects) and ``tool`` results exactly as a real
  Qwen2.5(-Coder)-Instruct tokenizer does, default system prompt included;
- float32 weights from a seeded random init, pretrained (300 steps by default) for a bounded number of
  steps on local code, docstrings and plain chat turns (:mod:`mlx_tune.models.tiny_corpus`; cached by
  content hash, so it runs once per machine);
- optionally a quantized variant (``bits=4``) so QLoRA on a quantized base is exercised.

Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from mlx_tune import UserError, fileio
from mlx_tune.models import tiny_corpus, tiny_pretrain

# Qwen2.5-Instruct's chat template, unmodified (the ``chat_template`` of the Qwen/Qwen2.5-*-Instruct
# and Qwen2.5-Coder-*-Instruct tokenizer_config.json), so the tiny model renders exactly what a real
# Qwen2.5 renders. Tool-call ``arguments`` always go through ``tojson``: they must be JSON objects
# (a JSON string would be encoded twice; ``records.templated_messages`` converts them).
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
    '\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) '
    'or (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# As in Qwen2.5, the tool-call tags are added tokens but not "special": decoding keeps them.
TOOL_TOKENS = ("<tool_call>", "</tool_call>")

# Qwen2's pre-tokenizer split (digits one at a time, words with one leading non-letter). It must be
# this one: transformers (v5) rebuilds a qwen2 model's tokenizer with this split whatever
# tokenizer.json says, so any other split would tokenize differently there and in mlx-lm.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_SIZE: dict[str, int] = {
    "vocab_size": 4096,  # BPE merges learned; special/added tokens come on top
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "max_corpus_chars": 4_000_000,
}

# Pretraining steps of the instruct base (batch 8 x 256 tokens on local code, docstrings and plain
# chat turns; see mlx_tune.models.tiny_pretrain and the measurements in configs/presets/tiny.yaml).
DEFAULT_PRETRAIN_STEPS = 300


# ---------------------------------------------------------------- chat rendering


def render_chat(
    messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False
) -> str:
    """Render a conversation with :data:`CHAT_TEMPLATE` (the same Jinja settings transformers uses)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    return env.from_string(CHAT_TEMPLATE).render(
        messages=messages, tools=tools, add_generation_prompt=add_generation_prompt
    )


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with the special tokens appended."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tok


def _tokenizer_config(tok, max_len: int) -> dict:
    decoder = {}
    for token in SPECIAL_TOKENS + TOOL_TOKENS:
        decoder[str(tok.token_to_id(token))] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token in SPECIAL_TOKENS,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": max_len,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# ---------------------------------------------------------------- model


def _model_config(size: dict[str, int], vocab_total: int, tok) -> dict:
    hidden, heads = size["hidden_size"], size["num_attention_heads"]
    if hidden % heads or heads % size["num_key_value_heads"]:
        raise UserError(
            f"--hidden-size {hidden} must divide by --heads {heads}, and heads by kv heads "
            f"{size['num_key_value_heads']}"
        )
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": size["intermediate_size"],
        "num_hidden_layers": size["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": size["num_key_value_heads"],
        "max_position_embeddings": size["max_position_embeddings"],
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_sliding_window": False,
        "vocab_size": vocab_total,
        "bos_token_id": tok.token_to_id(ENDOFTEXT),
        "eos_token_id": tok.token_to_id(IM_END),
    }


def _init_model(config: dict, seed: int):
    import mlx.core as mx
    from mlx_lm.models import qwen2

    mx.random.seed(seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model


# ---------------------------------------------------------------- build


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    bits: int | None = None,
    seed: int = 0,
    corpus: list[Path] | None = None,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    **size: int,
) -> Path:
    """Build the tiny Qwen2 model directory at ``out_dir`` and return it.

    ``size`` overrides :data:`DEFAULT_SIZE` (vocab_size, hidden_size, num_hidden_layers,
    intermediate_size, num_attention_heads, num_key_value_heads, max_position_embeddings,
    max_corpus_chars). ``bits`` (4 or 8) writes a quantized model. ``corpus`` adds files for
    the tokenizer (JSONL chat records are rendered first). ``pretrain_steps`` > 0 pretrains
    on local plain text (cached).
    """
    from mlx_lm.utils import quantize_model, save_config, save_model

    unknown = set(size) - set(DEFAULT_SIZE)
    if unknown:
        raise UserError(f"unknown size option(s): {', '.join(sorted(unknown))}")
    size = DEFAULT_SIZE | size
    if bits not in (None, 2, 3, 4, 5, 6, 8):
        raise UserError(f"--bits {bits}: choose 4 or 8 (or leave it out for float32)")
    if pretrain_steps < 0:
        raise UserError("--pretrain-steps must be 0 or more")
    out_dir = Path(out_dir)

    tok_texts, plain_texts = tiny_corpus.load_corpus(corpus, size["max_corpus_chars"], render_chat)
    tok = train_tokenizer(tok_texts, size["vocab_size"])
    config = _model_config(size, tok.get_vocab_size(with_added_tokens=True), tok)
    model = _init_model(config, seed)
    if pretrain_steps:
        tiny_pretrain.pretrain(model, tok, plain_texts, config, pretrain_steps, seed, ENDOFTEXT)

    if bits is not None:
        hidden = config["hidden_size"]
        group = 64 if hidden % 64 == 0 and config["intermediate_size"] % 64 == 0 else 32
        if hidden % group or config["intermediate_size"] % group:
            raise UserError(f"--bits needs hidden and intermediate sizes divisible by 32 (got {hidden})")
        with contextlib.redirect_stdout(sys.stderr):
            model, config = quantize_model(model, config, group_size=group, bits=bits)

    with fileio.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_model(tmp, model)
        # A single shard needs no index, and its index only repeats the weight names.
        (tmp / "model.safetensors.index.json").unlink(missing_ok=True)
        save_config(dict(config), tmp / "config.json")
        tok.save(str(tmp / "tokenizer.json"))
        fileio.write_json(
            tmp / "tokenizer_config.json", _tokenizer_config(tok, size["max_position_embeddings"])
        )
        eos = [tok.token_to_id(IM_END), tok.token_to_id(ENDOFTEXT)]
        fileio.write_json(
            tmp / "generation_config.json",
            {"bos_token_id": tok.token_to_id(ENDOFTEXT), "eos_token_id": eos, "pad_token_id": eos[1]},
        )
        (tmp / "README.md").write_text(_model_card(config, size, pretrain_steps, bits))
        fileio.write_json(
            tmp / "mlx_tune_tiny.json",
            {"seed": seed, "bits": bits, "pretrain_steps": pretrain_steps, "size": size}
            | {"corpus": [str(p) for p in corpus or []], "versions": tiny_pretrain.versions()},
        )
    return out_dir


def _model_card(config: dict, size: dict, pretrain_steps: int, bits: int | None) -> str:
    """A short card: what the tiny model is (and is not), with Hugging Face metadata."""
    return (
        "---\nlibrary_name: mlx\nlicense: mit\npipeline_tag: text-generation\n"
        "tags: [mlx, qwen2, tiny, test-model]\n---\n\n"
        "# mlx-tune tiny model\n\n"
        f"A {config['num_hidden_layers']}-layer, {config['hidden_size']}-wide Qwen2 built offline by "
        f"`mlx-tune tiny build` ({'float32' if bits is None else f'{bits}-bit'}, "
        f"{pretrain_steps} pretraining steps on local code, docstrings and chat turns, BPE vocabulary of "
        f"{size['vocab_size']}) for tests and the demo. It carries Qwen2.5-Instruct's chat template "
        "unmodified. It knows next to nothing: it is a stand-in, not a model to use.\n"
    )


def count_parameters(model_dir: str | os.PathLike) -> int:
    """Parameters of a (float) tiny model, from its config."""
    c = json.loads((Path(model_dir) / "config.json").read_text())
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = h * h * 2 + 2 * h * kv + h + 2 * kv + 3 * h * i + 2 * h
    return c["vocab_size"] * h + n * layer + h
