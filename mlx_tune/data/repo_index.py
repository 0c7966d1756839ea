"""An in-memory copy of one repository's text files that answers grep and read like
:mod:`mlx_tune.tools`, byte for byte, without walking and reading the tree on every call.

Data generation runs hundreds of greps per repository; :func:`tools.run_grep` walks and reads
every file each time. :class:`RepoIndex` walks and reads once, with the very functions the tool
uses (same files, same order, same decoding); given a word every matching line must contain,
it tries only the lines holding that word. The tests check equality with
:func:`tools.run_grep` / :func:`tools.run_read` on every generated call.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from pathlib import Path

from mlx_tune import tools

# Line breaks str.splitlines() knows besides "\n": in a file holding one, offsets do not map to
# lines by counting "\n", so every line is tried.
_ODD_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_WORD = re.compile(r"\w+")
# A pattern starting like this only matches lines holding "def " or "class " (case aside).
_DEF_PATTERN = re.compile(r"(?:\(\?i\))?(?:def |class |\(\?:class\|def\) |\(\?:def\|class\) )")


class RepoIndex:
    """The text files under ``root`` in :func:`tools.grep_matches` walk order."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.texts: dict[str, str] = {}
        self._lines: dict[str, list[str]] = {}
        self._odd: list[str] = []  # files whose lower-case offsets are not line offsets
        self._starts: dict[str, list[int]] = {}  # offsets where each line of a mapped file starts
        self._blob_files: list[str] = []  # files whose lower-case offsets map to lines
        self._mapped_lower: list[str] = []
        self._vocab: str | None = None  # every word of the mapped files, one a line (built on demand)
        for p in tools.iter_files(self.root, self.root):
            text = tools.text_of(p)
            if text is None:
                continue
            rel = p.relative_to(self.root).as_posix()
            self.texts[rel] = text
            low = text.lower()
            if _ODD_BREAKS.search(text) or len(low) != len(text):
                self._odd.append(rel)
            else:
                self._blob_files.append(rel)
                self._mapped_lower.append(low)
        self._odd_lower = {rel: self.texts[rel].lower() for rel in self._odd}
        self._mapped_index = {rel: i for i, rel in enumerate(self._blob_files)}
        self._size = sum(map(len, self.texts.values()))
        self._defs: tuple[str, list[int], list[tuple[str, int]]] | None = None  # the def/class lines

    def lines(self, path: str) -> list[str]:
        if path not in self._lines:
            self._lines[path] = self.texts[path].splitlines()
        return self._lines[path]

    def has(self, path: str) -> bool:
        return path in self.texts

    def _under(self, path: str) -> list[str]:
        rel = tools.norm_path(path)
        if rel in ("", "."):
            return list(self.texts)
        if rel in self.texts:
            return [rel]
        return [p for p in self.texts if p.startswith(rel + "/")]

    def grep(self, pattern: str, path: str = ".", needles: tuple[str, ...] = ()) -> tools.ToolOutput:
        """What ``tools.run_grep(root, pattern, path)`` returns (``path`` must exist).

        ``needles``: lower-case strings without line breaks, one of which every matching line
        contains (case aside); then only the lines holding a needle are tried. The caller vouches
        for them, and the tests compare the output with the tool's."""
        rx = re.compile(pattern)
        defs = bool(_DEF_PATTERN.match(pattern))
        candidates = self._candidate_lines(needles, defs) if needles else None
        files = self._under(path)
        if candidates is not None and self._size <= tools.MAX_SCAN_BYTES:
            files = [rel for rel in files if rel in candidates]  # the scan cap cannot cut in
        found: list[tools.Match] = []
        total = scanned = 0
        for rel in files:
            if scanned > tools.MAX_SCAN_BYTES:
                break
            scanned += len(self.texts[rel])
            lines = self.lines(rel) if candidates is None or rel in candidates else []
            if candidates is None or rel in self._odd_lower:
                numbers = range(1, len(lines) + 1)
            else:
                numbers = sorted(candidates.get(rel, ()))
            hits = [(n, lines[n - 1]) for n in numbers if n <= len(lines) and rx.search(lines[n - 1])]
            total += len(hits)
            for n, line in hits[: max(0, tools.MAX_MATCHES - len(found))]:
                found.append(tools.Match(rel, n, line))
        files = list(dict.fromkeys(m.path for m in found))
        return tools.ToolOutput("ok", tools.format_grep(found, total), found, files, total)

    def _candidate_lines(self, needles: tuple[str, ...], defs: bool) -> dict[str, set[int]]:
        """Files holding a needle -> the 1-based numbers of the lines holding one, among the
        ``def``/``class`` lines only with ``defs`` (for the odd files that cannot be mapped: an
        empty set, meaning every line is tried)."""
        out: dict[str, set[int]] = {}
        for needle in needles:
            found = self._def_needle_lines(needle) if defs else self._needle_lines(needle)
            for rel, numbers in found.items():
                out.setdefault(rel, set()).update(numbers)
        for rel, low in self._odd_lower.items():
            if any(n in low for n in needles):
                out.setdefault(rel, set())
        return out

    def _needle_lines(self, needle: str) -> dict[str, set[int]]:
        """Mapped files holding ``needle`` -> numbers of the lines holding it."""
        out: dict[str, set[int]] = {}
        for i in self._files_with(needle):
            numbers = self._find_lines(self._blob_files[i], needle)
            if numbers:
                out[self._blob_files[i]] = numbers
        return out

    def _def_needle_lines(self, needle: str) -> dict[str, set[int]]:
        """Like :meth:`_needle_lines`, among the lines holding ``def `` or ``class `` only."""
        if self._defs is None:
            keys, lows = [], []
            for rel in self._blob_files:
                numbers = set()
                for word in ("def ", "class "):
                    numbers.update(self._find_lines(rel, word))
                for n in sorted(numbers):
                    keys.append((rel, n))
                    lows.append(self.lines(rel)[n - 1].lower())
            offsets = list(itertools.accumulate((len(low) + 1 for low in lows), initial=0))
            self._defs = ("\n".join(lows), offsets, keys)
        blob, offsets, keys = self._defs
        out: dict[str, set[int]] = {}
        at = blob.find(needle)
        while at >= 0:
            rel, n = keys[bisect.bisect_right(offsets, at) - 1]
            out.setdefault(rel, set()).add(n)
            at = blob.find(needle, at + 1)
        return out

    def _find_lines(self, rel: str, needle: str) -> set[int]:
        """Numbers of the lines of mapped file ``rel`` whose lower-case text holds ``needle``."""
        if rel not in self._starts:
            self._starts[rel] = [0, *(m.end() for m in re.finditer("\n", self.texts[rel]))]
        starts, low = self._starts[rel], self._mapped_lower[self._mapped_index[rel]]
        numbers = set()
        at = low.find(needle)
        while at >= 0:
            numbers.add(bisect.bisect_right(starts, at))
            at = low.find(needle, at + 1)
        return numbers

    def spread(self, needle: str) -> int:
        """How many files hold a word containing ``needle``'s longest word run: a cheap upper
        bound on the files holding ``needle`` (the odd files aside)."""
        return len(self._files_with(needle))

    def _files_with(self, needle: str) -> set[int] | range:
        """Indices of the mapped files that may hold ``needle``: those with a word containing the
        needle's longest word run (a line holding the needle holds such a word)."""
        runs = _WORD.findall(needle)
        if not runs:
            return range(len(self._blob_files))
        if self._vocab is None:
            self._files_of: dict[str, list[int]] = {}
            for i, low in enumerate(self._mapped_lower):
                for word in set(_WORD.findall(low)):
                    self._files_of.setdefault(word, []).append(i)
            self._vocab = "\n".join(self._files_of)
        run = max(runs, key=len)
        found: set[int] = set()
        at = self._vocab.find(run)
        while at >= 0:
            start = self._vocab.rfind("\n", 0, at) + 1
            end = self._vocab.find("\n", at)
            end = len(self._vocab) if end < 0 else end
            found.update(self._files_of[self._vocab[start:end]])
            at = self._vocab.find(run, end)
        return found

    def read(self, path: str, start_line: int | None = None, end_line: int | None = None) -> tools.ToolOutput:
        """What ``tools.run_read(root, path, start_line, end_line)`` returns for a file here."""
        rel = tools.norm_path(path)
        text = tools.format_read(rel, self.lines(rel), start_line or 1, end_line)
        return tools.ToolOutput("ok", text, files=[rel])
