#!/usr/bin/env python3
"""Set up and run mlx_tune with nothing but Python: creates .venv if missing, installs the
project into it, then runs the demo or the tests.

    python3 dev.py demo    # the main job, offline, on the embedded default
    python3 dev.py test    # the test suite
"""

from __future__ import annotations

import os
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "test":
        return subprocess.run([PY, "-m", "pytest", *rest], cwd=ROOT).returncode
    return subprocess.run([PY, "-m", "mlx_tune", "demo", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
