#!/usr/bin/env python3
"""Set up and run mlx_tune with nothing but Python: creates .venv if missing, installs the
project into it, then runs the demo or the tests.

    python3 dev.py demo    # the main job, offline, on the embedded default
    python3 dev.py test    # the test suite

On Linux, mlx's CPU wheel links a slow reference BLAS. Before the demo, when no OpenBLAS is
installed, dev.py installs the distribution's package (Debian/Ubuntu ``libopenblas0-pthread``,
Fedora ``openblas``) if it runs as root with apt-get or dnf; otherwise it prints the command to
run. ``MLX_TUNE_BLAS=off`` skips this (and the preload itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".mlx_tune-installed"


def ensure_venv() -> None:
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pyproject = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.read_text() == pyproject.read_text():
        return
    print("installing mlx_tune and its dependencies into .venv", flush=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(pyproject.read_text())


OPENBLAS_PACKAGES = {"apt-get": "libopenblas0-pthread", "dnf": "openblas"}


def find_openblas() -> str | None:
    """The OpenBLAS that ``mlx_tune.models.cpu_blas`` would preload (asked in .venv, so where to
    look is written once); ``None`` when there is none or MLX_TUNE_BLAS=off."""
    code = "from mlx_tune.models.cpu_blas import find_openblas as f; print(f() or '')"
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or None


def ensure_openblas() -> None:
    """Install the system OpenBLAS on Linux when missing and allowed (see the module doc)."""
    if not sys.platform.startswith("linux") or os.environ.get("MLX_TUNE_BLAS", "").lower() == "off":
        return
    if find_openblas():
        return
    manager = next((m for m in OPENBLAS_PACKAGES if shutil.which(m)), None)
    if manager is None:
        print(
            "note: no OpenBLAS found; training on the CPU will be slow (install your distribution's OpenBLAS)"
        )
        return
    package = OPENBLAS_PACKAGES[manager]
    command = [manager, "install", "-y", package]
    if os.geteuid() != 0:
        print(f"note: no OpenBLAS found; training will be ~5x faster after: sudo {' '.join(command)}")
        return
    print(
        f"installing {package} with {manager} for a fast CPU BLAS (MLX_TUNE_BLAS=off skips this)", flush=True
    )
    quiet = {"stdout": subprocess.DEVNULL}
    ok = subprocess.run(command, **quiet).returncode == 0
    if not ok and manager == "apt-get":
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        ok = subprocess.run(command, **quiet).returncode == 0
    if not ok:
        print(f"note: could not install {package}; the demo runs on the bundled (slow) BLAS")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "test":
        # The tests run in-process, past the console script's OpenBLAS restart: preload it here
        # when installed (never installed for tests), as the commands themselves would.
        env = dict(os.environ)
        lib = find_openblas()
        if lib and "openblas" not in env.get("LD_PRELOAD", ""):
            env["LD_PRELOAD"] = " ".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
        return subprocess.run([PY, "-m", "pytest", *rest], cwd=ROOT, env=env).returncode
    ensure_openblas()
    return subprocess.run([PY, "-m", "mlx_tune", "demo", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
