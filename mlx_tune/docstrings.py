"""Docstring text for questions and answers: markup stripped, the first sentence, its verb phrase.

A docstring is source text written for Sphinx or Markdown renderers; a question or an answer
needs a plain sentence. :func:`clean_docstring` strips the markup, :func:`summary` takes the
first sentence when it says enough (at least :data:`MIN_WORDS` words), and :func:`phrases`
turns it into the verb phrases a question is built from ("Strip ANSI styling." -> infinitive
"strip ANSI styling", third person "strips ANSI styling"). Also here: which imports and
decorators belong to Python itself (standard library, builtins), since questions about them
teach nothing about the repository.
"""

from __future__ import annotations

import builtins
import re
import sys

MIN_WORDS = 6
MAX_WORDS = 22

STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
# Decorators whose bare name usually comes from the standard library (``from functools import wraps``).
STDLIB_DECORATORS = frozenset(
    "property staticmethod classmethod dataclass wraps lru_cache cache cached_property total_ordering "
    "singledispatch singledispatchmethod abstractmethod abstractproperty overload final override "
    "contextmanager asynccontextmanager runtime_checkable unique no_type_check".split()
)

# Imperative verbs a docstring summary commonly starts with ("Return ...", "Build ...").
VERBS = frozenset(
    "accept add adjust align allocate allow append apply assign attach build cache calculate call "
    "cancel capture check choose clean clear close collect combine compare compile compute configure "
    "connect construct contain convert copy count create decide decode define delete describe detect "
    "determine disable dispatch display download drop dump emit enable encode ensure escape evaluate "
    "execute expand export extend extract fetch fill filter find finish fix flatten flush format "
    "generate get group guess handle hold ignore implement import include indent initialize insert "
    "inspect install iterate join keep list load lock log look lookup make map mark match merge "
    "modify move normalize normalise open output pack pad parse pass patch pick prepare print process "
    "produce provide push put quote raise read rebuild record reduce refresh register reject release "
    "remove rename render repeat replace report represent request reset resolve restore retrieve "
    "return run sanitize save scan search select send serialize set show skip sort split start store "
    "strip subscribe substitute swap take tell test tokenize track transform translate truncate try "
    "turn unpack unregister unwrap update upload validate verify visit wait walk wrap write yield".split()
)
_RULE = re.compile(r"[-=~^*#+]{3,}")  # a reST heading underline or a Markdown rule
_STOP = frozenset(
    "a an the of to for from in on at by with and or not is are be as it its this that these those "
    "if else when into onto than then which who whose what there their them they we you your our "
    "any all each every some given new one two via per such can may must should would will do does".split()
)


def clean_docstring(doc: str | None) -> str:
    """``doc`` as plain text: reST roles (``:func:`x``` -> x), literals (````x```` -> x),
    emphasis, links and directives (``.. note::`` lines), doctest (``>>>``) lines and
    Markdown code fences removed; paragraphs kept (blank-line separated), lines joined."""
    if not doc:
        return ""
    lines, fence = [], False
    directive = None  # indent of a ``.. note::`` whose indented block is being skipped
    doctest = False  # inside a ``>>>`` example (it runs to the next blank line)
    for raw in doc.expandtabs().splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if line.startswith("```"):
            fence = not fence
            continue
        if directive is not None and (not line or indent > directive):
            continue
        directive = None
        doctest = doctest and bool(line)
        if fence or doctest or _RULE.fullmatch(line):
            continue
        if line.startswith(">>>"):
            doctest = True
            continue
        if line.startswith(".. "):
            directive = indent
            continue
        lines.append(line)
    text = "\n".join(lines)
    if "`" not in text and "*" not in text and "](" not in text:
        return _paragraphs(text)
    text = re.sub(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # :func:`~a.b` / :ref:`t <x>`
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_{1,2}", r"\1", text)  # `text <url>`_
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # [text](url)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"(?<![\w*])\*\*([^*\n]+)\*\*(?!\w)", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?!\w)", r"\1", text)
    return _paragraphs(text)


def _paragraphs(text: str) -> str:
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def sentences(text: str) -> list[str]:
    """The sentences of one paragraph (split after ``.``/``!``/``?`` followed by a capital)."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z`\"'(])", " ".join(text.split()))
    return [p for p in parts if p]


def summary(doc: str | None, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """The first sentence of the cleaned docstring, ending in a full stop, or ``None`` when it has
    fewer than ``min_words`` or more than ``max_words`` words or is not prose (a header such as
    ``pkg.module`` or ``Args:``)."""
    text = clean_docstring(doc)
    if not text:
        return None
    # Skip a header paragraph that is only the module's dotted name (``pygments.lexers``).
    paragraphs = [p for p in text.split("\n\n") if not re.fullmatch(r"[\w.]+", p)]
    first = sentences(paragraphs[0]) if paragraphs else []
    if not first:
        return None
    sentence = first[0].rstrip(":")
    words = sentence.split()
    if not (min_words <= len(words) <= max_words) or not re.match(r"[A-Za-z]", sentence):
        return None
    if re.fullmatch(r"[\w.]+", words[0]) and "." in words[0] or words[0].endswith(":"):
        return None
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


def third_person(verb: str) -> str:
    """``strip`` -> ``strips``, ``match`` -> ``matches``, ``apply`` -> ``applies``."""
    if verb in ("do", "go"):
        return verb + "es"
    if verb.endswith(("s", "x", "z", "ch", "sh")):
        return verb + "es"
    if len(verb) > 2 and verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def base_form(verb: str) -> str | None:
    """The infinitive of a third-person verb from :data:`VERBS` (``returns`` -> ``return``)."""
    for cut, add in (("ies", "y"), ("es", ""), ("s", "")):
        if verb.endswith(cut) and verb[: -len(cut)] + add in VERBS:
            return verb[: -len(cut)] + add
    return None


def phrases(sentence: str) -> dict[str, str] | None:
    """Verb phrases of a summary sentence: ``{"inf": "strip ANSI styling", "third": "strips ANSI
    styling", "noun": ...}``; a noun-phrase summary ("A request as ...") gives only ``noun``.
    ``None`` when the sentence starts with neither a known verb nor an article."""
    body = sentence.rstrip(".!?").strip()
    first, _, rest = body.partition(" ")
    word = first.lower()
    if not rest:
        return None
    if word in ("a", "an", "the"):
        return {"noun": _lower_first(body)}
    if word in VERBS:
        return {"inf": f"{word} {rest}", "third": f"{third_person(word)} {rest}"}
    base = base_form(word)
    if base:
        return {"inf": f"{base} {rest}", "third": f"{word} {rest}"}
    return None


def _lower_first(text: str) -> str:
    # Keep acronyms ("HTML parser") as they are.
    return text if re.match(r"[A-Z]{2}", text) else text[:1].lower() + text[1:]


def content_words(text: str) -> list[str]:
    """Words of ``text`` worth searching for: letters only, 4+ characters, not stop words, not
    the leading verb; in order of appearance, without repeats."""
    words = re.findall(r"[A-Za-z][A-Za-z-]*[A-Za-z]", text)
    out = []
    for i, w in enumerate(words):
        lower = w.lower()
        if i == 0 or len(w) < 4 or lower in _STOP or lower in VERBS or base_form(lower) or w in out:
            continue
        out.append(w)
    return out


def name_parts(name: str) -> list[str]:
    """The words of an identifier: ``strip_ansi`` -> ``[strip, ansi]``, ``HTMLFormatter`` ->
    ``[HTML, Formatter]``."""
    out = []
    for chunk in name.split("_"):
        out.extend(re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", chunk))
    return [p for p in out if p]


def is_stdlib_module(module: str) -> bool:
    """True for a module of the standard library (or ``__future__``), by its top-level name."""
    return module.split(".", 1)[0] in STDLIB


def is_python_decorator(head: str, imported_from: dict[str, str] | None = None) -> bool:
    """True for a builtin or standard-library decorator: ``property``, ``functools.wraps``, or a
    bare name the file imports from a standard-library module (``imported_from`` maps a name to
    its module)."""
    first = head.split(".", 1)[0]
    if first in STDLIB or head in STDLIB_DECORATORS or hasattr(builtins, first):
        return True
    module = (imported_from or {}).get(first)
    return module is not None and is_stdlib_module(module)
