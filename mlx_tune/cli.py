"""The ``mlx-tune`` command: a thin click layer over the stage modules.

Each command parses options, calls one plain function of its stage module and prints the
result. Stage modules are imported inside the commands so ``mlx-tune --help`` stays fast and
mlx is loaded only by the commands that need it. A ``UserError`` from any stage becomes one
``Error:`` line and exit code 1, with no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlx_tune import UserError, __version__, layout, train_config

# Commands that run a model: on Linux they restart once with the system OpenBLAS (mlx_tune.cpu_blas).
HEAVY_COMMANDS = {"train", "fuse", "bench", "demo", "tiny"}


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


def run(argv: list[str] | None = None) -> None:
    """The console-script entry: decide on OpenBLAS once (a heavy command restarts itself with it
    preloaded on Linux, before any work), then run the click group. Calling ``main`` directly, as
    tests do with ``CliRunner``, never restarts the process."""
    args = sys.argv[1:] if argv is None else argv
    light = args[:1] == ["bench"] and args[1:2] in (["score"], ["report"])  # no model runs
    if args and args[0] in HEAVY_COMMANDS and not light and "--help" not in args and "-h" not in args:
        from mlx_tune import cpu_blas

        cpu_blas.reexec_with_openblas()
    main(args)


@main.group(cls=_Group)
def repos() -> None:
    """Collect source repositories into data/repos/ (clone, local paths, installed packages)."""


@main.group(cls=_Group)
def data() -> None:
    """Generate, merge, validate and describe training data."""


# ---------------- repos commands (repos.py)

_DEST_OPTION = click.option(
    "--dest",
    default=str(layout.REPOS_DIR),
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder that holds one sub-folder per repository and manifest.json.",
)


@repos.command("clone")
@_DEST_OPTION
@click.option("--only", "only", multiple=True, metavar="NAME", help="Clone only these (repeatable).")
@click.option(
    "--repo",
    "extra",
    multiple=True,
    metavar="NAME=URL",
    help="Clone this repository instead of the default ten (repeatable).",
)
@click.option("--jobs", default=4, show_default=True, type=click.IntRange(1, 32), help="Parallel clones.")
def repos_clone(dest: str, only: tuple[str, ...], extra: tuple[str, ...], jobs: int) -> None:
    """Shallow-clone the popular repositories (fastapi, flask, pytest, typer, click, httpx,
    starlette, pydantic, attrs, structlog) into DEST/<name>/, skipping those already there,
    and update DEST/manifest.json. Exits 1 if any clone failed (git's reason is printed)."""
    from mlx_tune import repos as repos_mod

    targets = dict(repos_mod.POPULAR_REPOS)
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
    results = repos_mod.clone_repos(dest, targets, jobs=jobs)
    for r in results:
        files = f" ({r.entry['py_files']} .py files)" if r.entry else ""
        click.echo(f"{r.status:>8}  {r.name}{files}" + (f": {r.reason}" if r.reason else ""))
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        click.echo(f"Error: {len(failed)} of {len(results)} failed to clone: {', '.join(failed)}", err=True)
        raise SystemExit(1)


@repos.command("add")
@click.argument("path", type=click.Path())
@click.option("--name", default=None, help="Folder name under DEST (default: the directory's name).")
@click.option("--force", is_flag=True, help="Replace DEST/<name> if it exists.")
@_DEST_OPTION
def repos_add(path: str, name: str | None, force: bool, dest: str) -> None:
    """Copy a local directory or git checkout into DEST/<name>/ (text files up to 1 MB; symlinks
    leaving the directory are not followed) and record it, with its commit, in the manifest."""
    from mlx_tune import repos as repos_mod

    e = repos_mod.add_path(path, dest, name=name, force=force)
    click.echo(f"added {e['name']}: {e['py_files']} .py files, {e['bytes']} bytes, commit {e['commit']}")
    if e["skipped"]:
        click.echo("  skipped: " + ", ".join(f"{k} {v}" for k, v in e["skipped"].items()))


@repos.command("add-installed")
@click.argument("dists", nargs=-1, required=True)
@_DEST_OPTION
def repos_add_installed(dists: tuple[str, ...], dest: str) -> None:
    """Copy the .py/.html/.md files of installed distributions (e.g. click jinja2 tqdm) into
    DEST/<name>/, recording each version in the manifest. Works offline; nothing is imported."""
    from mlx_tune import repos as repos_mod

    for e in repos_mod.add_installed(list(dists), dest):
        click.echo(f"added {e['name']} {e['version']}: {e['py_files']} .py files, {e['bytes']} bytes")


# ---------------- data: repo/domain examples (examples.py)


def _count_option(kind: str, default: int, help: str):
    """``--<kind>`` (parameter ``n_<kind>``): how many examples of one kind; used by the
    repo-examples, domain-examples and html-examples commands."""
    return click.option(
        f"--{kind}", f"n_{kind}", default=default, show_default=True, type=click.IntRange(0), help=help
    )


def _counts(kind: str) -> tuple[int, int, int]:
    from mlx_tune.examples import DEFAULT_COUNTS, DOMAIN_COUNTS

    counts = DOMAIN_COUNTS if kind == "domain" else DEFAULT_COUNTS
    return counts["grep"], counts["read"], counts["direct"]


def _example_options(grep: int, read: int, direct: int, output: str):
    """The options repo-examples and domain-examples share (only the defaults differ)."""
    options = [
        click.option(
            "-o",
            "--output",
            default=output,
            show_default=True,
            type=click.Path(dir_okay=False),
            help="JSONL file to write (atomically).",
        ),
        _count_option("grep", grep, "Number of grep (locate) examples."),
        _count_option("read", read, "Number of read (show a file) examples."),
        _count_option("direct", direct, "Number of direct examples (Python and its standard library)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Random seed."),
        click.option(
            "--format",
            "fmt",
            default="tools",
            show_default=True,
            type=click.Choice(["tools", "code"]),
            help="tools: mlx-lm tool_calls; code: a Python grep()/read() block.",
        ),
        click.option(
            "--jobs", default=None, type=click.IntRange(1), help="Worker processes [default: all cores]."
        ),
        click.option(
            "--style",
            default="trajectory",
            show_default=True,
            type=click.Choice(["trajectory", "call-only"]),
            help="trajectory: call, real tool output and grounded answer; call-only: the plan's one call.",
        ),
    ]

    def wrap(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return wrap


@data.command("repo-examples")
@click.option(
    "--repos",
    "repos_dir",
    default=str(layout.REPOS_DIR),
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder whose sub-folders are repositories (manifest.json used when present).",
)
@_example_options(*_counts("repos"), str(layout.examples_file("repos")))
def data_repo_examples(repos_dir, output, n_grep, n_read, n_direct, seed, fmt, jobs, style) -> None:
    """Generate grep / read training examples from the repositories in REPOS (AST only; each
    runs the real grep/read and answers from its output) and direct ones about Python."""
    from mlx_tune import examples

    counts = {"grep": n_grep, "read": n_read, "direct": n_direct}
    result = examples.repo_examples(repos_dir, output, counts, seed=seed, fmt=fmt, jobs=jobs, style=style)
    click.echo(examples.format_summary(result))


@data.command("domain-examples")
@click.option(
    "--repo",
    "repo",
    default=None,
    type=click.Path(file_okay=False),
    help="Repository to learn from (default: this project's library source, the mlx_tune package).",
)
@_example_options(*_counts("domain"), str(layout.examples_file("domain")))
def data_domain_examples(repo, output, n_grep, n_read, n_direct, seed, fmt, jobs, style) -> None:
    """Generate the phase-5 domain set from one repository with the same generator as
    repo-examples (meta.source "domain:<name>"). A small tree yields what it can; the
    shortfall is reported, not an error."""
    from mlx_tune import examples

    counts = {"grep": n_grep, "read": n_read, "direct": n_direct}
    result = examples.domain_examples(output, repo, counts, seed=seed, fmt=fmt, jobs=jobs, style=style)
    click.echo(examples.format_summary(result))


# ---------------- data: html, merge, validate, stats


@data.command("html-examples")
@click.option(
    "-o",
    "--out",
    default=str(layout.examples_file("html")),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="JSONL file to write.",
)
@click.option(
    "--html-dir",
    default=str(layout.HTML_DIR),
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write the HTML pages the grep/read examples refer to.",
)
@_count_option("grep", 9, "grep examples.")
@_count_option("read", 5, "read examples.")
@_count_option("direct", 16, "direct answers.")
@click.option("--seed", default=0, show_default=True, help="Seed for choosing and phrasing examples.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tools", "code"]),
    default="tools",
    show_default=True,
    help="tools: tool_calls (mlx-lm tools format); code: a Python block calling grep()/read().",
)
@click.option(
    "--style",
    type=click.Choice(["trajectory", "call-only"]),
    default="trajectory",
    show_default=True,
    help="trajectory: call, real tool output, grounded answer; call-only: records end with the call.",
)
def data_html_examples(out, html_dir, n_grep, n_read, n_direct, seed, fmt, style) -> None:
    """Write HTML pages to --html-dir and grounded HTML examples (semantic HTML, forms, tables,
    navigation, accessibility) to --out."""
    from mlx_tune.html_examples import generate_html_examples

    counts = generate_html_examples(out, html_dir, n_grep, n_read, n_direct, seed=seed, fmt=fmt, style=style)
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    click.echo(f"wrote {sum(counts.values())} examples ({detail}) to {out}; pages in {html_dir}/")


@data.command("merge")
@click.option(
    "--phase",
    required=True,
    help="Phase number (a shipped phaseN.yaml, or one in --phases-dir) or a phase YAML path.",
)
@click.option(
    "--out", default=None, type=click.Path(file_okay=False), help="Output dir [default: data/phaseN]."
)
@click.option(
    "--phases-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where your own phaseN.yaml configs live [default: the shipped ones, mlx_tune/configs/phases/].",
)
def data_merge(phase, out, phases_dir) -> None:
    """Merge a phase's inputs: validate, drop duplicates, split train/valid/test by the file that
    defines each symbol (no symbol or file of valid/test in train), keep a share of question
    templates for test only, and write data/phaseN/{train,valid,test}.jsonl and manifest.json."""
    from mlx_tune.merge import format_manifest, merge_phase

    manifest = merge_phase(phase, out, phases_dir)
    click.echo(format_manifest(manifest, out or layout.phase_data_dir(manifest["phase"])))


@data.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Local model or tokenizer dir; enables token-length checks.")
@click.option(
    "--max-seq-length", default=None, type=click.IntRange(1), help="Longest allowed record, in tokens."
)
def data_validate(files, model, max_seq_length) -> None:
    """Check JSONL records against the record format; print every problem as file:line: field."""
    from mlx_tune.datacheck import validate_files

    n = validate_files(list(files), model=model, max_seq_length=max_seq_length)
    click.echo(f"{n} records OK")


@data.command("stats")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@click.option("--model", default=None, help="Local model or tokenizer dir; adds token-length percentiles.")
def data_stats(path, as_json, model) -> None:
    """Describe a JSONL file or a phase dir: counts by category/origin/source, tool vs direct
    share per split, token lengths, how ready the dataset's size is for training, and its
    quality (multi-turn share, question templates, near-duplicates, literal class/def patterns,
    questions that give the searched name away, shapes and styles)."""
    import json

    from mlx_tune.datacheck import dataset_stats, format_stats

    stats = dataset_stats(path, model=model)
    click.echo(json.dumps(stats, indent=2, sort_keys=True) if as_json else format_stats(stats))


# ---------------- tiny model (tiny.py)


@main.group(cls=_Group)
def tiny() -> None:
    """The embedded tiny model: a small Qwen2 built offline from local files (tests, demo)."""


@tiny.command("build")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Model directory to write."
)
@click.option("--bits", type=click.Choice(["4", "8"]), default=None, help="Also quantize (default: float32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the weights' random init.")
@click.option(
    "--pretrain-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Language-model pretraining steps on local Python text (cached per machine). "
    "Default: the tiny recipe's value.",
)
@click.option(
    "--corpus",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Extra tokenizer text (repeatable); JSONL chat records are rendered with the chat template.",
)
@click.option("--vocab-size", type=click.IntRange(min=300), default=None, help="BPE vocabulary size.")
@click.option("--hidden-size", type=click.IntRange(min=8), default=None, help="Model width.")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Number of transformer layers.")
def tiny_build(out, bits, seed, pretrain_steps, corpus, vocab_size, hidden_size, layers) -> None:
    """Build the tiny Qwen2 model directory (config, weights, BPE tokenizer, chat template).

    Loads with mlx_lm.load, `mlx_lm generate --model OUT` and transformers.AutoTokenizer.
    Same inputs and seed give byte-identical files.
    """
    from pathlib import Path

    from mlx_tune import tiny as tiny_mod

    size = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_hidden_layers": layers}
    kwargs = {k: v for k, v in size.items() if v is not None}
    if pretrain_steps is not None:
        kwargs["pretrain_steps"] = pretrain_steps
    path = tiny_mod.build_tiny_model(
        out, bits=int(bits) if bits else None, seed=seed, corpus=[Path(c) for c in corpus] or None, **kwargs
    )
    click.echo(f"wrote {path} ({tiny_mod.count_parameters(path):,} parameters)")


# ---------------- train and fuse (train.py, fuse.py)


@main.command("train")
@click.option(
    "--phase",
    type=int,
    help="Read the shipped phaseN.yaml (train: section); data data/phaseN, adapters adapters/phaseN.",
)
@click.option("--preset", help="Start from a preset: a shipped name (qlora, coder7b, tiny) or a YAML file.")
@click.option(
    "-c", "--config", type=click.Path(), help="A YAML file of training settings (mlx-lm keys work)."
)
@train_config.click_options
@click.option(
    "--resume",
    is_flag=False,
    flag_value="latest",
    default=None,
    type=click.Choice(["latest", "auto"]),
    help="Continue the newest checkpoint (to the same or a larger --iters/--epochs); "
    "--resume auto: continue an interrupted run if there is one, else start fresh.",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty adapter folder (when the new run ends).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(phase, preset, config, resume, overwrite, quiet, **options) -> None:
    """Train a LoRA / DoRA / full fine-tune with mlx (in-process).

    Settings: defaults < --preset < phase YAML train: < -c config < options. Writes
    adapters.safetensors + adapter_config.json (loadable with mlx_lm.load(model, adapter_path=...)),
    metrics.jsonl, summary.json, best/ and checkpoints/, into ADAPTER.tmp-PID first, swapped in at
    the end (an existing adapter stays whole until then). Ctrl-C or SIGTERM saves a checkpoint and
    exits 130 or 143; --resume goes on. A non-finite loss stops with an error, keeping the checkpoints.
    Runs on several processes or Macs under `mlx.launch` (see the README).
    """
    from mlx_tune import train as train_mod

    settings = train_mod.resolve_settings(phase=phase, preset=preset, config=config, overrides=options)
    try:
        summary = train_mod.train(
            settings,
            resume={None: False, "latest": True, "auto": "auto"}[resume],
            overwrite=overwrite,
            progress=not quiet,
        )
    except KeyboardInterrupt as e:  # a second signal: stopped at once, the last periodic checkpoint stays
        click.echo("train: interrupted at once; resume from the last checkpoint with --resume", err=True)
        raise SystemExit(143 if getattr(e, "signal", None) == "SIGTERM" else 130) from None
    click.echo(train_mod.describe(summary))
    click.echo(f"adapter: {settings.adapter_path}")
    if summary["status"] == "interrupted":
        where = f" in {summary['run_folder']}" if summary.get("run_folder") else ""
        click.echo(
            f"train: interrupted at step {summary['step']}/{summary['iters']}; checkpoint saved{where}, "
            "continue with --resume",
            err=True,
        )
        raise SystemExit(143 if summary.get("signal") == "SIGTERM" else 130)


@main.command("fuse")
@click.option(
    "--phase", type=int, help="Use adapters/phaseN and its model; save to models/phaseN-fused-8bit."
)
@click.option("--model", help="Base model (default: the adapter's adapter_config.json model).")
@click.option("--adapter-path", help="Adapter directory (adapters.safetensors + adapter_config.json).")
@click.option("--save-path", help="Output model directory.")
@click.option(
    "--bits",
    type=click.Choice(["4", "8", "16"]),
    default="8",
    show_default=True,
    help="Quantize the fused model to this many bits (16: keep float).",
)
@click.option("--group-size", type=int, default=64, show_default=True, help="Quantization group size.")
@click.option(
    "--verify-prompts",
    type=int,
    default=8,
    show_default=True,
    help="Validation prompts to compare greedy outputs on (0: skip).",
)
@click.option("--force", is_flag=True, help="Replace an existing save path.")
@click.option(
    "--license",
    "license_",
    help="License in the model card's metadata (default: the base's card's license, else 'other').",
)
def fuse_cmd(
    phase, model, adapter_path, save_path, bits, group_size, verify_prompts, force, license_
) -> None:
    """Fuse an adapter into its base and save an mlx-lm model (8-bit by default).

    A quantized base is dequantized, fused in full precision, then quantized to --bits, so the
    trained behaviour survives (fusing straight back to 4 bits loses it: mlx-lm issue 1172).
    Greedy outputs are then checked against base + adapter. OUT/README.md is a model card with
    Hugging Face metadata and usage; OUT/tools.json holds the system prompt and tools it learned with.
    """
    from mlx_tune import fuse as fuse_mod

    report = fuse_mod.fuse(
        model=model,
        adapter_path=adapter_path,
        save_path=save_path,
        phase=phase,
        bits=int(bits),
        group_size=group_size,
        verify_prompts=verify_prompts,
        force=force,
        license=license_,
    )
    click.echo(fuse_mod.describe(report))


@main.command("upload")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repository as private.")
def upload_cmd(folder, repo_id, private) -> None:
    """Push a fused model FOLDER to the Hugging Face Hub as REPO_ID (owner/name), keeping its card.

    Needs a token (`hf auth login` or HF_TOKEN). Unlike `mlx_lm upload`, the model card that
    `mlx-tune fuse` wrote (metadata, training, verification, usage) is uploaded unchanged.
    """
    from mlx_tune import upload as upload_mod

    url = upload_mod.upload(folder, repo_id, private=private)
    click.echo(f"uploaded {folder} to {url}")


# ---------------- bench (bench.py)


@main.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Benchmark models side by side (same as `python -m mlx_tune.bench`; see --help)."""
    from mlx_tune import bench as bench_mod

    # The real command lives in bench.py; forward every argument (--help included) to it.
    bench_mod.command.main(args=list(ctx.args), prog_name="mlx-tune bench", standalone_mode=False)


# ---------------- demo (demo.py)


@main.command()
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
def demo(model, repos_mode, iters, limit, out, packages, pretrain_steps, force):
    """Run the whole pipeline offline: tiny model, data, phases 5-7, training, fusing, benchmark.

    Outputs land in their usual places under the current directory (data/, adapters/, models/,
    benchmarks/demo/). Re-running skips stages whose inputs and settings are unchanged. On a Mac
    with a network: mlx-tune demo --model mlx-community/Qwen2.5-Coder-7B-Instruct-4bit --repos clone
    """
    from mlx_tune.demo import DemoSettings, run_demo

    extra = {"packages": tuple(packages)} if packages else {}
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


if __name__ == "__main__":
    run()
