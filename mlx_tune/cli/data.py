"""``mlx-tune repos`` and ``mlx-tune data``: collect repositories and generate, merge, validate
and describe training data (repos.py, examples.py, html_examples.py, merge.py, datacheck.py)."""

from __future__ import annotations

import click

from mlx_tune import layout
from mlx_tune.cli.group import Group
from mlx_tune.tasks import task_names


@click.group(cls=Group)
def repos() -> None:
    """Collect source repositories into data/repos/ (clone, local paths, installed packages)."""


@click.group(cls=Group)
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
    from mlx_tune.data import repos as repos_mod

    results = repos_mod.clone_repos(dest, repos_mod.clone_targets(only, extra), jobs=jobs)
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
    from mlx_tune.data import repos as repos_mod

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
    from mlx_tune.data import repos as repos_mod

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
    from mlx_tune.data.examples import DEFAULT_COUNTS, DOMAIN_COUNTS

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
    from mlx_tune.data import examples

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
    from mlx_tune.data import examples

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
    from mlx_tune.data.html_examples import generate_html_examples

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
    from mlx_tune.data.merge import format_manifest, merge_phase

    manifest = merge_phase(phase, out, phases_dir)
    click.echo(format_manifest(manifest, out or layout.phase_data_dir(manifest["phase"])))


@data.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Local model or tokenizer dir; enables token-length checks.")
@click.option(
    "--max-seq-length", default=None, type=click.IntRange(1), help="Longest allowed record, in tokens."
)
@click.option(
    "--task",
    type=click.Choice(task_names()),
    default=None,
    help="Also check that every record is of this task (meta.task; tools when unset).",
)
def data_validate(files, model, max_seq_length, task) -> None:
    """Check JSONL records against the record format; print every problem as file:line: field."""
    from mlx_tune.data.datacheck import validate_files

    n = validate_files(list(files), model=model, max_seq_length=max_seq_length, task=task)
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

    from mlx_tune.data.datacheck import dataset_stats, format_stats

    stats = dataset_stats(path, model=model)
    click.echo(json.dumps(stats, indent=2, sort_keys=True) if as_json else format_stats(stats))


# ---------------- task data commands (mlx_tune.tasks)


def _add_task_commands() -> None:
    from mlx_tune.tasks import data_commands

    for name, command in data_commands():  # `data combine`: the chat task's data (mlx_tune.tasks.chat)
        data.add_command(command, name)


_add_task_commands()
