"""The agent loop: a model answers held-out questions with the sandboxed tools, call after call,
until it gives a final answer; and the score of that final answer (multi-step accuracy).

Each query starts from its prompt (:func:`mlx_tune.records.prompt_messages`, with the record's
``tools``). Every round, the model answers all queries still running (batched, like the
single-turn evaluation: :func:`mlx_tune.eval.evaluate.generate_batched` on the round's conversations,
the shared prefix computed once). An answer that is a tool call (tools format: Qwen2.5
``<tool_call>{json}</tool_call>``; code format: one code block; parsed by
:func:`mlx_tune.eval.metrics.parse_prediction`) is run in :class:`mlx_tune.tools.Sandbox` (a time limit
per call) on the query's repository, and the conversation grows by the call
(:func:`records.call_message`) and its output (:func:`records.tool_message`), as training renders
them. A query ends at:

- ``answer``: an answer that is not a tool call (the final answer);
- ``invalid_call``: a call that does not parse or does not fit the tool's schema (a tool error);
- ``step_limit``: a call made after ``max_steps`` calls have run (it is not run).

A call whose output is an error or a timeout (a missing file, a query without a repository) counts
as a tool error; the model sees the error and goes on. The sandbox root is the caller's choice,
``root_of(record)`` (the benchmark resolves ``meta.repo`` in its repos folder); a record's data
never names it. :func:`agent_loop_plain` is the per-query reference: one ``mlx_lm.generate`` per
step, the same greedy texts.

Scoring, :func:`trajectory_success` (the rule the benchmark reports as ``trajectory_success``):

- a **direct** question (``meta.category`` direct): the model answered without calling a tool;
- otherwise the final answer must be plain text (no call attempt), and
- a **negative** question (``meta.found`` false): it says nothing was found (``no``, ``not found``,
  ``does not exist``, ``couldn't find``, ``no match``, ...) and names no file that does not exist in
  the repository (without a repository root, naming any file fails);
- a **positive** question: it names the expected file ``meta.path`` as a path (normalised, e.g.
  ``./a//b.py`` = ``a/b.py``; ``REPO/path`` also counts; a bare basename does not when the path has
  folders), and when ``meta.line`` is set, a line number within 2 of it written next to that path:
  ``path:LINE``, ``path, line LINE``, ``path (line LINE)``, ``path at line LINE``, ``line LINE of path``.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlx_tune import records, rendering, tools
from mlx_tune.eval import evaluate
from mlx_tune.eval.metrics import expected_category, parse_prediction, record_format

DEFAULT_MAX_STEPS = 3
LINE_SLACK = 2
NO_ROOT_OUTPUT = "Error: no repository is available for this question."

# A generator: the round's conversations ({"messages", "tools"?} dicts) -> one text per conversation
# (or an evaluate.Generation).
Generate = Callable[[list[dict]], "evaluate.Generation | Sequence[str]"]


@dataclass
class AgentResult:
    """One query's run."""

    messages: list[dict]  # the prompt, then each call and its tool output, then the last answer
    final: str = ""  # the last answer's text: the final answer, or the call that ended the query
    steps: int = 0  # tool calls run
    tool_errors: int = 0  # outputs with status error/timeout, plus an invalid call
    step_limit: bool = False  # still calling a tool after max_steps calls
    ended: str = ""  # answer | invalid_call | step_limit
    texts: list[str] = field(default_factory=list)  # the model's answer in each round


@dataclass
class AgentRun:
    results: list[AgentResult]
    wall_time: float = 0.0
    generation_time: float = 0.0
    tool_time: float = 0.0
    rounds: int = 0
    generation_tokens: int = 0


def _conversation(record: dict) -> dict:
    conv = {"messages": copy.deepcopy(records.prompt_messages(record))}
    if record.get("tools"):
        conv["tools"] = record["tools"]
    return conv


def run_agent(
    queries: Sequence[dict],
    root_of: Callable[[dict], Path | None],
    generate: Generate,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    sandbox: tools.Sandbox | None = None,
) -> AgentRun:
    """The loop (see the module doc) with any ``generate``; tool calls run in ``sandbox`` (a new
    one, closed at the end, if ``None``)."""
    t_start = time.perf_counter()
    convs = [_conversation(r) for r in queries]
    fmts = [record_format(r) for r in queries]
    results = [AgentResult(c["messages"]) for c in convs]
    roots: dict[int, Path | None] = {}
    run = AgentRun(results)
    own = sandbox is None
    sandbox = sandbox or tools.Sandbox()
    active = list(range(len(queries)))
    try:
        while active:
            tic = time.perf_counter()
            out = generate([convs[i] for i in active])
            run.generation_time += time.perf_counter() - tic
            run.rounds += 1
            texts = out.texts if isinstance(out, evaluate.Generation) else list(out)
            run.generation_tokens += sum(out.token_counts) if isinstance(out, evaluate.Generation) else 0
            still = []
            for i, text in zip(active, texts, strict=True):
                res = results[i]
                res.texts.append(text)
                pred = parse_prediction(text, fmts[i])
                if pred.attempted_call and pred.valid and res.steps < max_steps:
                    if i not in roots:
                        roots[i] = root_of(queries[i])
                    tic = time.perf_counter()
                    _run_call(sandbox, roots[i], res, pred.tool, pred.arguments, fmts[i])
                    run.tool_time += time.perf_counter() - tic
                    still.append(i)
                    continue
                res.messages.append({"role": "assistant", "content": text})
                res.final = text
                if not pred.attempted_call:
                    res.ended = "answer"
                elif not pred.valid:
                    res.ended, res.tool_errors = "invalid_call", res.tool_errors + 1
                else:
                    res.ended, res.step_limit = "step_limit", True
            active = still
    finally:
        if own:
            sandbox.close()
    run.wall_time = time.perf_counter() - t_start
    return run


def _run_call(sandbox, root: Path | None, res: AgentResult, tool: str, arguments: dict, fmt: str) -> None:
    call_id = f"call_{res.steps}"
    res.messages.append(records.call_message(tool, arguments, fmt, call_id))
    if root is None:
        output = tools.ToolOutput("error", NO_ROOT_OUTPUT)
    else:
        output = sandbox.execute(root, tool, arguments)
    res.tool_errors += not output.ok
    res.messages.append(records.tool_message(tool, output.text, call_id, fmt))
    res.steps += 1


def batched_generator(
    model, tokenizer, *, max_tokens: int = 256, batch_size: int = 32, stop_broken_calls: bool = True
) -> Generate:
    """A round's answers decoded in one batch (:func:`evaluate.generate_batched`, shared prefix)."""

    def generate(convs: list[dict]) -> evaluate.Generation:
        prompts = [rendering.render_messages(tokenizer, c["messages"], c.get("tools")) for c in convs]
        return evaluate.generate_batched(
            model,
            tokenizer,
            convs,
            max_tokens=max_tokens,
            batch_size=batch_size,
            stop_broken_calls=stop_broken_calls,
            prompts=prompts,
        )

    return generate


def plain_generator(model, tokenizer, *, max_tokens: int = 256) -> Generate:
    """A round's answers with one plain ``mlx_lm.generate`` per conversation (the reference)."""

    def generate(convs: list[dict]) -> evaluate.Generation:
        prompts = [rendering.render_messages(tokenizer, c["messages"], c.get("tools")) for c in convs]
        return evaluate.generate_loop(model, tokenizer, convs, max_tokens=max_tokens, prompts=prompts)

    return generate


def agent_loop(
    model,
    tokenizer,
    queries: Sequence[dict],
    root_of: Callable[[dict], Path | None],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_tokens: int = 256,
    batch_size: int = 32,
    stop_broken_calls: bool = True,
    sandbox: tools.Sandbox | None = None,
) -> AgentRun:
    """The loop with every round decoded in one batch. With ``stop_broken_calls`` a call whose
    JSON is already broken stops early: it ends the query as ``invalid_call`` whatever follows,
    and its text is the start of the full decode's (:func:`same_outcome`)."""
    generate = batched_generator(
        model, tokenizer, max_tokens=max_tokens, batch_size=batch_size, stop_broken_calls=stop_broken_calls
    )
    return run_agent(queries, root_of, generate, max_steps=max_steps, sandbox=sandbox)


def agent_loop_plain(
    model,
    tokenizer,
    queries: Sequence[dict],
    root_of: Callable[[dict], Path | None],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_tokens: int = 256,
    sandbox: tools.Sandbox | None = None,
) -> AgentRun:
    """The per-query reference loop: one plain ``mlx_lm.generate`` per query and step (greedy)."""
    generate = plain_generator(model, tokenizer, max_tokens=max_tokens)
    return run_agent(queries, root_of, generate, max_steps=max_steps, sandbox=sandbox)


def same_outcome(a: AgentResult, b: AgentResult) -> bool:
    """The two runs of a query made the same calls and ended the same way with the same text; a
    call stopped early at broken JSON (``a``) matches the full decode it starts (``b``)."""
    if (a.ended, a.steps, a.messages[:-1]) != (b.ended, b.steps, b.messages[:-1]):
        return False
    return a.final == b.final or a.ended == "invalid_call" and b.final.startswith(a.final)


# ---------------------------------------------------------------- scoring

# A path-like run of characters; trailing sentence punctuation is stripped before comparing.
PATH_TOKEN = re.compile(r"[\w.\\/-]+")
# A file name as answers write them: folders, a name and a source or text file extension.
FILE_LIKE = re.compile(
    r"(?:[\w.-]+[\\/])*[\w-][\w.-]*\.(?:pyi?|pyx|md|rst|txt|toml|cfg|ini|json|ya?ml|html?|css|jsx?|tsx?"
    r"|c|h|cc|cpp|hpp|rs|go|java|sh)\b"
)
LINE_AFTER = re.compile(r"[`'\"*]*(?::|#L|\s*[,(]?\s*(?:at\s+|on\s+|in\s+)?lines?\s+)(\d+)", re.IGNORECASE)
LINE_BEFORE = re.compile(
    r"lines?\s+(\d+)(?:\s*[-\u2013]\s*\d+)?\s*(?:of|in)\s+(?:the\s+)?(?:file\s+)?[`'\"]?$", re.IGNORECASE
)
NOT_FOUND = re.compile(
    r"\bno\b|not found|not present|not defined|no match|does not exist|doesn't exist|do not exist"
    r"|couldn't find|could not find|can't find|cannot find|did not find|didn't find|nothing|"
    r"not in the repo|isn't in|is not in|absent",
    re.IGNORECASE,
)


def _path_spans(text: str) -> list[tuple[str, int, int]]:
    """``(normalised path, start, end)`` of each path-like run of ``text``."""
    out = []
    for m in PATH_TOKEN.finditer(text):
        raw = m.group().rstrip(".,:;")
        if raw:
            out.append((tools.norm_path(raw), m.start(), m.start() + len(raw)))
    return out


def _line_near(text: str, start: int, end: int) -> list[int]:
    lines = []
    m = LINE_AFTER.match(text, end)
    if m:
        lines.append(int(m.group(1)))
    m = LINE_BEFORE.search(text[max(0, start - 40) : start])
    if m:
        lines.append(int(m.group(1)))
    return lines


def names_location(text: str, path: str, line: int | None = None, repo: str | None = None) -> bool:
    """``text`` names ``path`` (and, if ``line`` is given, a line within 2 of it next to it)."""
    want = {tools.norm_path(path)} | ({f"{repo}/{tools.norm_path(path)}"} if repo else set())
    for found, start, end in _path_spans(text):
        if found not in want:
            continue
        if line is None or any(abs(n - line) <= LINE_SLACK for n in _line_near(text, start, end)):
            return True
    return False


def named_files(text: str) -> list[str]:
    """Paths of files (a name with an extension) that ``text`` mentions, normalised."""
    return [tools.norm_path(m.group()) for m in FILE_LIKE.finditer(text)]


def says_not_found(text: str) -> bool:
    return bool(NOT_FOUND.search(text))


def trajectory_success(
    record: dict, final_text: str, *, calls: int | None = None, root: Path | None = None
) -> bool:
    """Whether the agent loop's final answer succeeds on ``record`` (the rule in the module doc).
    ``calls``: tool calls the loop ran (a direct question fails with any); ``root``: the
    repository, to check that a "not found" answer names only files that exist."""
    meta = record.get("meta") or {}
    attempted = parse_prediction(final_text or "", record_format(record)).attempted_call
    if attempted:
        return False
    if expected_category(record) == "direct":
        return not calls
    if meta.get("found") is False:
        if not says_not_found(final_text):
            return False
        for f in named_files(final_text):
            target = tools.resolve_inside(root, f) if root is not None else None
            if target is None or not target.is_file():
                return False
        return True
    path = meta.get("path")
    if not path:
        return False
    line = meta.get("line") if isinstance(meta.get("line"), int) else None
    return names_location(final_text, path, line, meta.get("repo"))


def summarize(
    queries: Sequence[dict], run: AgentRun, root_of: Callable[[dict], Path | None] | None = None
) -> dict:
    """Aggregate figures of an agent run: ``trajectory_success`` (share of queries),
    ``mean_steps``, ``tool_errors`` and ``step_limit_hits`` (counts), timings, and per query
    ``success``."""
    success = [
        trajectory_success(q, r.final, calls=r.steps, root=root_of(q) if root_of else None)
        for q, r in zip(queries, run.results, strict=True)
    ]
    n = len(success)
    return {
        "n": n,
        "trajectory_success": sum(success) / n if n else None,
        "mean_steps": sum(r.steps for r in run.results) / n if n else None,
        "tool_errors": sum(r.tool_errors for r in run.results),
        "step_limit_hits": sum(r.step_limit for r in run.results),
        "ended": {
            e: sum(r.ended == e for r in run.results) for e in ("answer", "invalid_call", "step_limit")
        },
        "wall_time": run.wall_time,
        "generation_time": run.generation_time,
        "tool_time": run.tool_time,
        "rounds": run.rounds,
        "success": success,
    }
