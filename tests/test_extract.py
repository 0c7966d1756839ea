"""AST extraction: symbols, statuses, and pool ordering."""

from __future__ import annotations

from mlx_tune.data import extract

SOURCE = '''"""Module doc."""
import os, json as j
from typing import Any
from . import sibling

try:
    import yaml
except ImportError:
    yaml = None

if True:
    from collections import OrderedDict


def plain(a, b: int = 1, *args, key: str = "k", **kw) -> dict:
    """Add things together."""
    def inner():
        pass
    return {}


@decorate.with_args(1)
async def fetch(url: str) -> bytes:
    return b""


@dataclass(frozen=True)
class Base(Parent, metaclass=Meta):
    """A base class.

    More detail here."""

    def method(self, x):
        """Do the method thing."""

    @property
    def prop(self) -> int:
        return 1

    class Inner:
        def deep(self):
            pass
'''


def test_extract_source_finds_symbols():
    info = extract.extract_source(SOURCE, "pkg/mod.py")
    assert info.status == "ok"
    funcs = {f.qualname: f for f in info.functions}
    assert set(funcs) == {"plain", "fetch", "Base.method", "Base.prop", "Base.Inner.deep"}  # no "inner"
    assert funcs["plain"].signature == "plain(a, b: int=1, *args, key: str='k', **kw) -> dict"
    assert funcs["plain"].docstring == "Add things together."
    assert funcs["plain"].kind == "function" and not funcs["plain"].is_async
    assert funcs["fetch"].is_async and funcs["fetch"].decorators == ["decorate.with_args(1)"]
    assert funcs["Base.prop"].kind == "method" and funcs["Base.prop"].decorators == ["property"]
    classes = {c.qualname: c for c in info.classes}
    assert set(classes) == {"Base", "Base.Inner"}
    base = classes["Base"]
    assert base.bases == ["Parent"] and base.decorators == ["dataclass(frozen=True)"]
    assert base.methods == ["Base.method", "Base.prop"]
    assert base.docstring.startswith("A base class.")
    assert SOURCE.splitlines()[base.lineno - 1].startswith("class Base(")
    mods = [(i.module, i.names, i.level) for i in info.imports]
    assert ("os", ["os"], 0) in mods and ("json", ["json"], 0) in mods
    assert ("typing", ["Any"], 0) in mods and ("", ["sibling"], 1) in mods
    assert ("yaml", ["yaml"], 0) in mods and ("collections", ["OrderedDict"], 0) in mods


def test_syntax_error_and_non_utf8_are_statuses(tmp_path):
    bad = extract.extract_source("def broken(:\n    pass\n", "bad.py")
    assert bad.status == "syntax_error" and bad.error.startswith("1:")
    (tmp_path / "latin.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    assert extract.extract_file(str(tmp_path), "latin.py").status == "not_utf8"
    assert extract.extract_file(str(tmp_path), "missing.py").status == "unreadable"
    assert extract.extract_source("x = '\0'", "nul.py").status in ("ok", "syntax_error")


def test_extract_files_pool_keeps_order(tmp_path):
    n = extract.POOL_MIN_FILES + 6
    pairs = []
    for i in range(n):
        (tmp_path / f"m{i:03d}.py").write_text(f"class C{i}:\n    def f{i}(self):\n        pass\n")
        pairs.append((str(tmp_path), f"m{i:03d}.py"))
    pooled = extract.extract_files(pairs, jobs=2, progress=False)
    serial = extract.extract_files(pairs, jobs=1, progress=False)
    assert pooled == serial
    assert [f.path for f in pooled] == [p for _, p in pairs]
    assert [f.classes[0].name for f in pooled] == [f"C{i}" for i in range(n)]
