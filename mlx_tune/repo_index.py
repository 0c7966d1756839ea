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
import os
import re
from pathlib import Path

from mlx_tune import tools

# Line breaks str.splitlines() knows besides "\n": in a file holding one, offsets do not map to
# lines by counting "\n", so every line is tried.
_ODD_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_WORD = re.compile(r"\w+")


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
        for p in tools._iter_files(self.root, self.root):
            text = tools._text_of(p)
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
        candidates = self._candidate_lines(needles) if needles else None
        found: list[tools.Match] = []
        total = scanned = 0
        for rel in self._under(path):
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

    def _candidate_lines(self, needles: tuple[str, ...]) -> dict[str, set[int]]:
        """Files holding a needle -> the 1-based numbers of the lines holding one (for the odd
        files that cannot be mapped: an empty set, meaning every line is tried)."""
        out: dict[str, set[int]] = {}
        for needle in needles:
            for rel, numbers in self._needle_lines(needle).items():
                out.setdefault(rel, set()).update(numbers)
        for rel, low in self._odd_lower.items():
            if any(n in low for n in needles):
                out.setdefault(rel, set())
        return out

    def _needle_lines(self, needle: str) -> dict[str, set[int]]:
        """Mapped files holding ``needle`` -> numbers of the lines holding it."""
        out: dict[str, set[int]] = {}
        for i in self._files_with(needle):
            rel, low = self._blob_files[i], self._mapped_lower[i]
            if rel not in self._starts:
                self._starts[rel] = [0, *(m.end() for m in re.finditer("\n", self.texts[rel]))]
            at = low.find(needle)
            while at >= 0:
                out.setdefault(rel, set()).add(bisect.bisect_right(self._starts[rel], at))
                at = low.find(needle, at + 1)
        return out

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
