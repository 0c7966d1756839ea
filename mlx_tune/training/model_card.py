"""The model card (``README.md``) and ``tools.json`` of a fused model folder.

The card opens with Hugging Face metadata in a YAML front-matter block (``base_model`` when the base
is known on the Hub, ``library_name: mlx``, ``tags``, ``license``, ``pipeline_tag``, and an
``mlx_tune`` block with the phase and data it was trained on), which the Hub and
``huggingface_hub.ModelCard.load(path).data`` read. Its text says how the model was trained and
verified, and how to call it with ``mlx_lm.generate`` and ``mlx_lm.server`` using the system prompt
and tool schemas it was trained with, saved beside it as ``tools.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mlx_tune import fileio, records

TAGS = ["mlx", "lora", "tool-use", "code"]


def read_front_matter(readme: Path) -> dict:
    """The YAML front matter of a model card, or ``{}`` (no card, no block, not UTF-8, bad or
    absurdly nested YAML): a base model's card is someone else's file and never stops a fuse."""
    try:
        text = Path(readme).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    try:
        data = yaml.safe_load(text[4 : text.index("\n---", 4)])
    except (yaml.YAMLError, RecursionError, MemoryError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/")) and not Path(name).exists()


def base_metadata(base: str) -> tuple[str | None, str | None]:
    """``(base_model, license)`` of a base: a Hub repo id names itself; a local folder's own card
    may name its base model and license."""
    if _is_repo_id(base):
        return base, None
    card = read_front_matter(Path(base) / "README.md")
    named, license = card.get("base_model"), card.get("license")
    if isinstance(named, list):
        named = named[0] if named else None
    return (named if isinstance(named, str) else None), (license if isinstance(license, str) else None)


def tools_spec(data_dir: str | None) -> dict:
    """What the model was trained to be prompted with: the tools format's system prompt and tool
    schemas, or the code format's prompt (no tools), judged from the first training record (the
    first of ``valid`` when ``train`` has none that can be read; the tools format when neither has)."""
    first = None
    for split in ("train", "valid") if data_dir else ():
        first = _first_record(Path(data_dir) / f"{split}.jsonl")
        if first is not None:
            break
    meta = first.get("meta") if first is not None else None
    task = meta.get("task") if isinstance(meta, dict) else None
    if isinstance(task, str) and task != "tools":  # a chat or DOT model: plain answers, no tools
        system = next((m.get("content") for m in first.get("messages") or [] if _is_system(m)), None)
        return {
            "format": "plain",
            "task": task,
            "system": system if isinstance(system, str) else None,
            "tools": [],
        }
    if first is not None and "tools" not in first:
        return {"format": "code", "system": records.CODE_SYSTEM_PROMPT, "tools": []}
    return {"format": "tools", "system": records.SYSTEM_PROMPT, "tools": records.TOOLS}


def _is_system(message) -> bool:
    return isinstance(message, dict) and message.get("role") == "system"


def _first_record(path: Path) -> dict | None:
    """The first line of a JSONL file as an object; ``None`` when there is no such file, or the
    line is not UTF-8, not JSON, nested absurdly deep or not an object (it is data, never a crash)."""
    try:
        for _, value, problem in fileio.iter_json_lines(path):
            return value if problem is None and isinstance(value, dict) else None
    except (OSError, ValueError):  # no file or a folder; a number too long to convert
        pass
    return None


def front_matter(r: dict, license: str | None = None, spec: dict | None = None) -> dict:
    """The card's Hugging Face metadata for a fuse report ``r`` (``spec``: :func:`tools_spec`)."""
    base_model, base_license = base_metadata(r["base"])
    meta: dict = {}
    if base_model:
        meta["base_model"] = base_model
    plain = spec is not None and spec.get("format") == "plain"
    tags = ["mlx", "lora", spec["task"]] if plain else list(TAGS)
    if r.get("base_bits") in (2, 3, 4) and r.get("fine_tune_type") != "full":
        tags.append("qlora")
    meta |= {
        "library_name": "mlx",
        "pipeline_tag": "text-generation",
        "license": license or base_license or "other",
        "tags": tags,
        "mlx_tune": {
            "phase": r.get("phase"),
            "fine_tune_type": r.get("fine_tune_type"),
            "examples": r.get("data") or {},
            "bits": r.get("bits"),
            "greedy_agreement": r.get("greedy_agreement"),
        },
    }
    return meta


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _training_rows(r: dict) -> list[str]:
    t = r.get("training") or {}
    agree = (
        "not checked (no validation data)"
        if r["greedy_agreement"] is None
        else (
            f"{r['greedy_agreement']:.0%} of {r['verify_prompts']} validation prompts identical "
            f"(greedy, {r['max_tokens']} tokens)"
        )
    )
    return [
        "| | |",
        "|---|---|",
        f"| phase | {r['phase'] if r['phase'] is not None else '-'} |",
        f"| data (examples) | {', '.join(f'{k} {v}' for k, v in r['data'].items()) or '-'} |",
        f"| val loss first -> best | {t.get('val_loss_first')} -> {t.get('val_loss_best')} "
        f"({t.get('improvement_pct')}% lower) |",
        f"| training steps, seconds | {t.get('step')}, {t.get('train_seconds')} |",
        f"| greedy agreement with base + adapter | {agree} |",
        f"| size on disk | fused {r['fused_bytes']:,} B; base {_bytes(r['base_bytes'])} B; "
        f"adapter {r['adapter_bytes']:,} B |",
        f"| fuse time | {r['fuse_seconds']} s (with verification {r['total_seconds']} s) |",
    ]


# A question of each non-tools task for the card's usage example.
EXAMPLE_QUESTIONS = {
    "chat": "What does typer.echo do?",
    "dot": "Module shapes: Square and Circle are subclasses of Shape. Write the class hierarchy as DOT.",
}


def _plain_usage(path: str, spec: dict) -> list[str]:
    """Usage of a model that answers in plain text (the chat and dot tasks): no tools."""
    question = EXAMPLE_QUESTIONS.get(spec["task"], "Your question here")
    system = spec.get("system")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    body = json.dumps({"messages": messages, "max_tokens": 256}, ensure_ascii=False).replace("'", "'\\''")
    said = (
        "with the system prompt saved in `tools.json` (send the same one)"
        if system
        else "without a system prompt"
    )
    return [
        "## Use it",
        "",
        f"A `{spec['task']}` model: it answers in plain text and calls no tools. It was trained {said}.",
        "",
        "```sh",
        f"mlx_lm.server --model {path} --port 8080 &",
        "curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"  -d '{body}'",
        "```",
        "",
        "LM Studio (MLX engine) loads this folder as it is.",
        "",
    ]


def _usage(path: str, spec: dict) -> list[str]:
    if spec["format"] == "plain":
        return _plain_usage(path, spec)
    question = "Where is APIRouter defined?"
    if spec["format"] == "code":
        return [
            "## Use it",
            "",
            "It was trained with the system prompt in `tools.json` and answers a tool call as a Python "
            "code block (`grep(...)` / `read(...)`); run the call yourself and send back its output.",
            "",
            "```sh",
            f"mlx_lm.generate --model {path} \\",
            f'  --system-prompt "$(python -c \'import json; print(json.load(open("{path}/tools.json"))["system"])\')" \\',
            f"  --prompt '{question}'",
            "```",
            "",
        ]
    request = (
        f"jq -n --slurpfile t {path}/tools.json "
        '\'{messages: [{role: "system", content: $t[0].system}, '
        f'{{role: "user", content: "{question}"}}], tools: $t[0].tools, max_tokens: 256}}\' |\n'
        "  curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' -d @-"
    )
    return [
        "## Use it",
        "",
        "It was trained with the system prompt and the `grep` / `read` tool schemas saved in "
        "`tools.json`; give it the same ones. It answers with a tool call or directly; your program "
        "runs the tool on its repository and sends the output back as a `tool` message.",
        "",
        "With `mlx_lm.generate` (Python):",
        "",
        "```python",
        "import json",
        "from mlx_lm import generate, load",
        "",
        f'model, tokenizer = load("{path}")',
        f'spec = json.load(open("{path}/tools.json"))',
        'messages = [{"role": "system", "content": spec["system"]},',
        f'            {{"role": "user", "content": "{question}"}}]',
        'prompt = tokenizer.apply_chat_template(messages, tools=spec["tools"], add_generation_prompt=True)',
        "print(generate(model, tokenizer, prompt=prompt, max_tokens=256))",
        "```",
        "",
        "With `mlx_lm.server` (an OpenAI-style request with `tools`, built here with `jq`; a call "
        "comes back in `choices[0].message.tool_calls`):",
        "",
        "```sh",
        f"mlx_lm.server --model {path} --port 8080 &",
        request,
        "```",
        "",
        "A call the model writes badly cannot be parsed: the server then returns `content: null` and "
        "no `tool_calls`; treat that as a failed answer. LM Studio (MLX engine) loads this folder too; "
        "paste the system prompt from `tools.json` and give it the two tools.",
        "",
        "From the Hub (after `mlx-tune upload`), load the repository id instead of the folder and "
        'fetch `tools.json` with `huggingface_hub.hf_hub_download(REPO_ID, "tools.json")`.',
        "",
    ]


def model_card(r: dict, spec: dict, license: str | None = None) -> str:
    """``README.md`` for a fused model folder: metadata block, how it was made and checked, usage."""
    meta = yaml.safe_dump(front_matter(r, license, spec), sort_keys=False, allow_unicode=True)
    precision = f"{r['bits']} bits (group size {r['group_size']})" if r["bits"] != 16 else "float precision"
    lines = [
        "---",
        meta.rstrip("\n"),
        "---",
        "",
        f"# {Path(r['save_path']).name}",
        "",
        f"Base model `{r['base']}` ({r['base_bits'] or 'float'} bits) with the {r['fine_tune_type']} adapter "
        f"`{r['adapter_path']}` (trained with mlx-tune on mlx-lm) fused in full precision and saved at "
        f"{precision}. Verification: greedy answers of the fused model compared with base + adapter "
        "on validation prompts.",
        "",
        *_training_rows(r),
        "",
        *_usage(r["save_path"], spec),
    ]
    return "\n".join(lines)


def write_tools_json(folder: Path, spec: dict) -> None:
    """``tools.json``: ``{"system": ..., "tools": [...], "format": ...}`` beside the model."""
    fileio.write_text(Path(folder) / "tools.json", json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
