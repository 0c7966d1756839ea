"""Grounded drafts of repository examples: a question, the tool calls with their real output,
and an answer that says only what that output shows.

:class:`Planner` holds one repository (its symbols from :mod:`mlx_tune.data.extract` and a
:class:`~mlx_tune.data.repo_index.RepoIndex`) and turns candidates into :class:`Draft` s, one
method per kind: ``behaviour`` (find a definition from what it does), ``named`` (from its
name), ``explain`` (grep to locate, read the lines, explain), ``usage``, ``import``,
``decorator``, ``ambiguous`` (a name defined in several files: the answer lists them),
``negative`` (a name or capability the repository lacks: the search comes back empty),
``file`` and ``line`` (read a file the question names). A draft whose search does not show the
expected line, or shows too many, is dropped. Question wording comes from
:mod:`mlx_tune.data.example_templates`; among the templates that fit, the planner prefers one whose
masked question (:func:`mlx_tune.data.data_quality.mask_question`) no other record has yet.
"""

from __future__ import annotations

import random
import re

from mlx_tune import docstrings
from mlx_tune.data import code_facts
from mlx_tune.data.data_quality import mask_question
from mlx_tune.data.drafts import MAX_HITS, Draft, HitListDrafts, Sym, meta_of
from mlx_tune.data.example_templates import CLOSERS, OPENERS, TEMPLATES
from mlx_tune.data.extract import FileInfo
from mlx_tune.data.repo_index import RepoIndex

WINDOW = 30  # lines an explaining read shows
SYNONYMS = {"strip": "remove", "remove": "delete", "parse": "read", "load": "read", "make": "build",
            "build": "create", "get": "fetch", "render": "format", "format": "render"}  # fmt: skip


class Planner(HitListDrafts):
    """Draft builders for one repository; ``masks`` is shared across repositories."""

    def __init__(self, repo: str, index: RepoIndex, files: list[FileInfo], rng: random.Random, masks: set):
        self.repo, self.index, self.rng, self.masks = repo, index, rng, masks
        self.files = [f for f in files if f.status == "ok" and index.has(f.path)]
        self.syms: list[Sym] = []
        self.defs: dict[str, list[Sym]] = {}
        self.decorators: dict[str, str] = {}  # decorator text -> first file using it
        self.imports: dict[str, str] = {}  # module -> first importing file
        self.users: dict[str, list[str]] = {}  # imported name -> importing files
        for f in self.files:
            local = {n: i.module for i in f.imports for n in i.names}
            for c in f.classes:
                self._add(Sym(c.name, c.qualname, "class", f.path, c.lineno, c.docstring))
            for fn in f.functions:
                self._add(Sym(fn.name, fn.qualname, fn.kind, f.path, fn.lineno, fn.docstring))
                for d in fn.decorators:
                    head = d.split("(", 1)[0]
                    if not re.fullmatch(r"[A-Za-z]\w*(?:\.[A-Za-z]\w*)*", head):
                        continue
                    if not docstrings.is_python_decorator(head, local):
                        self.decorators.setdefault(self._decorator_source(f.path, fn.lineno, head), f.path)
            for i in f.imports:
                private = any(p.startswith("_") for p in i.module.split("."))
                if i.level == 0 and i.module and not private and not docstrings.is_stdlib_module(i.module):
                    self.imports.setdefault(i.module, f.path)
                for n in i.names:
                    self.users.setdefault(n, []).append(f.path)

    def _decorator_source(self, path: str, def_line: int, head: str) -> str:
        """The decorator as the source writes it (``route("/items")``) when it fits on one line
        above the ``def``, else its ``head``: ``ast.unparse`` respells quotes and spacing."""
        lines = self.index.lines(path)
        n = def_line - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("@"):
            text = lines[n - 1].strip()[1:].split("  #", 1)[0].strip()
            if (
                text.startswith(head)
                and text[len(head) : len(head) + 1] in ("", "(")
                and text.count("(") == text.count(")")
            ):
                return text
            n -= 1
        return head

    def _add(self, sym: Sym) -> None:
        if any(p.startswith("_") for p in sym.qual.split(".")):
            return  # private names and dunders teach nothing about the repository's interface
        self.syms.append(sym)
        self.defs.setdefault(sym.name, []).append(sym)

    # ------------------------------------------------------------ candidate pools

    def pools(self) -> dict[str, list]:
        """Candidates by kind, each list shuffled with the planner's random stream."""
        unique = [s for s in self.syms if len(self.defs[s.name]) == 1]
        funcs = [s for s in self.syms if s.kind != "class"]
        out = {
            # Whether a docstring gives a usable phrase is checked when a symbol's turn comes.
            "behaviour": [s for s in self.syms if s.doc],
            "explain": [s for s in funcs if s.doc],
            "named": [s for s in unique if s.kind != "method"],
            "usage": [s for s in unique if s.kind != "method" and s.name in self.users],
            "import": sorted(self.imports),
            "decorator": sorted(self.decorators),
            "ambiguous": sorted(n for n, d in self.defs.items() if 2 <= len({s.path for s in d}) <= 6),
            "negative": ["feature", "name"] * max(1, min(20, len(self.syms) // 10)),
            "file": [f for f in self.files if f.path.endswith(".py")],
            "line": funcs,
        }
        for items in out.values():
            self.rng.shuffle(items)
        return out

    def draft(self, kind: str, item) -> Draft | None:
        return getattr(self, "_" + kind)(item)

    # ------------------------------------------------------------ wording

    def ask(self, intent: str, fields: dict, symbol: str | None = None) -> tuple[str, str] | None:
        """A question for ``intent`` and its template id, preferring an unseen masked form."""
        fields = {"repo": self.repo, **fields}
        names = [p for p in (symbol or "").split(".") if p]
        options = []
        for i, template in enumerate(TEMPLATES[intent]):
            try:
                options.append((i, template.format(**fields)))
            except KeyError:
                continue
        self.rng.shuffle(options)
        # A sentence shape not used yet beats a new opener or closer around a used one. A shape is
        # the template with its free-text fields (names, paths and lines get masked anyway).
        text = "|".join(str(fields.get(k, "")) for k in ("third", "inf", "noun", "feature"))
        options.sort(key=lambda o: f"shape:{intent}.{o[0]}|{text}" in self.masks)
        fallback = None
        for i, core in options:
            for _ in range(3):
                question = self._wrap(core)
                key = mask_question(question, names)
                if key not in self.masks:
                    self.masks.update((key, f"shape:{intent}.{i}|{text}"))
                    return question, f"{intent}.{i}"
                fallback = fallback or (question, f"{intent}.{i}")
        return fallback

    def _wrap(self, core: str) -> str:
        opener = self.rng.choice(OPENERS).format(repo=self.repo)
        if opener.endswith((", ", ": ")) and not re.match(r"I\b|I'", core):
            core = core[:1].lower() + core[1:]
        return opener + core + self.rng.choice(CLOSERS)

    def _finish(self, asked, steps, answer, shape, **meta) -> Draft | None:
        if asked is None:
            return None
        return Draft(asked[0], asked[1], steps, answer, shape, meta)

    # ------------------------------------------------------------ grep -> answer

    def _find(self, pattern: str, needles: tuple[str, ...], sym: Sym, path: str = ".", window: int = 0):
        """The grep output if it shows ``sym``'s line (or a line up to ``window`` below) among at
        most :data:`MAX_HITS` hits, else ``None``."""
        out = self.index.grep(pattern, path, needles)
        if not 0 < out.total_matches <= MAX_HITS:
            return None
        hits = [m for m in out.matches if m.path == sym.path and sym.line <= m.line <= sym.line + window]
        return (out, hits[0]) if hits else None

    def _behaviour(self, sym: Sym) -> Draft | None:
        if not sym.phrase or ("noun" if sym.kind == "class" else "third") not in sym.phrase:
            return None
        parts = [p for p in docstrings.name_parts(sym.name) if len(p) >= 3]
        words = docstrings.content_words(sym.summary) + sym.summary.split()[:1]
        shared = [p for p in parts if any(_same_word(p, w) for w in words)]
        if not shared:
            return None
        part = self.rng.choice(shared)
        keyword = "class" if sym.kind == "class" else "def"
        at_start = sym.name.startswith(part)
        forms = [
            f"{keyword} {part}\\w*" if at_start else f"{keyword} \\w*{part}",
            f"(?i){keyword} \\w*{part}",
        ]
        syn = SYNONYMS.get(part.lower())
        if syn and keyword == "def":
            forms.append(f"def \\w*(?:{part}|{syn})")
        pattern = self.rng.choice(forms)
        folder = sym.path.rpartition("/")[0]
        scoped = folder.count("/") >= 1 and self.rng.random() < 0.3 and "third" in sym.phrase
        needles = (part.lower(), syn) if syn and syn in pattern else (part.lower(),)
        found = self._find(pattern, needles, sym, folder if scoped else ".")
        if found is None:
            return None
        out, hit = found
        if any(re.search(rf"(?:class|def) {sym.name}\b", m.text) for m in out.matches if m is not hit):
            return None  # the same name twice: the output cannot tell which one does this
        what = "class" if sym.kind == "class" else "method" if "(self" in hit.text else "function"
        if sym.kind == "class":
            asked = self.ask("grep.behaviour_class", {"noun": sym.phrase["noun"]}, sym.qual)
            does = f"is {sym.phrase['noun']}"
        else:
            intent = "grep.behaviour_dir" if scoped else "grep.behaviour"
            asked = self.ask(intent, {"third": sym.phrase["third"], "dir": folder}, sym.qual)
            does = sym.phrase["third"]
        args = {"pattern": pattern, **({"path": folder} if scoped else {})}
        where = f"`{hit.path}:{hit.line}`"
        answer = self.rng.choice(
            [
                f"It is the {what} `{sym.name}` at {where}, which {does}.",
                f"{where} defines `{sym.name}`: the {what} that {does}.",
                f"The {what} `{sym.name}` in `{hit.path}` (line {hit.line}) {does}.",
            ]
        )
        others = [f"`{m.path}:{m.line}`" for m in out.matches if m is not hit]
        if len(others) == 1:
            answer += f" The other match, {others[0]}, defines something else."
        elif others:
            listed = (
                ", ".join(others)
                if len(others) <= 3
                else f"{', '.join(others[:2])} and {len(others) - 2} more"
            )
            answer += f" The other matches ({listed}) define other things."
        return self._finish(
            asked, [("grep", args, out.text)], answer, "grep-answer", **meta_of(sym, hit.line)
        )

    def _named(self, sym: Sym) -> Draft | None:
        keyword = "class" if sym.kind == "class" else "def"
        # Not knowing the kind, an engineer often searches both statements.
        pattern = self.rng.choice([f"{keyword} {sym.name}\\b", f"(?:class|def) {sym.name}\\b"])
        out = self.index.grep(pattern, needles=(sym.name.lower(),))
        if out.total_matches != 1 or out.matches[0].path != sym.path:
            return None
        hit = out.matches[0]
        asked = self.ask(
            f"grep.named.{'class' if sym.kind == 'class' else 'function'}", {"name": sym.name}, sym.qual
        )
        answer = self.rng.choice(
            [
                f"`{sym.name}` is defined in `{hit.path}` at line {hit.line}: `{hit.text.strip()}`",
                f"It is at `{hit.path}:{hit.line}`, where the line reads `{hit.text.strip()}`",
            ]
        )
        answer = answer.rstrip(":") + "."
        return self._finish(
            asked,
            [("grep", {"pattern": pattern}, out.text)],
            answer,
            "grep-answer",
            **meta_of(sym, hit.line),
        )

    # ------------------------------------------------------------ grep -> read -> answer

    def _explain(self, sym: Sym) -> Draft | None:
        if not sym.phrase or "third" not in sym.phrase:
            return None
        lines = self.index.lines(sym.path)
        named = self.rng.random() < 0.25
        if named:
            pattern = self.rng.choice([f"def {sym.name}\\b", f"def {sym.name}\\("])
            out = self.index.grep(pattern, needles=(sym.name.lower(),))
            if out.total_matches != 1 or out.matches[0].path != sym.path:
                return None
            hit = out.matches[0]
        else:
            found = None
            for pattern, needle in self._doc_patterns(sym.summary):
                if self.index.spread(needle) > 2 * MAX_HITS:
                    continue  # a word in that many files will not find one docstring
                found = self._find(pattern, (needle,), sym, window=12)
                if found:
                    break
            if found is None:
                return None
            out, hit = found
        start = max(1, min(hit.line - 5, sym.line))
        end = min(len(lines), start + WINDOW - 1, code_facts.body_end(lines, sym.line))
        read = self.index.read(sym.path, start, end)
        said = self._window_answer(sym, lines, start, end)
        if said is None:
            return None
        if named:
            asked = self.ask("grep.explain_named", {"name": sym.name}, sym.qual)
        else:
            asked = self.ask(
                "grep.explain", {"third": sym.phrase["third"], "inf": sym.phrase["inf"]}, sym.qual
            )
        steps = [
            ("grep", {"pattern": pattern}, out.text),
            ("read", {"path": sym.path, "start_line": start, "end_line": end}, read.text),
        ]
        return self._finish(asked, steps, said, "grep-read-answer", **meta_of(sym, sym.line))

    def _doc_patterns(self, summary: str) -> list[str]:
        words = docstrings.content_words(summary)
        text = " ".join(summary.split())
        out = []
        for a, b in zip(words, words[1:], strict=False):
            if f"{a} {b}" in text:
                out.append((f"{a} {b}", f"{a} {b}".lower()))
            out.append((f"(?i){re.escape(a.lower())}.*{re.escape(b.lower())}", max(a, b, key=len).lower()))
        # A single word is worth a search only when it is long enough to be distinctive.
        out += [(w, w.lower()) for w in sorted(words, key=len, reverse=True)[:2] if len(w) >= 7]
        self.rng.shuffle(out)
        return out[:3]

    def _window_answer(self, sym: Sym, lines: list[str], start: int, end: int) -> str | None:
        """What lines ``start``..``end`` show about ``sym`` (its docstring when it is in view,
        then the code facts), or ``None`` when they show too little."""
        facts = code_facts.describe_facts(code_facts.code_facts(lines, start, end, sym.line))
        shown = " ".join(" ".join(lines[start - 1 : end]).split())
        doc = sym.summary and " ".join(sym.summary.split()[:4]) in shown
        what = "method" if sym.kind == "method" else "function"
        parts = [f"`{sym.name}` is the {what} at `{sym.path}:{sym.line}`"]
        if doc and sym.phrase and "third" in sym.phrase:
            parts[0] += f"; its docstring says it {sym.phrase['third']}."
        elif doc:
            parts[0] += f". Its docstring: {sym.summary}"
        else:
            parts[0] += "."
        if facts:
            parts.append(f"In lines {start}-{end} it {facts}.")
        if not doc and not facts:
            return None
        if end < code_facts.body_end(lines, sym.line):
            parts.append(f"The body goes on after line {end} (read from start_line={end + 1}).")
        return " ".join(parts)

    # ------------------------------------------------------------ read -> answer

    def _file(self, info: FileInfo) -> Draft | None:
        lines = self.index.lines(info.path)
        out = self.index.read(info.path)
        end = min(len(lines), 40)
        doc = docstrings.summary(code_facts.module_docstring(self.index.texts[info.path]), min_words=4)
        defs = [(c.name, "class", c.lineno) for c in info.classes if "." not in c.qualname]
        defs += [
            (f.name, "function", f.lineno)
            for f in info.functions
            if f.kind == "function" and "." not in f.qualname
        ]
        defs = sorted((d for d in defs if d[2] <= end and not d[0].startswith("_")), key=lambda d: d[2])
        if not doc and not defs:
            return None
        parts = [
            f"`{info.path}` has {len(lines)} lines"
            + (f"; this shows lines 1-{end}." if end < len(lines) else ".")
        ]
        if doc:
            parts.append(f"Its module docstring says: {doc}")
        if defs:
            listed = ", ".join(f"`{n}` ({k}, line {ln})" for n, k, ln in defs[:6])
            parts.append(f"In these lines it defines {listed}.")
        if end < len(lines):
            parts.append(f"The rest of the file can be read with start_line={end + 1}.")
        asked = self.ask("read.file", {"path": info.path})
        return self._finish(asked, [("read", {"path": info.path}, out.text)], " ".join(parts), "read-answer",
                            path=info.path, line=1, symbol=None, kind="file", defined_in=info.path, found=True)  # fmt: skip

    def _line(self, sym: Sym) -> Draft | None:
        lines = self.index.lines(sym.path)
        end = min(len(lines), sym.line + WINDOW - 1, code_facts.body_end(lines, sym.line))
        if end - sym.line < 2:
            return None
        said = self._window_answer(sym, lines, sym.line, end)
        if said is None:
            return None
        out = self.index.read(sym.path, sym.line, end)
        asked = self.ask("read.line", {"path": sym.path, "line": sym.line, "end": end}, sym.qual)
        args = {"path": sym.path, "start_line": sym.line, "end_line": end}
        return self._finish(asked, [("read", args, out.text)], said, "read-answer", **meta_of(sym, sym.line))


def _same_word(part: str, word: str) -> bool:
    a, b = part.lower(), word.lower()
    if len(a) < 4 or len(b) < 4:
        return a == b
    return a[:5] == b[:5]
