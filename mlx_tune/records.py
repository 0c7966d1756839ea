"""The record format every stage reads and writes (see DESIGN.md, "The record format").

A record is mlx-lm's ``tools``/``chat`` format plus a ``meta`` key that mlx-lm ignores::

    {"messages": [system, user, assistant, (tool, assistant)...], "tools": [GREP_TOOL, READ_TOOL],
     "meta": {...}}

Three shapes: a **direct** answer (one assistant turn with plain ``content``); a **call-only**
record (one assistant turn with ``tool_calls``, the plan's original format); and a
**trajectory**: each call is followed by a ``tool`` message holding the tool's real output
(:mod:`mlx_tune.tools`) and the record ends with an assistant answer grounded in it. Tool-call
``arguments`` are JSON objects, as Hugging Face chat templates (Qwen2.5's applies ``tojson``)
expect; readers also accept JSON strings. The *decision* of a record (grep, read or direct) is
its first assistant turn; the benchmark prompts with everything before that turn.

In code mode (``fmt="code"``) the same example is rendered as Python blocks calling
``grep(...)`` / ``read(...)``, with the tools described in the system prompt instead of a
``tools`` key.

This module is the single place that builds, renders, parses and checks records.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from typing import Any

from mlx_tune.fileio import parse_json_line
from mlx_tune.tools import is_safe_relative_path

CATEGORIES = ("grep", "read", "direct")
TOOL_CATEGORIES = ("grep", "read")
ORIGINS = ("real", "synthetic")
FORMATS = ("tools", "code")
META_REQUIRED = ("category", "origin", "source", "generator")

SYSTEM_PROMPT = (
    "You are a coding assistant working inside a code repository. "
    "When a question is about this repository's code, use a tool: grep searches the files for a "
    "regular expression and returns matching lines as path:line:text; read shows numbered lines "
    "of one file. Then answer from what the tool returned, naming the file and line. "
    "When a question is about Python, its standard library or the web in general, answer "
    "directly in plain sentences without calling a tool."
)

GREP_TOOL = {
    "type": "function",
    "function": {
        "name": "grep",
        "description": "Search repository files for lines matching a Python regular expression.",
        "parameters": {
            "type": "object",
            "properties": {
                "pattern": {
                    "type": "string",
                    "description": "Python regular expression to search for.",
                },
                "path": {
                    "type": "string",
                    "description": "File or directory to search, relative to the repository root. "
                    "Defaults to the whole repository.",
                },
            },
            "required": ["pattern"],
        },
    },
}

READ_TOOL = {
    "type": "function",
    "function": {
        "name": "read",
        "description": "Show numbered lines of one file of the repository.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "File path, relative to the repository root.",
                },
                "start_line": {
                    "type": "integer",
                    "description": "First line to show (1-based). Defaults to 1.",
                },
                "end_line": {
                    "type": "integer",
                    "description": "Last line to show. Defaults to 40 lines after start_line.",
                },
            },
            "required": ["path"],
        },
    },
}

TOOLS = [GREP_TOOL, READ_TOOL]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

CODE_SYSTEM_PROMPT = (
    SYSTEM_PROMPT + " To call a tool, answer with one Python code block containing a single call:\n"
    "grep(pattern: str, path: str = '.')  # search files for a regular expression\n"
    "read(path: str, start_line: int = 1, end_line: int | None = None)  # show lines of one file\n"
    "Use only string literals as arguments."
)


# ---------------------------------------------------------------- building


def tool_call_record(
    question: str, tool: str, arguments: dict[str, Any], meta: dict, fmt: str = "tools"
) -> dict:
    """A record whose answer is one call of ``tool`` (``grep`` or ``read``) with ``arguments``."""
    return trajectory_record(question, [(tool, arguments, None)], None, meta, fmt)


def trajectory_record(
    question: str,
    steps: list[tuple[str, dict[str, Any], str | None]],
    answer: str | None,
    meta: dict,
    fmt: str = "tools",
) -> dict:
    """A record of ``(tool, arguments, output)`` steps, each call followed by a ``tool`` message
    with its ``output``, then the final ``answer``. A single step with output and answer ``None``
    is a call-only record (the plan's format); no steps and an answer is a direct record."""
    turns: list[dict] = []
    for i, (tool, arguments, output) in enumerate(steps):
        turns.append(call_message(tool, arguments, fmt, f"call_{i}"))
        if output is not None:
            turns.append(tool_message(tool, output, f"call_{i}", fmt))
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    system, tools = (CODE_SYSTEM_PROMPT, None) if fmt == "code" else (SYSTEM_PROMPT, TOOLS)
    return _record(system, question, turns, meta, tools)


def call_message(tool: str, arguments: dict[str, Any], fmt: str = "tools", call_id: str = "call_0") -> dict:
    """An assistant turn calling ``tool``: ``tool_calls`` with object arguments, or a code block."""
    if fmt == "code":
        return {"role": "assistant", "content": render_code_call(tool, arguments)}
    call = {"id": call_id, "type": "function", "function": {"name": tool, "arguments": dict(arguments)}}
    return {"role": "assistant", "tool_calls": [call]}


def tool_message(tool: str, output: str, call_id: str = "call_0", fmt: str = "tools") -> dict:
    """A ``tool`` turn holding a call's output (the OpenAI / mlx-lm shape)."""
    if fmt == "code":
        return {"role": "tool", "name": tool, "content": output}
    return {"role": "tool", "tool_call_id": call_id, "name": tool, "content": output}


def direct_record(question: str, answer: str, meta: dict, fmt: str = "tools") -> dict:
    """A record whose answer is plain text, no tool call."""
    return trajectory_record(question, [], answer, meta, fmt)


def _record(system: str, question: str, turns: list[dict], meta: dict, tools: list | None) -> dict:
    record: dict[str, Any] = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}, *turns]
    }
    if tools is not None:
        record["tools"] = tools
    record["meta"] = dict(meta)
    return record


def render_code_call(tool: str, arguments: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return f"```python\n{tool}({args})\n```"


# ---------------------------------------------------------------- reading


def parse_code_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """Parse a code-mode answer into ``(tool, arguments)``, or ``None`` if it is not one
    ``grep``/``read`` call with literal arguments. Uses ``ast`` only; nothing is executed, and
    hostile text (nested too deeply for ``ast``, null bytes, huge numbers) is ``None`` too."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)```", text, re.DOTALL)
    source = (m.group(1) if m else text).strip()
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        return None
    if call.func.id not in TOOL_SCHEMAS:
        return None
    params = list(TOOL_SCHEMAS[call.func.id]["properties"])
    arguments: dict[str, Any] = {}
    try:
        for i, arg in enumerate(call.args):
            if i >= len(params):
                return None
            arguments[params[i]] = ast.literal_eval(arg)
        for kw in call.keywords:
            if kw.arg is None:
                return None
            arguments[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    return call.func.id, arguments


def answer_of(record: dict) -> dict:
    """The final assistant message of a record (a trajectory's grounded answer)."""
    return record["messages"][-1]


def first_turn_index(record: dict) -> int:
    """Index of the first assistant message: the decision the benchmark asks the model for."""
    for i, m in enumerate(record["messages"]):
        if isinstance(m, dict) and m.get("role") == "assistant":
            return i
    return len(record["messages"]) - 1


def prompt_messages(record: dict) -> list[dict]:
    """The messages before the first assistant turn (system and user): a benchmark prompt."""
    return record["messages"][: first_turn_index(record)]


def message_call(message: dict) -> tuple[str, dict[str, Any]] | None:
    """The ``(tool, arguments)`` an assistant message calls, in either format, or ``None``.
    Arguments that are not a JSON object read as ``{}`` (:func:`validate_record` reports them)."""
    calls = message.get("tool_calls")
    if calls:
        fn = calls[0]["function"]
        args = decode_arguments(fn.get("arguments"))[0]
        return fn["name"], dict(args) if isinstance(args, dict) else {}
    return parse_code_call(message.get("content") or "") if _looks_like_code(message) else None


def decode_arguments(args: Any) -> tuple[Any, str | None]:
    """Tool-call ``arguments`` as a value: a JSON string decoded (hostile JSON is a problem, never
    a crash: :func:`mlx_tune.fileio.parse_json_line`), anything else as it is. ``(args, problem)``."""
    return parse_json_line(args) if isinstance(args, str) else (args, None)


def record_call(record: dict) -> tuple[str, dict[str, Any]] | None:
    """The ``(tool, arguments)`` of the record's first assistant turn, or ``None`` (direct)."""
    return message_call(record["messages"][first_turn_index(record)])


def record_calls(record: dict) -> list[tuple[str, dict[str, Any]]]:
    """Every call the record's assistant turns make, in order."""
    out = []
    for m in record["messages"]:
        if isinstance(m, dict) and m.get("role") == "assistant":
            call = message_call(m)
            if call:
                out.append(call)
    return out


def is_trajectory(record: dict) -> bool:
    """True for a record whose calls are followed by tool output and a final answer."""
    return any(isinstance(m, dict) and m.get("role") == "tool" for m in record["messages"])


def _looks_like_code(message: dict) -> bool:
    return "```" in (message.get("content") or "")


def record_category(record: dict) -> str:
    """``grep``, ``read`` or ``direct``: the first assistant turn's decision (not ``meta``'s)."""
    call = record_call(record)
    return call[0] if call else "direct"


def normalized_key(record: dict) -> str:
    """Key for duplicate detection: the conversation with whitespace collapsed and lower-cased.

    ``meta`` is ignored, so the same question and answer from two generators is a duplicate."""
    parts = []
    for m in record.get("messages", []):
        parts.append(str(m.get("role")))
        parts.append(str(m.get("content") or ""))
        for c in m.get("tool_calls") or []:
            fn = c.get("function", {})
            args, problem = decode_arguments(fn.get("arguments"))
            args = fn.get("arguments") if problem else args
            parts.append(f"{fn.get('name')}:{json.dumps(args, sort_keys=True)}")
    return re.sub(r"\s+", " ", "\x1f".join(parts)).strip().lower()


# ---------------------------------------------------------------- checking


def validate_record(record: Any) -> list[str]:
    """Every schema problem of one record, each as ``field: what is wrong`` (empty if valid)."""
    problems: list[str] = []
    if not isinstance(record, dict):
        return [f"record: expected an object, got {type(record).__name__}"]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["messages: missing or empty"]
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            problems.append(f"{where}: expected an object")
            continue
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            problems.append(f"{where}.role: {role!r} is not system, user, assistant or tool")
            continue
        calls = m.get("tool_calls")
        content = m.get("content")
        if role == "tool":
            previous = messages[i - 1] if i else None
            if not (isinstance(previous, dict) and previous.get("role") in ("assistant", "tool")):
                problems.append(f"{where}: a tool message must follow the assistant's call")
            if not isinstance(content, str):
                problems.append(f"{where}.content: expected the tool's output as a string")
            continue
        if calls is not None:
            if role != "assistant":
                problems.append(f"{where}.tool_calls: only assistant messages may call tools")
            problems.extend(_validate_calls(calls, where, record.get("tools")))
        elif not isinstance(content, str) or not content.strip():
            problems.append(f"{where}.content: missing or empty")
    if isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
        problems.append(f"messages[{len(messages) - 1}].role: the last message must be the assistant's")
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in messages):
        problems.append("messages: no user message")
    tools = record.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(_tool_name(t) for t in tools)):
        problems.append("tools: expected a list of {type: function, function: {name, parameters}}")
    if not problems:
        for i, m in enumerate(messages):
            if m.get("role") == "assistant" and isinstance(m.get("content"), str) and _looks_like_code(m):
                call = parse_code_call(m["content"])
                if call:
                    problems.extend(_validate_arguments(call[0], call[1], f"messages[{i}].content"))
    meta = record.get("meta")
    if meta is not None:
        problems.extend(_validate_meta(meta, record if not problems else None))
    return problems


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        name = tool["function"].get("name")
        return name if isinstance(name, str) else None
    return None


def _validate_calls(calls: Any, where: str, tools: Any) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{where}.tool_calls: expected a non-empty list"]
    known = {_tool_name(t): t for t in tools} if isinstance(tools, list) else {}
    problems = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            problems.append(f"{at}.function.name: missing")
            continue
        name = fn["name"]
        args, problem = decode_arguments(fn.get("arguments"))
        if problem:
            problems.append(f"{at}.function.arguments: {problem}")
            continue
        if not isinstance(args, dict):
            problems.append(f"{at}.function.arguments: expected a JSON object")
            continue
        if known and name not in known:
            problems.append(f"{at}.function.name: {name!r} is not one of the record's tools")
            continue
        schema = (known[name]["function"].get("parameters") if known else None) or TOOL_SCHEMAS.get(name)
        problems.extend(_validate_arguments(name, args, f"{at}.function.arguments", schema))
    return problems


def validate_call_arguments(name: str, args: dict, at: str = "arguments") -> list[str]:
    """Problems of calling tool ``name`` with ``args`` (schema fit, regex compiles, safe path)."""
    return _validate_arguments(name, args, at)


def _validate_arguments(name: str, args: dict, at: str, schema: dict | None = None) -> list[str]:
    schema = schema or TOOL_SCHEMAS.get(name)
    if schema is None:
        return [f"{at}: unknown tool {name!r}"]
    props = schema.get("properties", {})
    problems = [f"{at}.{k}: required" for k in schema.get("required", []) if k not in args]
    for k, v in args.items():
        if k not in props:
            problems.append(f"{at}.{k}: not a parameter of {name}")
        elif props[k].get("type") == "string" and not isinstance(v, str):
            problems.append(f"{at}.{k}: expected a string")
        elif props[k].get("type") == "integer" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            problems.append(f"{at}.{k}: expected a whole number >= 1")
    if not problems and name in TOOL_SCHEMAS:
        problems.extend(_validate_tool_semantics(name, args, at))
    return problems


def _validate_tool_semantics(name: str, args: dict, at: str) -> list[str]:
    problems = []
    if name == "grep":
        try:
            re.compile(args["pattern"])
        except re.error as e:
            problems.append(f"{at}.pattern: does not compile as a Python regex ({e})")
        if not args["pattern"]:
            problems.append(f"{at}.pattern: empty")
    path = args.get("path")
    if isinstance(path, str) and not is_safe_relative_path(path):
        problems.append(f"{at}.path: {path!r} must be relative to the repository root, without '..'")
    return problems


def _validate_meta(meta: Any, record: dict | None) -> list[str]:
    if not isinstance(meta, dict):
        return ["meta: expected an object"]
    problems = [f"meta.{k}: required" for k in META_REQUIRED if not meta.get(k)]
    category = meta.get("category")
    if category is not None and category not in CATEGORIES:
        problems.append(f"meta.category: {category!r} is not one of {', '.join(CATEGORIES)}")
    origin = meta.get("origin")
    if origin is not None and origin not in ORIGINS:
        problems.append(f"meta.origin: {origin!r} is not one of {', '.join(ORIGINS)}")
    path = meta.get("path")
    if path is not None and not (isinstance(path, str) and is_safe_relative_path(path)):
        problems.append(f"meta.path: {path!r} must be relative to the repository root, without '..'")
    repo = meta.get("repo")
    if repo is not None and not (isinstance(repo, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]*", repo)):
        problems.append(f"meta.repo: {repo!r} must be a plain repository name")
    if record is not None and category in CATEGORIES and record_category(record) != category:
        problems.append(f"meta.category: says {category!r} but the answer is {record_category(record)!r}")
    return problems


def templated_messages(record: dict) -> list[dict]:
    """The record's messages with JSON-string tool-call arguments turned into objects, as chat
    templates such as Qwen2.5's (which apply ``tojson`` to them) expect."""
    messages = copy.deepcopy(record["messages"])
    for m in messages:
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            args, problem = decode_arguments(fn.get("arguments"))
            if isinstance(fn.get("arguments"), str) and not problem:
                fn["arguments"] = args
    return messages
