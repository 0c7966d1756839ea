"""The ``mlx-tune`` command: a thin click layer over the stage modules.

This package's ``__init__`` is the entry: the ``main`` group, the console script ``run`` (which
makes the OpenBLAS decision) and the list of commands. The commands live by stage in ``cli.data``
(repos, data), ``cli.model`` (tiny, train, fuse, upload) and ``cli.bench`` (bench, demo);
``cli.group`` holds the group class they share. Each command parses options, calls one plain
function of its stage module and prints the result. Stage modules are imported inside the commands
so ``mlx-tune --help`` stays fast and mlx is loaded only by the commands that need it. A ``UserError`` from any stage becomes one ``Error:`` line and exit code 1,
with no traceback.
"""

from __future__ import annotations

import sys

import click

from mlx_tune import __version__
from mlx_tune.cli import bench as cli_bench
from mlx_tune.cli import data as cli_data
from mlx_tune.cli import model as cli_model
from mlx_tune.cli.group import Group

# Commands that run a model: on Linux they restart once with the system OpenBLAS (mlx_tune.models.cpu_blas).
HEAVY_COMMANDS = {"train", "fuse", "bench", "demo", "tiny"}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-tune")
def main() -> None:
    """Fine-tune local coder models on Apple Silicon: repositories -> tool-use data ->
    LoRA adapters (mlx-lm) -> fused 8-bit models -> benchmark."""


def run(argv: list[str] | None = None) -> None:
    """The console-script entry: decide on OpenBLAS once (a heavy command restarts itself with it
    preloaded on Linux, before any work), then run the click group. Calling ``main`` directly, as
    tests do with ``CliRunner``, never restarts the process."""
    args = sys.argv[1:] if argv is None else argv
    light = args[:1] == ["bench"] and args[1:2] in (["score"], ["report"])  # no model runs
    if args and args[0] in HEAVY_COMMANDS and not light and "--help" not in args and "-h" not in args:
        from mlx_tune.models import cpu_blas

        cpu_blas.reexec_with_openblas()
    main(args)


# Registered in the order of the pipeline; `--help` lists them alphabetically.
for _command in (
    cli_data.repos,
    cli_data.data,
    cli_model.tiny,
    cli_model.train_cmd,
    cli_model.fuse_cmd,
    cli_model.upload_cmd,
    cli_bench.bench,
    cli_bench.demo,
):
    main.add_command(_command)


if __name__ == "__main__":
    run()
