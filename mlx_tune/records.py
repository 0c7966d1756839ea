"""The record format every stage reads and writes (see DESIGN.md, "The record format").

A record is mlx-lm's ``tools``/``chat`` format plus a ``meta`` key that mlx-lm ignores::

    {"messages": [system, user, assistant], "tools": [GREP_TOOL, READ_TOOL], "meta": {...}}

The assistant turn is either a tool call (``tool_calls`` with JSON-string ``arguments``) or a
direct answer (plain ``content``). In code mode (``fmt="code"``) the same example is rendered
as a Python block calling ``grep(...)`` / ``read(...)``, with the tools described in the
system prompt instead of a ``tools`` key.

This module is the single place that builds, renders, parses and checks records.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from typing import Any

CATEGORIES = ("grep", "read", "direct")
TOOL_CATEGORIES = ("grep", "read")
ORIGINS = ("real", "synthetic")
FORMATS = ("tools", "code")
META_REQUIRED = ("category", "origin", "source", "generator")

SYSTEM_PROMPT = (
    "You are a coding assistant working inside a code repository. "
    "When a question needs the repository's files, call a tool: grep searches files for a "
    "regular expression, read shows one file. When you can answer from knowledge of the "
    "framework, answer directly in plain sentences without calling a tool."
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
        "description": "Show the contents of one file of the repository.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "File path, relative to the repository root.",
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
    "read(path: str)  # show one file\n"
    "Use only string literals as arguments."
)


# ---------------------------------------------------------------- building


def tool_call_record(
    question: str, tool: str, arguments: dict[str, Any], meta: dict, fmt: str = "tools"
) -> dict:
    """A record whose answer is one call of ``tool`` (``grep`` or ``read``) with ``arguments``."""
    if fmt == "code":
        assistant = {"role": "assistant", "content": render_code_call(tool, arguments)}
        return _record(CODE_SYSTEM_PROMPT, question, assistant, meta, tools=None)
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": tool, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
    assistant = {"role": "assistant", "tool_calls": [call]}
    return _record(SYSTEM_PROMPT, question, assistant, meta, tools=TOOLS)


def direct_record(question: str, answer: str, meta: dict, fmt: str = "tools") -> dict:
    """A record whose answer is plain text, no tool call."""
    assistant = {"role": "assistant", "content": answer}
    if fmt == "code":
        return _record(CODE_SYSTEM_PROMPT, question, assistant, meta, tools=None)
    return _record(SYSTEM_PROMPT, question, assistant, meta, tools=TOOLS)


def _record(system: str, question: str, assistant: dict, meta: dict, tools: list | None) -> dict:
    record: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
            assistant,
        ]
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
    ``grep``/``read`` call with literal arguments. Uses ``ast`` only; nothing is executed."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)```", text, re.DOTALL)
    source = (m.group(1) if m else text).strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
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
    except (ValueError, TypeError, SyntaxError):
        return None
    return call.func.id, arguments


def answer_of(record: dict) -> dict:
    """The final assistant message of a record."""
    return record["messages"][-1]


def record_call(record: dict) -> tuple[str, dict[str, Any]] | None:
    """The ``(tool, arguments)`` a record's answer calls, in either format, or ``None``."""
    message = answer_of(record)
    calls = message.get("tool_calls")
    if calls:
        fn = calls[0]["function"]
        args = fn["arguments"]
        return fn["name"], json.loads(args) if isinstance(args, str) else dict(args)
    return parse_code_call(message.get("content") or "") if _looks_like_code(message) else None


def _looks_like_code(message: dict) -> bool:
    return "```" in (message.get("content") or "")


def record_category(record: dict) -> str:
    """``grep``, ``read`` or ``direct``, read from the answer itself (not from ``meta``)."""
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
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    pass
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
    if not problems and isinstance(messages[-1].get("content"), str):
        call = parse_code_call(messages[-1]["content"]) if _looks_like_code(messages[-1]) else None
        if call:
            problems.extend(_validate_arguments(call[0], call[1], f"messages[{len(messages) - 1}].content"))
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
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                problems.append(f"{at}.function.arguments: not valid JSON ({e.msg})")
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


def is_safe_relative_path(path: str) -> bool:
    """True if ``path`` is relative and cannot climb out of the directory it is resolved in."""
    if not path or path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path):
        return False
    return ".." not in re.split(r"[\\/]+", path)


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
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except json.JSONDecodeError:
                    pass
    return messages
