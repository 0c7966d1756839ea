"""The ``mlx-tune`` command: a thin click layer over the stage modules.

Each command parses options, calls one plain function of its stage module and prints the
result. Stage modules are imported inside the commands so ``mlx-tune --help`` stays fast and
mlx is loaded only by the commands that need it. A ``UserError`` from any stage becomes one
``Error:`` line and exit code 1, with no traceback.
"""

from __future__ import annotations

import click

from mlx_tune import UserError, __version__


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-tune")
def main() -> None:
    """Fine-tune local coder models on Apple Silicon: repositories -> tool-use data ->
    LoRA adapters (mlx-lm) -> fused 8-bit models -> benchmark."""


@main.group(cls=_Group)
def repos() -> None:
    """Collect source repositories into data/repos/ (clone, local paths, installed packages)."""


@main.group(cls=_Group)
def data() -> None:
    """Generate, merge, validate and describe training data."""


# ---------------- repos commands (repos.py)


# ---------------- data: repo/domain examples (examples.py)


# ---------------- data: html, merge, validate, stats


# ---------------- tiny model (tiny.py)


# ---------------- train and fuse (train.py, fuse.py)


# ---------------- bench (bench.py)


# ---------------- demo (demo.py)


if __name__ == "__main__":
    main()
