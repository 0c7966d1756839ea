#!/usr/bin/env python3
"""Shallow-clone fastapi, flask, pytest, typer, click, httpx, starlette, pydantic, attrs and
structlog into data/repos/ and write data/repos/manifest.json.

Same as ``mlx-tune repos clone``; options pass through (``--help`` lists them).
Offline? Use ``mlx-tune repos add PATH`` or ``mlx-tune repos add-installed DIST...`` instead.
"""

import sys

from mlx_tune.cli import main

if __name__ == "__main__":
    main(["repos", "clone", *sys.argv[1:]], prog_name="clone_popular_repos.py")
