"""Can a text still grow into a JSON document that ``json.loads`` accepts?

The evaluation uses this to stop decoding a tool call whose JSON is already broken: once
:class:`JsonPrefix` has seen a character that no continuation can repair, the call will be scored
``invalid`` however long the model goes on, so its remaining tokens cannot change any score.

The checker follows ``json.loads`` with its defaults (``NaN``, ``Infinity`` and ``-Infinity``
accepted, control characters inside strings refused). It errs only towards "still possible": where
it cannot be sure it stops judging and never reports the text broken: inside ``\\uXXXX`` escapes,
and at a character outside strings that the answer parser might cut at or strip (``<`` of
``</tool_call>``, any whitespace) or that is part of a character split over tokens (U+FFFD).
"""

from __future__ import annotations

import re

JSON_WS = " \t\n\r"
LITERALS = {"t": "true", "f": "false", "n": "null", "N": "NaN", "I": "Infinity"}
NUMBER_CHARS = frozenset("0123456789+-.eE")
NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
UNSURE = "<\ufffd"  # a character here may belong to what the answer parser cuts or strips


class JsonPrefix:
    """Feed text in pieces with :meth:`feed`; :attr:`broken` turns true once the text fed so far
    cannot begin any document ``json.loads`` accepts (and stays true)."""

    def __init__(self) -> None:
        self.broken = False
        self.unsure = False  # stopped judging: never reports broken
        self._stack: list[str] = []  # "{" / "[" of the open containers
        self._state = (
            "value"  # value | value_or_end | key | key_or_end | colon | after | string | literal | number
        )
        self._pending = ""  # the rest of a literal, or the number so far
        self._key = False  # the open string is an object key
        self._escape = 0  # 1 after a backslash; 2..5 inside \uXXXX

    def feed(self, text: str) -> bool:
        """Consume ``text``; returns :attr:`broken`."""
        for c in text:
            if self.broken or self.unsure:
                break
            in_string = self._state == "string"
            if not self._step(c):
                if not in_string and (c in UNSURE or c.isspace()):
                    self.unsure = True
                else:
                    self.broken = True
        return self.broken

    def _step(self, c: str) -> bool:
        state = self._state
        if state == "string":
            return self._string(c)
        if state == "literal":
            if c != self._pending[0]:
                return False
            self._pending = self._pending[1:]
            if not self._pending:
                self._state = "after"
            return True
        if state == "number":
            if c in NUMBER_CHARS:
                self._pending += c
                return True
            if self._pending == "-" and c == "I":
                self._state, self._pending = "literal", "nfinity"
                return True
            if not NUMBER_RE.fullmatch(self._pending):
                return False
            self._state = state = "after"
        if c in JSON_WS:
            return True
        if state in ("value", "value_or_end"):
            return self._value(c, state == "value_or_end")
        if state in ("key", "key_or_end"):
            if c == '"':
                self._state, self._key = "string", True
                return True
            return state == "key_or_end" and c == "}" and self._close()
        if state == "colon":
            if c == ":":
                self._state = "value"
            return c == ":"
        # after a complete value
        if not self._stack:
            return False  # json.loads: "Extra data"
        if c == ",":
            self._state = "key" if self._stack[-1] == "{" else "value"
            return True
        return c == ("}" if self._stack[-1] == "{" else "]") and self._close()

    def _value(self, c: str, may_end: bool) -> bool:
        if c in "{[":
            self._stack.append(c)
            self._state = "key_or_end" if c == "{" else "value_or_end"
        elif c == '"':
            self._state, self._key = "string", False
        elif c in LITERALS:
            self._state, self._pending = "literal", LITERALS[c][1:]
        elif c == "-" or c.isdigit() and c.isascii():
            self._state, self._pending = "number", c
        elif may_end and c == "]":
            return self._close()
        else:
            return False
        return True

    def _string(self, c: str) -> bool:
        if self._escape >= 2:  # \uXXXX: not judged (the pure-Python decoder is lenient here)
            self._escape = self._escape + 1 if self._escape < 5 else 0
            return True
        if self._escape == 1:
            self._escape = 2 if c == "u" else 0
            return c == "u" or c in '"\\/bfnrt'
        if c == "\\":
            self._escape = 1
        elif c == '"':
            self._state = "colon" if self._key else "after"
        elif ord(c) < 0x20:
            return False  # json.loads(strict=True): control characters must be escaped
        return True

    def _close(self) -> bool:
        self._stack.pop()
        self._state = "after"
        return True
