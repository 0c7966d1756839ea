"""Small file helpers every stage shares: atomic writes and JSONL reading with located errors.

Untrusted files are data, never a crash: a line that is not UTF-8, not JSON, nested absurdly
deep or holding a lone surrogate is a ``file:line`` problem, and a full disk is a one-line
``UserError`` naming the path, with the previous version left in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from mlx_tune import UserError

# Errors that mean "the disk (or the user's quota) is full".
NO_SPACE_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
# Deeper JSON than this is refused: records nest a handful of levels, and values near Python's
# recursion limit would crash whoever walks or re-encodes them later.
MAX_JSON_DEPTH = 64
# Bytes that are not UTF-8 decode to these under errors="surrogateescape"; in JSON text a lone
# surrogate (an escaped "\udc80") cannot be written back as UTF-8 either.
_SURROGATE = re.compile("[\ud800-\udfff]")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds.

    An interrupted or failing writer leaves the previous ``path`` untouched. Works for files
    and directories (a directory target that exists is replaced only after the new one is
    complete). A full disk (``ENOSPC``/``EDQUOT``) becomes a ``UserError`` naming ``path``; the
    temporary path is always removed, and one a killed writer left behind is removed by the
    next write of ``path`` (:func:`temp_dir`).
    """
    path = Path(path)
    with _disk_full_is_user_error(path):
        _make_parent(path)
        tmp = temp_dir(path.parent, path.name)
    target = tmp / path.name
    try:
        with _disk_full_is_user_error(path):
            yield target
            _swap_in(target, path, tmp)
    finally:
        _rmtree(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, owned: Collection[str] = ()) -> Iterator[Path]:
    """Yield an empty folder standing in for the folder ``path``; when the block succeeds it
    replaces ``path`` as a whole (:func:`atomic_path`), so a reader sees every new file or every
    old one, never a mix. Entries of the old folder that the block did not write are copied into
    the new one first, except those named in ``owned`` (a split no longer written is dropped)
    and temporary folders of killed writers; a user's own files are kept."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is a file; remove it or choose another folder")
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise UserError(f"{path}: is or contains the current folder; choose a folder of its own")
    # a link to a folder stays a link: the folder it points to is the one replaced
    with atomic_path(path.resolve() if path.is_symlink() else path) as stage:
        stage.mkdir()
        try:
            yield stage
        except UserError as e:  # name the files where they will be, not in the staging folder
            raise UserError(str(e).replace(str(stage), str(path))) from None
        for entry in sorted(path.iterdir()) if path.is_dir() else []:
            new = stage / entry.name
            if entry.name in owned or _TEMP_NAME.fullmatch(entry.name) or os.path.lexists(new):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, new, symlinks=True)
            else:
                shutil.copy2(entry, new, follow_symlinks=False)


# ``.<name>.<pid>.<random><suffix>``: a temporary path of process ``pid`` (see temp_dir).
_TEMP_NAME = re.compile(r"\..+\.(\d+)\.\w+\.(?:tmp|clone)")


def temp_dir(parent: str | os.PathLike, name: str, suffix: str = ".tmp") -> Path:
    """A new empty folder ``parent/.<name>.<pid>.<random><suffix>`` for a writer of ``name``.

    Such folders of writers that are no longer running (killed, or the machine went down) are
    removed first: the process id in the name tells a dead writer's leftovers from a live one's."""
    parent = Path(parent)
    stale = re.compile(rf"\.{re.escape(name)}\.(\d+)\.\w+{re.escape(suffix)}")
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            m = stale.fullmatch(entry.name)
            if m and not process_running(int(m.group(1))):
                # Killed between the two renames of _swap_in: the previous version sits in the dead
                # writer's folder and nothing is at its place; put it back before cleaning up.
                old = Path(entry.path) / f"{name}.old"
                if old.exists() and not (parent / name).exists():
                    with contextlib.suppress(OSError):
                        os.replace(old, parent / name)
                _rmtree(Path(entry.path))
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=suffix, dir=parent))


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _make_parent(path: Path) -> None:
    """Create ``path``'s folder; a file standing where a folder of it should be is a ``UserError``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path.parent, *path.parent.parents] if p.is_file()), path.parent)
        raise UserError(f"{path}: cannot write: {blocker} is a file, not a folder") from None


@contextlib.contextmanager
def _disk_full_is_user_error(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE_ERRNOS:
            raise
        raise UserError(f"{path}: cannot write: no space left on device (nothing was replaced)") from None


def _swap_in(target: Path, path: Path, tmp: Path) -> None:
    """Rename the finished ``target`` onto ``path`` (a folder via ``tmp``, restored on failure)."""
    if path.exists() and target.is_dir() != path.is_dir():
        what = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{path}: exists and is {what}; remove it or choose another path")
    if target.is_dir() and path.is_dir():
        old = tmp / (path.name + ".old")
        os.replace(path, old)
        try:
            os.replace(target, path)
        except BaseException:
            os.replace(old, path)  # put the previous version back before tmp is removed
            raise
    else:
        os.replace(target, path)


def _rmtree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` newlines) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically and byte-reproducibly."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def dumps_record(record: dict) -> str:
    """One JSONL line for ``record``; key order is kept so files diff well and stay stable."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records one per line, atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(dumps_record(record) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a missing file, a line that is not UTF-8, bad or absurdly nested JSON,
    or a non-object line is a ``UserError`` naming ``file:line``. Blank lines are skipped."""
    return [record for _, record in iter_jsonl(path)]


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` pairs; errors as in :func:`read_jsonl`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    for lineno, value, problem in iter_json_lines(path):
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}")
        if not isinstance(value, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}")
        yield lineno, value


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line_number, value, problem)`` for every non-blank line of ``path``.

    ``problem`` is ``None`` or what is wrong with the line (then ``value`` is ``None``):
    see :func:`parse_json_line`. Reading never stops at a bad line."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield (lineno, *parse_json_line(line))


def parse_json_line(line: str) -> tuple[Any, str | None]:
    """``(value, None)`` for a good JSON line, else ``(None, problem)``: not UTF-8 (the line was
    read with ``errors="surrogateescape"``), not valid JSON, nested deeper than
    ``MAX_JSON_DEPTH``, or a string holding a lone surrogate."""
    bad = _SURROGATE.search(line)
    if bad:
        byte = ord(bad.group()) - 0xDC00
        return None, f"not UTF-8: byte 0x{byte:02x} at column {bad.start() + 1}"
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (column {e.colno})"
    except (RecursionError, MemoryError):
        return None, f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as e:  # an integer of more than sys.get_int_max_str_digits() digits
        return None, f"not valid JSON: {str(e).split(':')[0]}"
    return (None, problem) if (problem := value_problem(value)) else (value, None)


def value_problem(value: Any) -> str | None:
    """Why a decoded JSON value cannot be kept (too deep, a lone surrogate), or ``None``.

    Walks with an explicit stack, so a hostile value cannot exhaust Python's recursion."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return "not UTF-8: a string holds a lone surrogate (\\ud800-\\udfff)"
            continue
        if not isinstance(v, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            return f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
        items = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
        stack.extend((item, depth + 1) for item in items)
    return None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
