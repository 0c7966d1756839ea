"""Collect source repositories into one folder (default ``data/repos/``) with a manifest.

Three ways in: shallow ``git clone`` of the popular repositories (:func:`clone_repos`), a
local directory or checkout (:func:`add_path`), and the files of an installed distribution
(:func:`add_installed`, for offline machines). Every repository lands in ``<dest>/<name>/``
and gets an entry in ``<dest>/manifest.json`` (merged, written atomically).

Repository code is only copied and read as text here, never imported or executed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mlx_tune import UserError, fileio

DEFAULT_DEST = "data/repos"
MANIFEST = "manifest.json"
MANIFEST_GENERATOR = "mlx_tune.data.repos/1"
MAX_FILE_BYTES = 1_000_000

POPULAR_REPOS: dict[str, str] = {
    "fastapi": "https://github.com/fastapi/fastapi.git",
    "flask": "https://github.com/pallets/flask.git",
    "pytest": "https://github.com/pytest-dev/pytest.git",
    "typer": "https://github.com/fastapi/typer.git",
    "click": "https://github.com/pallets/click.git",
    "httpx": "https://github.com/encode/httpx.git",
    "starlette": "https://github.com/encode/starlette.git",
    "pydantic": "https://github.com/pydantic/pydantic.git",
    "attrs": "https://github.com/python-attrs/attrs.git",
    "structlog": "https://github.com/hynek/structlog.git",
}

# Directories that never hold a repository's own source.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox", "site-packages"}
)
INSTALLED_SUFFIXES = (".py", ".html", ".md")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class WalkStats:
    """What a walk over a repository skipped, by reason."""

    files: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"files": self.files, "skipped": dict(sorted(self.skipped.items()))}


# ---------------------------------------------------------------- walking files


def iter_repo_files(
    root: str | os.PathLike, suffixes: Sequence[str] | None = None, stats: WalkStats | None = None
) -> Iterator[str]:
    """Yield the files under ``root`` as sorted POSIX paths relative to ``root``.

    Symlinked directories are not descended; a symlinked file is kept only if it resolves
    inside ``root`` (counted as ``symlink_outside`` otherwise). Files over ``MAX_FILE_BYTES``
    are counted as ``too_large``. Hidden and tool directories (``SKIP_DIRS``) and nested
    git checkouts or repository folders are left out. UTF-8 is checked by the reader.
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    stats = stats if stats is not None else WalkStats()
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d in SKIP_DIRS or d.startswith(".") or d.endswith(".egg-info"):
                continue
            if os.path.islink(full):
                if not _inside(os.path.realpath(full), real_root):
                    stats.skipped["symlink_outside"] += 1
                continue
            if os.path.exists(os.path.join(full, ".git")) or _is_repos_folder(full):
                stats.skipped["nested_repository"] += 1
                continue
            keep.append(d)
        dirnames[:] = keep
        rel_dir = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            if suffixes is not None and not f.endswith(tuple(suffixes)):
                continue
            full = os.path.join(dirpath, f)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not _inside(target, real_root) or not os.path.isfile(target):
                    stats.skipped["symlink_outside"] += 1
                    continue
            elif not os.path.isfile(full):
                continue
            if os.path.getsize(full) > MAX_FILE_BYTES:
                stats.skipped["too_large"] += 1
                continue
            stats.files += 1
            yield f if rel_dir == "." else Path(rel_dir, f).as_posix()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_repos_folder(path: str) -> bool:
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        return False
    try:
        with open(manifest, encoding="utf-8") as f:
            return json.load(f).get("generator") == MANIFEST_GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def read_text(path: str | os.PathLike) -> str | None:
    """The file's text, or ``None`` if it is not valid UTF-8."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------- manifest


def load_manifest(dest: str | os.PathLike) -> dict[str, dict]:
    """The manifest's entries by repository name (empty if there is no manifest). A manifest
    that cannot be read as one (not UTF-8, not JSON, nested absurdly deep, the wrong shape) is a
    one-line ``UserError`` naming it."""
    path = Path(dest) / MANIFEST
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            data, problem = fileio.parse_json_line(f.read())
    except OSError as e:
        data, problem = None, e.strerror or str(e)  # a folder of that name, no permission
    repos = data.get("repos") if isinstance(data, dict) else None
    if problem is None and not (isinstance(repos, list) and all(isinstance(e, dict) for e in repos)):
        problem = 'expected {"repos": [{"name": ...}, ...]}'
    for i, e in enumerate(repos if problem is None else []):
        if not (isinstance(e.get("name"), str) and _plain_name(e["name"])):
            problem = f"repos[{i}].name: {e.get('name')!r} is not a plain folder name"
            break
    if problem is not None:
        raise UserError(f"{path}: not a repository manifest ({problem}); delete it or fix it")
    return {e["name"]: e for e in data["repos"]}


def update_manifest(dest: str | os.PathLike, entries: Sequence[dict]) -> Path:
    """Merge ``entries`` (by name) into ``<dest>/manifest.json``, written atomically."""
    merged = load_manifest(dest)
    for e in entries:
        merged[e["name"]] = e
    path = Path(dest) / MANIFEST
    fileio.write_json(path, {"generator": MANIFEST_GENERATOR, "repos": [merged[k] for k in sorted(merged)]})
    return path


def describe_repo(root: str | os.PathLike) -> dict:
    """Counts for the manifest: ``.py`` files, bytes of all kept files, and what was skipped."""
    stats = WalkStats()
    py_files = 0
    total = 0
    for rel in iter_repo_files(root, stats=stats):
        total += os.path.getsize(os.path.join(root, rel))
        py_files += rel.endswith(".py")
    return {"py_files": py_files, "bytes": total, "skipped": dict(sorted(stats.skipped.items()))}


def git_commit(path: str | os.PathLike) -> str | None:
    """``HEAD``'s sha of a git checkout, or ``None`` if ``path`` is not one (or git is missing)."""
    if not (Path(path) / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _plain_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name)) and name not in (".", "..", MANIFEST)


def _check_name(name: str) -> str:
    if not _plain_name(name):
        raise UserError(f"--name: {name!r} is not a usable folder name (letters, digits, . _ -)")
    return name


# ---------------------------------------------------------------- clone


@dataclass
class CloneResult:
    name: str
    url: str
    status: str  # "cloned", "present" or "failed"
    reason: str = ""
    entry: dict | None = None


def clone_targets(only: Sequence[str] = (), extra: Sequence[str] = ()) -> dict[str, str]:
    """What ``repos clone`` clones (name -> URL): the ``extra`` ``NAME=URL`` items instead of
    :data:`POPULAR_REPOS` when given, narrowed to the names in ``only`` when given."""
    targets = dict(POPULAR_REPOS)
    if extra:
        targets = {}
        for item in extra:
            name, sep, url = item.partition("=")
            if not sep or not name or not url:
                raise UserError(f"--repo: {item!r}: expected NAME=URL")
            targets[name] = url
    if only:
        unknown = [n for n in only if n not in targets]
        if unknown:
            choices = ", ".join(targets)
            raise UserError(f"--only: unknown repository {', '.join(unknown)}; choose from {choices}")
        targets = {n: targets[n] for n in only}
    return targets


def clone_repos(
    dest: str | os.PathLike = DEFAULT_DEST,
    repos: Mapping[str, str] | None = None,
    jobs: int = 4,
    progress: bool = True,
) -> list[CloneResult]:
    """Shallow-clone ``repos`` (name -> URL; default :data:`POPULAR_REPOS`) into ``<dest>/<name>``.

    Repositories already present are skipped. Clones run in parallel; each goes to a
    temporary folder first and is renamed into place only when complete. A failure is
    recorded with git's own reason and the others go on. The manifest is updated for every
    repository that is present afterwards. Results come back in the order of ``repos``.
    """
    repos = dict(POPULAR_REPOS if repos is None else repos)
    for name in repos:
        _check_name(name)
    dest = Path(dest)
    load_manifest(dest)  # a corrupt manifest is reported before anything is cloned
    dest.mkdir(parents=True, exist_ok=True)
    results: dict[str, CloneResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_clone_one, dest, name, url): name for name, url in repos.items()}
        bar = tqdm(total=len(futures), desc="clone", unit="repo", disable=not progress, leave=False)
        for fut in as_completed(futures):
            r = fut.result()
            results[r.name] = r
            bar.set_postfix_str(f"{r.name}: {r.status}")
            bar.update()
        bar.close()
    ordered = [results[name] for name in repos]
    entries = [r.entry for r in ordered if r.entry is not None]
    if entries:
        update_manifest(dest, entries)
    return ordered


def _clone_one(dest: Path, name: str, url: str) -> CloneResult:
    target = dest / name
    if target.exists():
        old = load_manifest(dest).get(name, {})
        entry = {**old, "name": name, "url": old.get("url", url), "source": old.get("source", "git")}
        entry.setdefault("commit", git_commit(target) or "unknown")
        entry.update(describe_repo(target))
        return CloneResult(name, url, "present", entry=entry)
    tmp = fileio.temp_dir(dest, name, ".clone")  # a killed clone's folder is removed here
    try:
        proc = subprocess.run(
            ["git", "clone", "--depth", "1", "--quiet", "--", url, str(tmp / name)],
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
        if proc.returncode != 0:
            return CloneResult(name, url, "failed", reason=_git_reason(proc.stderr, proc.returncode))
        commit = git_commit(tmp / name) or "unknown"
        os.replace(tmp / name, target)
    except OSError as e:
        return CloneResult(name, url, "failed", reason=str(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    entry = {"name": name, "url": url, "source": "git", "commit": commit, **describe_repo(target)}
    return CloneResult(name, url, "cloned", entry=entry)


def _git_reason(stderr: str, returncode: int) -> str:
    """git's own reason: its first ``fatal:``/``error:`` line (the rest is boilerplate advice)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (errors or lines or [f"git exited with status {returncode}"])[0]


# ---------------------------------------------------------------- local and installed sources


def add_path(
    path: str | os.PathLike,
    dest: str | os.PathLike = DEFAULT_DEST,
    name: str | None = None,
    force: bool = False,
) -> dict:
    """Copy a local directory (or git checkout) into ``<dest>/<name>`` and record it.

    Only UTF-8 text files of at most ``MAX_FILE_BYTES`` are copied; symlinks that leave the
    directory are not followed. Returns the manifest entry (with what was skipped).
    """
    src = Path(path)
    if not src.is_dir():
        raise UserError(f"{path}: no such directory; pass a local directory or git checkout")
    name = _check_name(name or src.resolve().name)
    target = _check_target(dest, name, force, " or --name to pick another")
    stats = WalkStats()
    # A dest inside src is not copied into itself: the walk skips hidden temp folders and
    # folders holding a repositories manifest.
    files = [(src / rel, rel) for rel in iter_repo_files(src, stats=stats)]
    entry = {
        "name": name,
        "url": src.resolve().as_uri(),
        "source": "path",
        "commit": git_commit(src) or "unknown",
    }
    return _install(dest, target, files, entry, stats)


def add_installed(
    dists: Sequence[str],
    dest: str | os.PathLike = DEFAULT_DEST,
    suffixes: Sequence[str] = INSTALLED_SUFFIXES,
    force: bool = True,
) -> list[dict]:
    """Copy the ``.py``/``.html``/``.md`` files of installed distributions into ``<dest>/<name>``.

    Uses ``importlib.metadata`` (the distribution's file list), so nothing is imported.
    The version is recorded as the manifest's ``version`` (and used as the commit).
    An existing folder of the same name is replaced unless ``force`` is false.
    """
    if not dists:
        raise UserError("add-installed: name at least one installed distribution, e.g. click")
    found = []
    for dist_name in dists:
        try:
            found.append(importlib.metadata.distribution(dist_name))
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"{dist_name}: no installed distribution of that name; check `pip list`"
            ) from None
    entries = []
    for dist in found:
        name = _check_name(re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower())
        target = _check_target(dest, name, force)
        files = []
        for rel in sorted(Path(str(f)).as_posix() for f in dist.files or []):
            parts = rel.split("/")
            if not rel.endswith(tuple(suffixes)) or ".." in parts:
                continue  # e.g. console scripts installed outside site-packages
            if any(p.endswith((".dist-info", ".egg-info")) or p in SKIP_DIRS for p in parts):
                continue
            full = Path(dist.locate_file(rel))
            if full.is_file():
                files.append((full, rel))
        if not files:
            raise UserError(f"{dist.metadata['Name']}: the distribution lists no {'/'.join(suffixes)} files")
        entry = {
            "name": name,
            "url": None,
            "source": "installed",
            "version": dist.version,
            "commit": dist.version,
        }
        entries.append(_install(dest, target, files, entry, WalkStats()))
    return entries


def _check_target(dest, name: str, force: bool, hint: str = "") -> Path:
    """``<dest>/<name>``, once the manifest reads and the folder may be (re)placed: checked before
    anything is copied, so a refusal leaves nothing behind."""
    load_manifest(dest)
    target = Path(dest) / name
    if target.exists() and not force:
        raise UserError(f"{target}: already exists; pass --force to replace it{hint}")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is a file; remove it or pass another --name")
    return target


def _install(dest, target: Path, files: Sequence[tuple[Path, str]], entry: dict, stats: WalkStats) -> dict:
    """Copy ``files`` into ``target`` and record ``entry`` (completed with the copy's counts) in
    the manifest, whole or not at all: the copy is staged, the manifest written, and only then
    the copy renamed into place, so a failure (a full disk, an unreadable file) leaves neither a
    new folder nor a new entry, and a replaced folder as it was."""
    with fileio.atomic_path(target) as tmp:
        tmp.mkdir()
        _copy_text_files(files, tmp, stats)
        entry = {**entry, **describe_repo(tmp)}
        entry["skipped"] = dict(sorted((Counter(entry["skipped"]) + stats.skipped).items()))
        update_manifest(dest, [entry])
    return entry


def _copy_text_files(files: Sequence[tuple[Path, str]], tmp: Path, stats: WalkStats) -> None:
    """Copy ``(source, relative)`` files into the folder ``tmp``: readable UTF-8 text up to
    ``MAX_FILE_BYTES`` only, the rest counted in ``stats``."""
    for src, rel in files:
        try:
            data = src.read_bytes() if src.stat().st_size <= MAX_FILE_BYTES else None
        except OSError:  # gone since the walk, or not readable (a fifo, no permission)
            stats.skipped["unreadable"] += 1
            continue
        if data is None:
            stats.skipped["too_large"] += 1
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            stats.skipped["not_utf8"] += 1
            continue
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
