"""The local text the tiny model learns from: its tokenizer corpus and its pretraining corpus.

Everything comes from files already on the machine (no download):

- plain text: the ``.py``/``.md`` files of a few installed packages (:data:`CORPUS_PACKAGES`);
- plain chat turns: questions about those packages' public functions and classes answered from
  their docstrings, rendered through Qwen2.5's chat template *without tools*, the way an instruct
  model has seen ordinary conversations. They never call a tool: when to search is what the
  fine-tune has to teach, so the base must not know it;
- the suite's prompt scaffold (system prompt and tools block), for the tokenizer only.

Sources are parsed with :mod:`ast`, never imported or executed.
"""

from __future__ import annotations

import ast
import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

from mlx_tune import UserError, docstrings, fileio

CORPUS_PACKAGES = ("click", "jinja2", "markupsafe", "yaml", "jsonlines", "tqdm")
SCAFFOLD_REPEAT = 50  # weight of the prompt scaffold in the tokenizer corpus

# Plain questions a user asks an assistant about a library; the answer is the docstring's summary.
CHAT_QUESTIONS = (
    "What does {name} do?",
    "What is {name} for?",
    "Can you explain {name} from {package}?",
    "In {package}, what does {name} do?",
    "Briefly, what is the purpose of {name}?",
    "I keep seeing {name} in {package} code. What is it?",
)
CHAT_ANSWERS = (
    "`{name}`: {summary}",
    "{summary}",
    "In {package}, `{name}` is documented as follows. {summary}",
)


def default_corpus_files(packages: tuple[str, ...] = CORPUS_PACKAGES) -> list[Path]:
    """The ``.py`` and ``.md`` files of the installed ``packages`` (missing ones are skipped),
    in a stable order. Found via importlib; nothing is imported or executed."""
    files: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in sorted(spec.submodule_search_locations):
            root_path = Path(root)
            found = [p for p in root_path.rglob("*") if p.suffix in (".py", ".md") and p.is_file()]
            files.extend(sorted(found, key=lambda p: p.relative_to(root_path).as_posix()))
    return files


def _package_of(path: Path) -> str:
    for parent in path.parents:
        if not (parent / "__init__.py").is_file():
            return path.relative_to(parent).parts[0]
    return path.stem


def documented_names(path: Path, text: str) -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring summary)`` of the public top-level functions and classes (and
    public methods of those classes) of one source file; a file ``ast`` cannot parse yields nothing."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith("_"):
            continue
        found = docstrings.summary(ast.get_docstring(node))
        if found:
            yield node.name, found
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith(
                    "_"
                ):
                    found = docstrings.summary(ast.get_docstring(item))
                    if found:
                        yield f"{node.name}.{item.name}", found


def chat_turns(files: list[Path], seed: int = 0, limit: int = 4000) -> list[list[dict]]:
    """Plain conversations (user question, assistant answer; no system prompt, no tools) about the
    documented names in ``files``, at most ``limit``, in a seeded order."""
    rng = random.Random(seed)
    turns: list[list[dict]] = []
    seen: set[str] = set()
    for path in files:
        if path.suffix != ".py":
            continue
        package = _package_of(path)
        for name, summary in documented_names(path, path.read_text(encoding="utf-8", errors="replace")):
            if summary in seen:  # an alias or an override would teach one answer twice
                continue
            seen.add(summary)
            fields = {"name": name, "package": package, "summary": summary}
            question = rng.choice(CHAT_QUESTIONS).format(**fields)
            answer = rng.choice(CHAT_ANSWERS).format(**fields)
            turns.append([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
    rng.shuffle(turns)
    return turns[:limit]


def file_texts(path: Path, render_chat) -> Iterator[str]:
    """A corpus file as text: JSONL records are rendered through the chat template."""
    if not path.is_file():
        raise UserError(f"{path}: no such corpus file")
    if path.suffix == ".jsonl":
        for lineno, record in fileio.iter_jsonl(path):
            messages = record.get("messages")
            if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
                raise UserError(
                    f"{path}:{lineno}: messages: missing or empty (corpus JSONL must hold chat records)"
                )
            try:
                yield render_chat(messages, record.get("tools"))
            except Exception as e:  # a malformed message (no role, no content) fails in the template
                raise UserError(f"{path}:{lineno}: messages: cannot be rendered ({e})") from None
    else:
        yield path.read_text(encoding="utf-8", errors="replace")


def scaffold_texts(render_chat) -> list[str]:
    """The suite's prompt scaffold (system prompt + tools block) so the tokenizer learns it.
    It holds no answers: only the part every prompt starts with."""
    from mlx_tune import records

    return [
        render_chat(
            [{"role": "system", "content": records.SYSTEM_PROMPT}, {"role": "user", "content": "Hi."}],
            records.TOOLS,
            add_generation_prompt=True,
        ),
        render_chat(
            [{"role": "system", "content": records.CODE_SYSTEM_PROMPT}, {"role": "user", "content": "Hi."}],
            add_generation_prompt=True,
        ),
    ]


def load_corpus(corpus: list[Path] | None, max_chars: int, render_chat) -> tuple[list[str], list[str]]:
    """``(tokenizer_texts, pretrain_texts)``. The tokenizer learns from the package files, the
    plain chat turns, the scaffold and every given file. Pretraining reads the package files, the
    plain chat turns and given non-JSONL files; never the given chat records (task data), so the
    base does not learn the task before its fine-tune."""
    files = default_corpus_files()
    plain: list[str] = []
    total = 0
    for path in files:
        if total >= max_chars:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        plain.append(text)
        total += len(text)
    chats = [render_chat(turn) for turn in chat_turns(files)]
    given: list[str] = []
    for path in corpus or []:
        path = Path(path)
        (given if path.suffix == ".jsonl" else plain).extend(file_texts(path, render_chat))
    return plain + chats + given + scaffold_texts(render_chat) * SCAFFOLD_REPEAT, plain + chats
