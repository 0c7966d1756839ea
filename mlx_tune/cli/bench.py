"""``mlx-tune bench`` and ``mlx-tune demo``: benchmark models (bench.py) and run the whole
pipeline offline (demo.py)."""

from __future__ import annotations

from pathlib import Path

import click

from mlx_tune import layout


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Benchmark models side by side (same as `python -m mlx_tune.bench`; see --help)."""
    from mlx_tune.eval import bench as bench_mod

    # The real command lives in bench.py; forward every argument (--help included) to it.
    bench_mod.command.main(args=list(ctx.args), prog_name="mlx-tune bench", standalone_mode=False)


# ---------------- demo (demo.py)


@click.command()
@click.option(
    "--model", default=None, help="Base model (path or HF id). Default: build the embedded tiny model."
)
@click.option(
    "--repos",
    "repos_mode",
    type=click.Choice(["installed", "clone"]),
    default="installed",
    show_default=True,
    help="Take repositories from installed packages (offline) or clone the ten.",
)
@click.option(
    "--iters", type=int, default=None, help="Training iterations per phase (default: the preset's)."
)
@click.option(
    "--epochs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Passes over each phase's training data instead of --iters (default: the preset's: 2 for the "
    "tools demo on the tiny model, 3 for chat and dot; on the tiny model 3 scored better on phase 7's "
    "validation split for half again the training time).",
)
@click.option("--limit", type=int, default=None, help="Benchmark at most this many held-out queries.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=layout.DEMO_BENCH_DIR,
    show_default=True,
    help="Benchmark output folder.",
)
@click.option(
    "--package",
    "packages",
    multiple=True,
    help="With --repos installed: take this installed distribution (repeatable; default: eight, "
    "from click to anyio).",
)
@click.option(
    "--pretrain-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Pretraining steps of the embedded tiny base on local text (default: tiny build's; cached).",
)
@click.option("--force", is_flag=True, help="Re-run every stage even if its outputs are up to date.")
@click.option(
    "--task",
    "task_name",
    default="tools",
    show_default=True,
    help="The task to demonstrate: tools (the pipeline above), chat (Q&A from docstrings) or dot "
    "(code -> DOT graphs), each base vs tuned; output in benchmarks/demo-TASK unless --out is given.",
)
@click.pass_context
def demo(ctx, model, repos_mode, iters, epochs, limit, out, packages, pretrain_steps, force, task_name):
    """Run the whole pipeline offline: tiny model, data, phases 5-7, training, fusing, benchmark.

    Outputs land in their usual places under the current directory (data/, adapters/, models/,
    benchmarks/demo/). Re-running skips stages whose inputs and settings are unchanged. On a Mac
    with a network: mlx-tune demo --model mlx-community/Qwen2.5-Coder-7B-Instruct-4bit --repos clone
    """
    from mlx_tune.tasks import check_name

    if iters is not None and epochs is not None:
        raise click.UsageError("--iters and --epochs: give one")
    if check_name(task_name) != "tools":
        from mlx_tune.tasks.demo import TaskDemoSettings, run_task_demo

        default_out = ctx.get_parameter_source("out") == click.core.ParameterSource.DEFAULT
        settings = TaskDemoSettings(
            model=model,
            out=None if default_out else out,
            iters=iters,
            limit=limit,
            pretrain_steps=pretrain_steps,
            **({"epochs": epochs} if epochs is not None else {}),
        )
        try:
            run_task_demo(task_name, settings)
        except KeyboardInterrupt:
            click.echo("demo: interrupted", err=True)
            raise SystemExit(130) from None
        return
    from mlx_tune.demo import DemoSettings, run_demo

    extra = {"packages": tuple(packages)} if packages else {}
    if epochs is not None:
        extra["epochs"] = epochs
    if pretrain_steps is not None:
        extra["pretrain_steps"] = pretrain_steps
    try:
        run_demo(
            DemoSettings(
                model=model, repos=repos_mode, iters=iters, bench_out=out, limit=limit, force=force, **extra
            )
        )
    except KeyboardInterrupt:
        click.echo(
            "demo: interrupted; the unfinished stage is not marked done (run again to redo it)", err=True
        )
        raise SystemExit(130) from None
