"""Direct-answer records about Python's standard library, built from its own docstrings.

A *direct* question is one a coding assistant answers without any repository: "What does
json.dumps do?" or "In Python, how can I remove the common indentation from a multi-line
string?". :func:`build_direct` writes such questions for public functions, classes and methods of
a curated list of well-documented, pure-Python standard-library modules, and answers them in full
sentences from the first paragraph of the definition's docstring ("`textwrap.dedent(text)`
removes any common leading whitespace from every line in `text`.").

The modules are read as text from the running interpreter's library folder and parsed with
``ast``; nothing is imported. Docstrings with examples (``>>>``), literal blocks or too few words
are skipped, and reST/Markdown markup is reduced to plain text with `code` spans. The symbols are
split into two disjoint halves by a hash of their name, so the repository set (``pool="repo"``)
and the domain set (``pool="domain"``) never ask about the same thing. A quarter of the records
answer general questions about the language ("What is the difference between `is` and `==`?")
from hand-written answers in ``stdlib_data/python_facts.yaml``, whose topics are split the same way.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import re
import sysconfig
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from mlx_tune import UserError, records

GENERATOR = "stdlib-direct/1"
POOLS = ("repo", "domain")

# Modules as users write their names. Modules whose public API lives in C (itertools, math, ...)
# have no docstrings in .py files and are left out.
MODULES: tuple[str, ...] = tuple(
    """argparse base64 bisect calendar collections configparser contextlib copy csv dataclasses
    datetime difflib email.utils enum filecmp fnmatch fractions functools glob gzip heapq html
    inspect ipaddress json logging os os.path pathlib pprint queue random re secrets shlex shutil
    statistics string subprocess tempfile textwrap threading traceback typing urllib.parse uuid
    warnings zipfile""".split()
)
# Where a module's source is not <name>.py or <name>/__init__.py; a file missing from this
# interpreter (_pydatetime.py before 3.12) is skipped.
_FILES = {"os.path": ("posixpath.py", "genericpath.py"), "datetime": ("datetime.py", "_pydatetime.py")}

MIN_WORDS = 6  # a first sentence shorter than this says too little to answer from
MAX_ANSWER_CHARS = 480
MAX_NEED_WORDS = 20  # longer summaries make unnatural "how can I ..." questions
MAX_SIGNATURE = 60
NEED_SHARE = 0.7  # of the entries a describe-the-need question fits, the share that gets one
FACT_SHARE = 0.25  # of a pool's direct records, as far as its hand-written facts reach

# Verbs docstrings start with (PEP 257's imperative "Return ..."); a summary starting with one of
# these, or its third-person form, reads as "`name` returns ...".
VERBS = frozenset(
    """acquire add append apply build calculate call cancel change check choose clear close
    collapse combine compare compile compute construct convert copy count create decode decorate
    delegate delete describe deserialize detect determine dispatch divide do dump emit encode ensure
    escape evaluate execute expand extract fetch fill filter find flush format generate get handle
    indent indicate initialize insert install invoke issue iterate join keep load locate lock log
    look make map mark match merge move normalize notify open parse perform pop prepare print
    process produce provide push put quote raise read register release remove rename render replace
    report represent reset resolve restore retrieve return reverse run save search select send
    serialize set shorten show shut skip sort split start stop store strip submit substitute take
    tell test translate truncate try turn unlock unpack unquote unregister update validate wait
    wake walk wrap write yield""".split()
)
# A summary starting with one of these nouns is a definition: "Decorator to ..." -> "is a decorator".
NOUN_HEADS = frozenset(
    """abstract async base callable class container context decorator dict dictionary dummy enum
    exception factory function iterator mapping mixin new object subclass variant wrapper""".split()
)
_SKIP_START = re.compile(r"(?:Like|See|Same|Alias|Equivalent|Deprecated|Obsolete|Don't|Used)\b")
_CLEAR_VERBS = frozenset(
    "build close compute convert create extract insert keep make open parse produce raise release "
    "remove return write yield".split()
)
_AVOID = re.compile(
    r"deprecated|internal|private|undocumented|helper|backward|compatib|XXX|TODO|\bhack\b|"
    r"subclasses? (?:should|must)|override|not (?:be )?(?:called|used) directly",
    re.IGNORECASE,
)
_ROLE = re.compile(r":[\w:.-]+:`!?(~?)([^`<]*?)\s*(?:<([^>`]+)>)?`")


@dataclass(frozen=True)
class Entry:
    """One documented definition: ``symbol`` is ``module.qualname``."""

    module: str
    symbol: str
    kind: str  # function, class or method
    signature: str  # "(text)" or "" when too long to help
    summary: str  # the first sentence, cleaned
    rest: str  # the rest of the first paragraph, cleaned (may be empty)


# ---------------------------------------------------------------- reading docstrings


def clean_paragraph(doc: str) -> str | None:
    """The first paragraph of a docstring as plain text, or ``None`` if it is not usable prose
    (examples, literal blocks, directives, a lead-in to a list, wording that marks it internal)."""
    para = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    if re.search(r"deprecated", doc, re.IGNORECASE) or _SKIP_START.match(para):
        return None
    if re.search(r">>>|::|^\s*\.\. |^\s*[-*+] |\|", para, re.MULTILINE) or _AVOID.search(para):
        return None
    text = " ".join(para.split())
    text = _ROLE.sub(lambda m: f"`{_role_target(m)}`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    text = re.sub(r"`([^`' ]+)'", r"`\1`", text)  # old-style `quotes'
    text = re.sub(r"`([^`]+)`_", r"\1", text)
    text = re.sub(r"(?<![\w*`])\*\*?([A-Za-z][^*]*?)\*\*?(?![\w*])", r"\1", text)
    if "``" in text or re.search(r":\w+:`", text) or text.count("`") % 2 or text.endswith(":"):
        return None
    return text if re.search(r"[.!?]$", text) else text.rstrip(";,") + "."


def _role_target(m: re.Match) -> str:
    """The text a reST role shows: ``:func:`~a.b``` -> ``b``, ``:ref:`title <target>``` -> title."""
    short, title, target = m.groups()
    if target and not title:
        return target.rsplit(".", 1)[-1]
    return title.rsplit(".", 1)[-1] if short else title


def split_summary(text: str) -> tuple[str, str]:
    """``(first sentence, the rest)``; sentences end with ". " before a capital or a backtick."""
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?]\s+(?=[A-Z`])", text)
    if not m:
        return text, ""
    return text[: m.end()].strip(), text[m.end() :].strip()


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | None, drop_first: bool) -> str:
    if node is None:
        return ""
    args = ast.arguments(**{f: getattr(node.args, f) for f in node.args._fields})
    if drop_first and args.posonlyargs:
        args.posonlyargs = args.posonlyargs[1:]
    elif drop_first:
        args.args = args.args[1:]
    # parameters named with a leading underscore are implementation details (copy.deepcopy's _nil)
    n_private = sum(a.arg.startswith("_") for a in args.args[len(args.args) - len(args.defaults) :])
    if n_private and all(a.arg.startswith("_") for a in args.args[-n_private:]):
        args.args, args.defaults = args.args[:-n_private], args.defaults[:-n_private]
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None:
            a.annotation = None
    # a private sentinel default (section=_UNSET) means nothing to a reader: show it as ...
    args.defaults = [_public_default(d) for d in args.defaults]
    args.kw_defaults = [d if d is None else _public_default(d) for d in args.kw_defaults]
    text = f"({ast.unparse(args)})"
    return text if len(text) <= MAX_SIGNATURE else ""


def _public_default(node: ast.expr) -> ast.expr:
    return ast.Constant(...) if ast.unparse(node).startswith("_") else node


def _public_names(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                return set(ast.literal_eval(node.value))
            except (ValueError, TypeError):  # not a literal, or not a list of names
                return None
    return None


def _decorated_away(node: ast.AST) -> bool:
    """Properties, overloads and other wrappers whose docstring is not a plain call's."""
    names = [d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "") for d in node.decorator_list]
    return any(n not in ("staticmethod", "classmethod", "wraps", "_wraps") for n in names)


def _entry(module: str, qualname: str, kind: str, node: ast.AST, signature: str) -> Entry | None:
    doc = ast.get_docstring(node, clean=True)
    text = clean_paragraph(doc) if doc else None
    if not text:
        return None
    summary, rest = split_summary(text)
    if len(summary.split()) < MIN_WORDS or not summary[0].isupper() or len(summary) > MAX_ANSWER_CHARS:
        return None
    rest = rest if len(summary) + len(rest) <= MAX_ANSWER_CHARS else ""
    return Entry(module, f"{module}.{qualname}", kind, signature, summary, rest)


def module_entries(module: str, source: str) -> list[Entry]:
    """The usable documented public definitions of one module's source text (none for text that
    ``ast`` cannot take: not Python, or nested too deeply to parse or unparse)."""
    try:
        tree = ast.parse(source)
        public = _public_names(tree)
        out = []
        for node in tree.body:
            skip = not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_")
            if skip or (public is not None and node.name not in public) or _decorated_away(node):
                continue
            if isinstance(node, ast.FunctionDef):
                out.append(_entry(module, node.name, "function", node, _signature(node, False)))
                continue
            init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"] or [None]
            out.append(_entry(module, node.name, "class", node, _signature(init[0], True)))
            for meth in node.body:
                if isinstance(meth, ast.FunctionDef) and not meth.name.startswith("_"):
                    if not _decorated_away(meth):
                        static = any(getattr(d, "id", "") == "staticmethod" for d in meth.decorator_list)
                        sig = _signature(meth, not static)
                        out.append(_entry(module, f"{node.name}.{meth.name}", "method", meth, sig))
        return [e for e in out if e is not None]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []


@functools.lru_cache(maxsize=4)
def all_entries(stdlib_dir: str | None = None) -> tuple[Entry, ...]:
    """Every usable entry of :data:`MODULES` under ``stdlib_dir`` (default: this interpreter's
    library), sorted by symbol; the first file of a module wins for a name defined twice, and
    the first symbol for a summary that several share."""
    base = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    found: dict[str, Entry] = {}
    for module in MODULES:
        rel = module.replace(".", "/")
        for file in _FILES.get(module, (f"{rel}.py", f"{rel}/__init__.py")):
            path = base / file
            if not path.is_file():
                continue
            for e in module_entries(module, path.read_text(encoding="utf-8")):
                found.setdefault(e.symbol, e)
    # a summary shared by several names (an alias, an override) would give one question two answers
    unique: dict[str, Entry] = {}
    for e in sorted(found.values(), key=lambda e: e.symbol):
        unique.setdefault(e.summary.lower(), e)
    return tuple(unique.values())


def pool_of(symbol: str) -> str:
    """``repo`` or ``domain``: the half of the symbols a name belongs to (stable across runs)."""
    return POOLS[int(hashlib.sha256(symbol.encode()).hexdigest(), 16) % 2]


def pool_entries(pool: str = "repo", stdlib_dir: str | None = None) -> list[Entry]:
    """The entries of one pool."""
    if pool not in POOLS:
        raise UserError(f"pool: {pool!r} is not one of {', '.join(POOLS)}")
    return [e for e in all_entries(stdlib_dir) if pool_of(e.symbol) == pool]


# ---------------------------------------------------------------- questions and answers


def _verb_form(word: str) -> str | None:
    """``"returns"`` for an imperative ``"Return"``, the word itself if it is already third
    person, ``None`` if the summary does not start with a known verb."""
    w = word.lower()
    if w in VERBS:
        if re.search(r"(s|sh|ch|x|z|o)$", w):  # do -> does
            return w + "es"
        if re.search(r"[^aeiou]y$", w):
            return w[:-1] + "ies"
        return w + "s"
    for stem in (w[:-1], w[:-2], w[:-3] + "y" if w.endswith("ies") else ""):
        if stem in VERBS and _verb_form(stem) == w:
            return w
    return None


def _code(e: Entry) -> str:
    return f"`{e.symbol}{e.signature}`"


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _need(e: Entry) -> str | None:
    """The summary as something a user wants to do ("remove any common leading whitespace ..."),
    or ``None`` if it does not read as one."""
    first, _, tail = e.summary.partition(" ")
    if first.lower() not in VERBS or not _leading_verb(e) or len(e.summary.split()) > MAX_NEED_WORDS:
        return None
    if re.search(r"\b(self|this|these|it|its|us)\b|\(see|\. ", tail, re.IGNORECASE):
        return None
    verb = "get" if first.lower() in ("return", "yield") else first.lower()
    return f"{verb} {tail.rstrip('.!?')}"


def _conjugate_and(tail: str) -> str:
    """ "and return ..." -> "and returns ...", after the summary's first verb or anywhere for a
    word that is only ever a verb here ("Take an IP string and return an object")."""

    def fix(m: re.Match) -> str:
        word = m.group(2)
        if m.start() == 0 or word.lower() in _CLEAR_VERBS:
            return f"{m.group(1)} {_verb_form(word) or word}"
        return m.group(0)

    return re.sub(r"\b(and|or) (\w+)\b", fix, tail)


def _leading_verb(e: Entry) -> str | None:
    """The summary's first word as a verb ("returns"), or ``None``; a class's own name is a noun
    ("Filter instances are used ..." of logging.Filter)."""
    first = e.summary.split(" ", 1)[0]
    own_name = e.kind == "class" and first.lower() == e.symbol.rsplit(".", 1)[-1].lower()
    return None if own_name else _verb_form(first)


def describe(e: Entry) -> str:
    """The answer's description: "`json.dumps(obj)` serializes ..." plus the paragraph's rest."""
    first, _, tail = e.summary.partition(" ")
    verb = _leading_verb(e)
    if verb and tail:
        tail = _conjugate_and(tail)
        head = f"{_code(e)} {verb} {tail}"
    elif first == "Raised" and e.kind == "class":
        head = f"{_code(e)} is raised {tail}"
    elif first == "Whether" and e.kind != "class":
        head = f"{_code(e)} returns whether {tail}"
    elif _is_noun_phrase(e):
        head = f"{_code(e)} is {_noun_phrase(e)}"
    else:
        head = f"{_code(e)} is part of the {e.module} module. Its documentation says: {e.summary}"
    return f"{head} {e.rest}".strip()


def _noun_phrase(e: Entry) -> str:
    """A noun-phrase summary with its article: "a dict subclass for counting hashable items."."""
    first, _, tail = e.summary.partition(" ")
    phrase = tail if first in ("A", "An") else _lower_first(e.summary)
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _is_noun_phrase(e: Entry) -> bool:
    """True for a summary that names what a class is ("Dict subclass for counting ...", "An
    abstract base class for ..."), so that "`X` is a ..." reads well. A summary that names the
    class itself ("A ChainMap groups ...") is a sentence, not a noun phrase."""
    words = e.summary.split()
    if e.symbol.rsplit(".", 1)[-1] in words[1:3]:
        return False
    if words[0] in ("A", "An"):
        return e.kind == "class" and not re.search(r"\b(is|are|was|were|has|had|have)\b", e.summary)
    return words[0].lower() in NOUN_HEADS


# (template id, applies to, question). {q} symbol, {name} last part, {module}, {cls} class,
# {need} the need phrase, {what} function/class/method.
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("what-does", "callable", "What does {q} do?"),
    ("what-is", "class", "What is {q} in Python?"),
    ("used-for", "any", "In Python, what is {q} used for?"),
    ("explain", "callable", "Can you explain what `{q}()` does?"),
    ("module-member", "function", "What is the {name} function in Python's {module} module?"),
    ("class-in", "class", "What is the {name} class in the {module} module for?"),
    ("method-of", "method", "What does the {name} method of {cls} do?"),
    ("how-call", "signature", "How do I call {q}, and what does it do?"),
    ("need-how", "need", "In Python, how can I {need}?"),
    ("need-stdlib", "need", "Is there something in Python's standard library to {need}?"),
    ("need-which", "need", "Which {what} in Python's {module} module can I use to {need}?"),
    ("need-want", "need", "I want to {need} in Python. What should I use?"),
    ("noun-which", "noun", "Which class in Python's {module} module is {noun}?"),
    ("noun-stdlib", "noun", "Does the Python standard library have {noun}?"),
)


# the entries each "applies to" kind of QUESTIONS fits
_APPLIES = {
    "any": lambda e: True,
    "callable": lambda e: e.kind in ("function", "method"),
    "signature": lambda e: e.kind == "function" and bool(e.signature),
    "need": lambda e: _need(e) is not None,
    "noun": lambda e: e.kind == "class" and _is_noun_phrase(e) and len(e.summary.split()) <= MAX_NEED_WORDS,
    **{kind: lambda e, kind=kind: e.kind == kind for kind in ("function", "class", "method")},
}


def question_answer(e: Entry, rng: random.Random) -> tuple[str, str, str]:
    """``(template id, question, answer)`` for one entry, the template chosen with ``rng``;
    describe-the-need questions (no name in them) get :data:`NEED_SHARE` of the draws where they fit."""
    shapes = [s for s in QUESTIONS if _APPLIES[s[1]](e)]
    needs = [s for s in shapes if s[1] in ("need", "noun")]
    named = [s for s in shapes if s[1] not in ("need", "noun")]
    tid, kind, text = rng.choice(needs if needs and rng.random() < NEED_SHARE else named)
    parts = e.symbol[len(e.module) + 1 :].split(".")
    question = text.format(
        q=e.symbol,
        name=parts[-1],
        module=e.module,
        cls=f"{e.module}.{parts[0]}",
        need=_need(e) or "",
        noun=_noun_phrase(e).rstrip(".") if kind == "noun" else "",
        what=e.kind,
    )
    answer = describe(e)
    if kind in ("need", "noun"):  # the name comes first, then the description goes on with "It ..."
        it = answer.removeprefix(f"{_code(e)} ")
        answer = f"Use {_code(e)} from the {e.module} module. " + (f"It {it}" if it != answer else answer)
    return f"direct.stdlib.{tid}", question, answer


@functools.lru_cache(maxsize=1)
def python_facts() -> tuple[dict, ...]:
    """The hand-written language facts, each with its ``pool``: the sorted topics alternate
    between ``repo`` and ``domain``."""
    text = (resources.files(__package__) / "stdlib_data" / "python_facts.yaml").read_text(encoding="utf-8")
    facts = sorted(yaml.safe_load(text), key=lambda f: f["topic"])
    return tuple({**f, "pool": POOLS[i % 2]} for i, f in enumerate(facts))


def _meta(template: str, source: str, symbol: str, kind: str, origin: str) -> dict:
    meta = {"category": "direct", "origin": origin, "source": source, "generator": GENERATOR}
    return meta | {"template": template, "style": "direct", "shape": "direct", "symbol": symbol, "kind": kind}


def build_direct(
    n: int, *, seed: int = 0, fmt: str = "tools", pool: str = "repo", stdlib_dir: str | None = None
) -> list[dict]:
    """Up to ``n`` direct records of ``pool`` in a seeded order: about :data:`FACT_SHARE` of them
    language facts, the rest docstring answers about distinct standard-library symbols. The same
    interpreter and seed give the same records."""
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    if n < 0:
        raise UserError(f"--direct: {n} is negative")
    entries = pool_entries(pool, stdlib_dir)
    facts = [f for f in python_facts() if f["pool"] == pool]
    n_facts = min(len(facts), max(round(n * FACT_SHARE), n - len(entries)))
    rng = random.Random(seed)
    out = []
    for f in rng.sample(facts, n_facts):
        qi = rng.randrange(len(f["questions"]))
        meta = _meta(
            f"direct.python.{f['topic']}.{qi}", "python:language", f["topic"], "concept", "synthetic"
        )
        out.append(records.direct_record(f["questions"][qi], " ".join(f["answer"].split()), meta, fmt))
    for e in rng.sample(entries, min(n - n_facts, len(entries))):
        template, question, answer = question_answer(e, rng)
        meta = _meta(template, f"stdlib:{e.module}", e.symbol, e.kind, "real")
        out.append(records.direct_record(question, answer, meta, fmt))
    rng.shuffle(out)
    return out
