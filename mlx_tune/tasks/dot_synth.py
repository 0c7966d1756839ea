"""Synthetic Python programs for the ``dot`` task: small seeded modules with a class hierarchy, a
call graph, an import graph or a state machine, written as text and never run.

Their graphs come from the same ``ast`` extractors as a real repository's
(:func:`mlx_tune.tasks.dot_extract.extract_all`), so a synthetic pair is grounded in its code
exactly as a real one is; only the code is invented. Same seed, same programs.
"""

from __future__ import annotations

import random

STATE_DOMAINS = {
    "Order": ["PENDING", "PAID", "PACKED", "SHIPPED", "DELIVERED", "RETURNED", "CANCELLED"],
    "Connection": ["IDLE", "CONNECTING", "OPEN", "CLOSING", "CLOSED", "FAILED"],
    "Job": ["QUEUED", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED"],
    "Door": ["OPEN", "CLOSED", "LOCKED", "JAMMED"],
    "Ticket": ["NEW", "TRIAGED", "IN_PROGRESS", "REVIEW", "DONE", "REOPENED"],
    "Player": ["STOPPED", "LOADING", "PLAYING", "PAUSED", "BUFFERING", "ENDED"],
    "Deploy": ["DRAFT", "BUILDING", "TESTING", "STAGED", "LIVE", "ROLLED_BACK"],
    "Light": ["RED", "RED_AMBER", "GREEN", "AMBER", "FLASHING"],
}
EVENTS = ["start", "stop", "retry", "fail", "finish", "cancel", "resume", "timeout", "reset", "approve"]
CLASS_ROOTS = [
    "Parser",
    "Handler",
    "Shape",
    "Storage",
    "Exporter",
    "Widget",
    "Task",
    "Reader",
    "Client",
    "Plugin",
]
CLASS_PREFIXES = [
    "Json",
    "Yaml",
    "Csv",
    "Http",
    "File",
    "Memory",
    "Async",
    "Cached",
    "Remote",
    "Local",
    "Sql",
]
MIXINS = ["LoggingMixin", "RetryMixin", "SerializableMixin", "ValidationMixin"]
VERBS = ["load", "parse", "validate", "save", "render", "fetch", "build", "check", "merge", "send", "clean"]
NOUNS = ["config", "user", "order", "report", "rows", "token", "page", "cache", "index", "message"]
PACKAGES = ["shop", "blog", "chat", "inventory", "weather", "notes", "billing", "tracker"]
MODULES = ["cli", "app", "api", "views", "services", "auth", "models", "db", "config", "utils"]
KINDS = ("classes", "calls", "imports", "states")


def programs(n: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    """``n`` programs, ``(kind, {path: source})``, the kinds in turn."""
    rng = random.Random(f"dot-synth:{seed}")
    makers = {"classes": hierarchy, "calls": call_module, "imports": package, "states": state_machine}
    return [(KINDS[i % len(KINDS)], makers[KINDS[i % len(KINDS)]](rng)) for i in range(n)]


def hierarchy(rng: random.Random) -> dict[str, str]:
    """A module with a root class, subclasses, a second level and now and then a mixin."""
    root = rng.choice(CLASS_ROOTS)
    prefixes = rng.sample(CLASS_PREFIXES, 5)
    lines = ["from abc import ABC, abstractmethod", ""]
    root_base = rng.choice(["ABC", "", "object"])
    lines += [f"class {root}({root_base}):" if root_base else f"class {root}:", "    name = 'base'", ""]
    children = [f"{p}{root}" for p in prefixes[: rng.randint(2, 3)]]
    mixin = rng.choice(MIXINS) if rng.random() < 0.5 else None
    if mixin:
        lines += [f"class {mixin}:", "    pass", ""]
    for i, child in enumerate(children):
        bases = [root] + ([mixin] if mixin and i == 0 else [])
        lines += [f"class {child}({', '.join(bases)}):", f"    name = {child.lower()!r}", ""]
    for p in prefixes[3 : 3 + rng.randint(0, 2)]:
        parent = rng.choice(children)
        lines += [f"class {p}{parent}({parent}):", "    pass", ""]
    return {f"{root.lower()}s.py": "\n".join(lines)}


def call_module(rng: random.Random) -> dict[str, str]:
    """A module of functions calling each other, a tree under ``main`` (sometimes a shared helper)."""
    names = sorted({f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}" for _ in range(8)})
    rng.shuffle(names)
    names = [n for n in names if n != "main"][: rng.randint(3, 6)]
    callees: dict[str, list[str]] = {"main": names[: rng.randint(2, min(3, len(names)))]}
    rest = names[len(callees["main"]) :]
    for name in rest:
        callees.setdefault(rng.choice(callees["main"]), []).append(name)
    if rest and rng.random() < 0.5:
        callees.setdefault(rng.choice(callees["main"]), []).append(rest[0])
    lines = []
    for name in reversed(["main", *names]):
        lines += [f"def {name}(value):"]
        for callee in dict.fromkeys(callees.get(name, [])):
            lines.append(f"    value = {callee}(value)")
        lines += ["    return value", "", ""]
    return {"tasks.py": "\n".join(lines)}


def package(rng: random.Random) -> dict[str, str]:
    """A package whose modules import lower layers (a DAG by the order of ``MODULES``)."""
    pkg = rng.choice(PACKAGES)
    mods = sorted(rng.sample(MODULES, rng.randint(4, 6)), key=MODULES.index)
    files = {f"{pkg}/__init__.py": f'"""The {pkg} package."""\nfrom {pkg}.{mods[0]} import main\n'}
    for i, mod in enumerate(mods):
        lower = mods[i + 1 :]
        chosen = sorted(rng.sample(lower, min(len(lower), rng.randint(1, 2)))) if lower else []
        lines = []
        for j, target in enumerate(chosen):
            style = (i + j) % 3
            if style == 0:
                lines.append(f"from . import {target}")
            elif style == 1:
                lines.append(f"from .{target} import {target.upper()}_NAME")
            else:
                lines.append(f"import {pkg}.{target}")
        lines += [
            "",
            f"{mod.upper()}_NAME = {mod!r}",
            "",
            "",
            "def main():",
            f"    return {mod.upper()}_NAME",
            "",
        ]
        files[f"{pkg}/{mod}.py"] = "\n".join(lines)
    return files


def state_machine(rng: random.Random) -> dict[str, str]:
    """An Enum and a transition table over it, a table of strings, or ``(state, event)`` keys."""
    domain = rng.choice(sorted(STATE_DOMAINS))
    states = STATE_DOMAINS[domain][: rng.randint(3, len(STATE_DOMAINS[domain]))]
    edges: dict[str, list[str]] = {}
    for i, s in enumerate(states[:-1]):
        edges[s] = [states[i + 1]]
        if rng.random() < 0.4:
            other = rng.choice(states)
            if other not in edges[s] and other != s:
                edges[s].append(other)
    style = rng.choice(["enum", "strings", "events"])
    cls = f"{domain}State"
    lines = ["from enum import Enum", "", "", f"class {cls}(Enum):"]
    lines += [f"    {s} = {s.lower()!r}" for s in states] + ["", ""]
    if style == "strings":
        lines = ["TRANSITIONS = {"]
        lines += [
            f"    {s.lower()!r}: ({', '.join(repr(t.lower()) for t in ts)},)," for s, ts in edges.items()
        ]
    elif style == "enum":
        lines += ["NEXT_STATES = {"]
        lines += [f"    {cls}.{s}: [{', '.join(f'{cls}.{t}' for t in ts)}]," for s, ts in edges.items()]
    else:
        lines += ["ON_EVENT = {"]
        for s, ts in edges.items():
            for t, event in zip(
                ts, rng.sample(EVENTS, len(ts)), strict=True
            ):  # one event per key: keys are unique
                lines.append(f"    ({cls}.{s}, {event!r}): {cls}.{t},")
    lines += ["}", ""]
    return {f"{domain.lower()}_states.py": "\n".join(lines)}
