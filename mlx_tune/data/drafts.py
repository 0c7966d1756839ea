"""The record drafts :class:`mlx_tune.data.questions.Planner` builds, and its builders of answers
that list search hits: where a name is used, which files import a module, where a decorator
is applied, a name defined in several files (``ambiguous``), and a name or capability the
repository lacks (``negative``: the search comes back empty and the answer says so).

:class:`HitListDrafts` is a mixin of :class:`~mlx_tune.data.questions.Planner`; its methods use the
planner's ``index``, ``rng``, ``syms``, ``defs``, ``repo``, ``ask`` and ``_finish``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from mlx_tune import docstrings
from mlx_tune.data.example_templates import FEATURES

MAX_HITS = 12  # a search must show every hit (tools.GREP_SHOW) to count as a clean find


@dataclass
class Sym:
    """One public class, function or method of the repository."""

    name: str
    qual: str
    kind: str  # class | function | method
    path: str
    line: int
    doc: str | None  # the raw docstring

    @cached_property
    def summary(self) -> str | None:
        """The docstring's first sentence, cleaned (computed when first asked: most symbols
        never are)."""
        return docstrings.summary(self.doc)

    @cached_property
    def phrase(self) -> dict | None:
        """:func:`docstrings.phrases` of the summary."""
        return docstrings.phrases(self.summary) if self.summary else None


@dataclass
class Draft:
    """One example before it becomes a record: the question, its template id, the calls with
    their real output, the grounded answer, its shape and the repository ``meta`` fields."""

    question: str
    template: str
    steps: list[tuple[str, dict, str]]  # (tool, arguments, output text)
    answer: str
    shape: str
    meta: dict = field(default_factory=dict)


class HitListDrafts:
    """Draft builders whose answer lists what a search found (or that it found nothing)."""

    def _usage(self, sym: Sym) -> Draft | None:
        pattern = self.rng.choice(
            [f"\\b{sym.name}\\(", f"\\b{sym.name}\\b"] if sym.kind != "class" else [f"\\b{sym.name}\\b"]
        )
        out = self.index.grep(pattern, needles=(sym.name.lower(),))
        if not 2 <= out.total_matches <= MAX_HITS:
            return None
        own = [m for m in out.matches if m.path == sym.path and m.line == sym.line]
        uses = [f"`{m.path}:{m.line}`" for m in out.matches if m not in own]
        asked = self.ask("grep.usage", {"name": sym.name}, sym.qual)
        answer = f"`{sym.name}` appears on {out.total_matches} lines."
        if own:
            answer += f" Its definition is `{own[0].path}:{own[0].line}`; the uses are {', '.join(uses)}."
        else:
            answer += f" They are {', '.join(uses)}."
        return self._finish(
            asked,
            [("grep", {"pattern": pattern}, out.text)],
            answer,
            "grep-answer",
            **meta_of(sym, sym.line),
        )

    def _import(self, module: str) -> Draft | None:
        esc = re.escape(module)
        pattern = self.rng.choice([f"^\\s*(?:from|import) {esc}\\b", f"import {esc}\\b|from {esc}\\b"])
        out = self.index.grep(pattern, needles=(module.lower(),))
        if not 0 < out.total_matches <= 3 * MAX_HITS:
            return None
        asked = self.ask("grep.import", {"module": module}, module)
        answer = f"{module} is imported on {out.total_matches} line{'s' if out.total_matches > 1 else ''}: "
        answer += list_hits(out) + "."
        home = self.defs.get(module.rsplit(".", 1)[-1])
        first = out.matches[0]
        return self._finish(asked, [("grep", {"pattern": pattern}, out.text)], answer, "grep-answer",
                            path=first.path, line=first.line, symbol=module, kind="import",
                            defined_in=home[0].path if home else first.path, found=True)  # fmt: skip

    def _decorator(self, text: str) -> Draft | None:
        head = text.split("(", 1)[0]
        with_args = text != head and len(text) <= 60
        pattern = "@" + re.escape(text) if with_args else f"@{re.escape(head)}\\b"
        out = self.index.grep(pattern, needles=("@" + head.lower(),))
        if not 0 < out.total_matches <= 2 * MAX_HITS:
            return None
        if with_args:
            asked = self.ask("grep.decorator_args", {"full": text}, head)
        else:
            asked = self.ask("grep.decorator", {"name": head}, head)
        shown = text if with_args else head
        answer = f"`@{shown}` is applied on {out.total_matches} line{'s' if out.total_matches > 1 else ''}: "
        answer += list_hits(out) + "; the definitions they decorate follow these lines."
        home = self.defs.get(head.rsplit(".", 1)[-1])
        first = out.matches[0]
        return self._finish(asked, [("grep", {"pattern": pattern}, out.text)], answer, "grep-answer",
                            path=first.path, line=first.line, symbol=head, kind="decorator",
                            defined_in=home[0].path if home else first.path, found=True)  # fmt: skip

    def _ambiguous(self, name: str) -> Draft | None:
        syms = self.defs[name]
        keyword = "class" if all(s.kind == "class" for s in syms) else "def"
        pattern = self.rng.choice([f"{keyword} {name}\\b", f"(?:class|def) {name}\\b"])
        out = self.index.grep(pattern, needles=(name.lower(),))
        if not 2 <= out.total_matches <= MAX_HITS or len(out.files) < 2:
            return None
        asked = self.ask("grep.ambiguous", {"name": name}, name)
        listed = "; ".join(f"`{m.path}:{m.line}` (`{m.text.strip().rstrip(':')}`)" for m in out.matches)
        answer = (
            f"There are {out.total_matches} definitions of `{name}` in {len(out.files)} files: {listed}. "
            "Which one you mean depends on the module or class you are working with."
        )
        first = out.matches[0]
        home = min(s.path for s in syms)
        return self._finish(asked, [("grep", {"pattern": pattern}, out.text)], answer, "ambiguous",
                            path=first.path, line=first.line, symbol=name, kind="ambiguous",
                            defined_in=home, found=True)  # fmt: skip

    def _negative(self, which: str) -> Draft | None:
        if which == "feature":
            keyword, feature = self.rng.choice(FEATURES)
            pattern = f"(?i){keyword}"
            out = self.index.grep(pattern, needles=(keyword,))
            if out.total_matches:
                return None
            asked = self.ask("grep.negative_feature", {"feature": feature})
            answer = (
                f"Nothing in {self.repo} seems to {feature}: a case-insensitive search for "
                f"`{keyword}` finds no matches anywhere in the repository."
            )
            return self._finish(
                asked,
                [("grep", {"pattern": pattern}, out.text)],
                answer,
                "negative",
                symbol=keyword,
                kind="feature",
                found=False,
            )
        name = self._absent_name()
        if name is None:
            return None
        pattern = self.rng.choice([f"def {name}\\b", name, f"\\b{name}\\b"])
        out = self.index.grep(pattern, needles=(name.lower(),))
        if out.total_matches:
            return None
        asked = self.ask("grep.negative_name", {"name": name}, name)
        answer = self.rng.choice(
            [
                f"There is no `{name}` in {self.repo}: searching for `{pattern}` finds no matches.",
                f"{self.repo} has no `{name}`. The search for it comes back empty, so the name may be misremembered.",
            ]
        )
        return self._finish(
            asked,
            [("grep", {"pattern": pattern}, out.text)],
            answer,
            "negative",
            symbol=name,
            kind="name",
            found=False,
        )

    def _absent_name(self) -> str | None:
        """A plausible function name built from two real names' words that no file contains."""
        funcs = [s for s in self.syms if s.kind == "function" and "_" in s.name]
        if len(funcs) < 2:
            return None
        a, b = self.rng.sample(funcs, 2)
        name = f"{a.name.split('_')[0]}_{b.name.split('_')[-1]}"
        if name in self.defs or not name.isidentifier():
            return None
        return name


def meta_of(sym: Sym, line: int) -> dict:
    return {
        "path": sym.path,
        "line": line,
        "symbol": sym.qual,
        "kind": sym.kind,
        "defined_in": sym.path,
        "found": True,
    }


def list_hits(out) -> str:
    shown = ", ".join(f"`{m.path}:{m.line}`" for m in out.matches[:6])
    rest = out.total_matches - min(6, len(out.matches))
    return shown + (f" and {rest} more" if rest > 0 else "")
