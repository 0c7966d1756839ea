"""Extract symbols from Python source with ``ast`` only: nothing is imported or executed.

Per file: classes (bases, decorators, methods, docstring), functions and methods (signature,
decorators, async, docstring) and imports. Statements under module-level ``if``/``try``/
``with`` blocks count; functions nested inside functions do not (they are not reachable
names). A file that is not UTF-8, does not parse, or nests too deeply for ``ast`` (RecursionError,
MemoryError) is returned with a status, not raised: one hostile file never aborts a run.

:func:`extract_files` spreads files over a process pool and returns results in input order.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from mlx_tune.data.repos import read_text

# Below this many files a pool costs more than it saves.
POOL_MIN_FILES = 64


@dataclass
class Function:
    name: str
    qualname: str
    lineno: int
    signature: str
    decorators: list[str]
    is_async: bool
    docstring: str | None
    kind: str  # "function" or "method"


@dataclass
class Class:
    name: str
    qualname: str
    lineno: int
    bases: list[str]
    decorators: list[str]
    methods: list[str]
    docstring: str | None


@dataclass
class Import:
    module: str  # "" for ``from . import x``
    names: list[str]  # imported names ("*" for star); for ``import a.b``, ["a.b"]
    level: int
    lineno: int


@dataclass
class FileInfo:
    path: str
    status: str = "ok"  # ok | not_utf8 | syntax_error | too_complex | unreadable
    error: str = ""
    lines: int = 0
    classes: list[Class] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)


def extract_source(text: str, path: str = "<string>") -> FileInfo:
    """Symbols of one module's source text."""
    info = FileInfo(path=path, lines=text.count("\n") + 1)
    try:  # a UTF-8 byte-order mark is valid in a Python file but not in a str given to ast
        tree = ast.parse(text.removeprefix("\ufeff"), filename=path)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes in source
        info.status = "syntax_error"
        info.error = f"{getattr(e, 'lineno', '') or ''}: {getattr(e, 'msg', str(e))}"
        return info
    except (RecursionError, MemoryError) as e:  # deeply nested expressions overflow ast's builder
        return _too_complex(info, e)
    try:
        _visit(tree.body, "", None, info)
    except (RecursionError, MemoryError) as e:
        return _too_complex(info, e)
    return info


def _too_complex(info: FileInfo, e: BaseException) -> FileInfo:
    """``info`` emptied and marked ``too_complex`` (symbols found before the failure are dropped)."""
    return FileInfo(path=info.path, status="too_complex", error=type(e).__name__, lines=info.lines)


def extract_file(root: str, path: str) -> FileInfo:
    """Symbols of ``root/path`` (``path`` relative, POSIX)."""
    try:
        text = read_text(os.path.join(root, path))
    except OSError as e:
        return FileInfo(path=path, status="unreadable", error=str(e))
    if text is None:
        return FileInfo(path=path, status="not_utf8")
    return extract_source(text, path)


def _extract_pair(pair: tuple[str, str]) -> FileInfo:
    return extract_file(*pair)


def extract_files(
    pairs: Sequence[tuple[str, str]], jobs: int | None = None, progress: bool = True
) -> list[FileInfo]:
    """Extract every ``(root, relative_path)`` pair; results in the same order as ``pairs``.

    ``jobs`` processes (default: all cores) share the work; small inputs run in-process.
    """
    jobs = jobs or os.cpu_count() or 1
    bar = tqdm(total=len(pairs), desc="extract", unit="file", disable=not progress, leave=False)
    out: list[FileInfo] = []
    if jobs <= 1 or len(pairs) < POOL_MIN_FILES:
        for pair in pairs:
            out.append(_extract_pair(pair))
            bar.update()
    else:
        chunksize = max(8, min(64, len(pairs) // (jobs * 8) or 1))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for info in pool.map(_extract_pair, pairs, chunksize=chunksize):
                out.append(info)
                bar.update()
    bar.close()
    return out


# ---------------------------------------------------------------- the walk


def _visit(body: list[ast.stmt], prefix: str, cls: Class | None, info: FileInfo) -> None:
    for node in body:
        if isinstance(node, ast.ClassDef):
            qual = prefix + node.name
            c = Class(
                name=node.name,
                qualname=qual,
                lineno=node.lineno,
                bases=[_unparse(b) for b in node.bases],
                decorators=[_unparse(d) for d in node.decorator_list],
                methods=[],
                docstring=ast.get_docstring(node),
            )
            info.classes.append(c)
            _visit(node.body, qual + ".", c, info)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qual = prefix + node.name
            signature = f"{node.name}({_unparse(node.args)})"
            if node.returns is not None:
                signature += f" -> {_unparse(node.returns)}"
            info.functions.append(
                Function(
                    name=node.name,
                    qualname=qual,
                    lineno=node.lineno,
                    signature=signature,
                    decorators=[_unparse(d) for d in node.decorator_list],
                    is_async=isinstance(node, ast.AsyncFunctionDef),
                    docstring=ast.get_docstring(node),
                    kind="method" if cls is not None else "function",
                )
            )
            if cls is not None:
                cls.methods.append(qual)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                info.imports.append(
                    Import(module=alias.name, names=[alias.name], level=0, lineno=node.lineno)
                )
        elif isinstance(node, ast.ImportFrom):
            info.imports.append(
                Import(
                    module=node.module or "",
                    names=[a.name for a in node.names],
                    level=node.level or 0,
                    lineno=node.lineno,
                )
            )
        elif isinstance(node, (ast.If, ast.With, ast.AsyncWith)):
            _visit(node.body, prefix, cls, info)
            _visit(getattr(node, "orelse", []), prefix, cls, info)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            _visit(node.body, prefix, cls, info)
            for h in node.handlers:
                _visit(h.body, prefix, cls, info)
            _visit(node.orelse, prefix, cls, info)
            _visit(node.finalbody, prefix, cls, info)


def _unparse(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # unparse of exotic nodes must never sink a whole file
        return "..."
