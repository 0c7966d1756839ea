"""The offline end-to-end demo: one command from nothing to a benchmark table.

Stages, each skipped when its outputs exist and its inputs and settings are unchanged (a
fingerprint per stage is kept in ``data/cache/demo_stamps.json``); the paths are
:mod:`mlx_tune.layout`'s:

1. the embedded tiny model (``models/tiny``), unless ``--model`` names another base;
2. repositories: installed packages copied into ``data/repos`` (or ``--repos clone``);
3. examples: the domain set (this project's source), repository examples, HTML examples;
4. merges of phases 5, 6 and 7 into ``data/phaseN``;
5. training of each phase into ``adapters/phaseN``;
6. fusing phases 5 and 7 into ``models/phaseN-fused-8bit``;
7. on the tiny model, the mission's QLoRA path once: a 4-bit base (``models/tiny-4bit``), LoRA on
   phase 5 (``adapters/phase5-qlora``), fused into ``models/phase5-qlora-fused-8bit``;
8. the benchmark of base, adapters, fused models and baselines into ``benchmarks/demo``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import click

from mlx_tune import UserError, layout
from mlx_tune.demo_stages import Runner, Stage, Stamps, parallel_workers
from mlx_tune.fileio import write_json
from mlx_tune.models import cpu_blas
from mlx_tune.models.tiny import DEFAULT_PRETRAIN_STEPS

TINY_MODEL_DIR = layout.TINY_MODEL_DIR
TINY_4BIT_DIR = layout.TINY_4BIT_DIR
# The mission's path on the tiny model: LoRA adapters on a 4-bit base (QLoRA), fused into 8 bits.
# On a 2-core CPU, mlx's 4-bit matmuls make a LoRA step several times slower than a float32 step
# with OpenBLAS, so this one phase exercises the path end to end (quantized base, LoRA,
# dequantize-fuse-requantize, benchmark) while phases 5-7 fine-tune the float32 base (see
# mlx_tune/configs/presets/tiny.yaml for the measurements).
QLORA_PHASE = layout.QLORA_PHASE
QLORA_OVERRIDES = {
    "fine_tune_type": "lora",
    "train_embeddings": False,
    "rank": 16,
    "learning_rate": 1e-3,
    "epochs": 1,
}
STAMPS = layout.DEMO_STAMPS
# Installed with mlx_tune's own dependencies on every machine, so the demo needs no network.
DEMO_PACKAGES = ("click", "typer", "pydantic", "attrs", "jinja2", "tqdm", "rich", "anyio")
PHASES = layout.PHASES
FUSED_PHASES = layout.FUSED_PHASES


@dataclass
class DemoSettings:
    """What the demo runs; the defaults are the offline demo on the embedded tiny model."""

    model: str | None = None
    """Base model (path or Hugging Face id); ``None`` builds and uses the embedded tiny model."""
    repos: str = "installed"
    """``installed`` copies installed packages (offline); ``clone`` clones the plan's ten repos."""
    iters: int | None = None
    """Training iterations per phase (``None``: the preset's or the phase config's)."""
    epochs: float | None = None
    """Passes over each phase's training data instead (``None``: the preset's or the phase config's;
    the tiny preset's 2 keep the demo within 15 minutes on two cores)."""
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS
    """Pretraining steps of the embedded tiny base on local text (cached per machine)."""
    bench_out: Path = layout.DEMO_BENCH_DIR
    """Where the benchmark writes results.json, results.md and bench.log."""
    limit: int | None = None
    """Benchmark at most this many held-out queries (``None``: all)."""
    packages: tuple[str, ...] = DEMO_PACKAGES
    """Installed distributions to take as repositories with ``repos="installed"`` (missing ones skipped)."""
    load_repeats: int = 1
    """Fresh processes per model for the benchmark's median load time (one here: each costs a Python
    start and an mlx import, ~2 s, for a tiny model that loads in ~0.1 s; ``bench`` defaults to 3)."""
    force: bool = False
    """Re-run every stage even when its outputs are up to date."""
    log: Callable[[str], None] = field(default=lambda s: click.echo(s, err=True))


def run_demo(s: DemoSettings) -> dict:
    """Run every stage (skipping those already done) and return the benchmark results."""
    runner = Runner(Stamps(STAMPS, s.force), s.log)
    timings = runner.timings
    start = time.perf_counter()
    s.log(f"[demo] {cpu_blas.describe()}")

    def stage(name: str, settings: dict, inputs: list[Path], outputs: list[Path], run: Callable[[], object]):
        runner.run(Stage(name, settings, inputs, outputs, run))

    model = s.model or str(TINY_MODEL_DIR)
    tiny = s.model is None
    if tiny:
        from mlx_tune.models.tiny import build_tiny_model

        stage(
            "tiny model",
            {"seed": 0, "pretrain_steps": s.pretrain_steps},
            [],
            [TINY_MODEL_DIR / "config.json"],
            lambda: build_tiny_model(TINY_MODEL_DIR, seed=0, pretrain_steps=s.pretrain_steps),
        )

    _data_stages(s, stage)
    # Each phase's training (and fuse) is a lane of its own, as is the QLoRA path; the longest first.
    workers = parallel_workers(tiny)
    lanes = [_phase_lane(s, n, model, tiny, workers <= 1) for n in sorted(PHASES, key=lambda n: -n)]
    if tiny:
        lanes.insert(2, _qlora_lane(s, workers <= 1))
    runner.run_lanes(lanes, workers)

    from mlx_tune.eval.bench import format_table, project_models, run_benchmark

    models = project_models(model, qlora=tiny)
    queries = layout.query_file()
    results_file = s.bench_out / "results.json"
    # Every local folder the models are made of (a Hugging Face id is a placeholder "-").
    model_paths = [Path(model) if Path(model).exists() else Path("-"), queries]
    model_paths += [Path(p) for spec in models.values() for p in spec.split("@") if p != model]
    stage(
        "benchmark",
        {"models": models, "repeats": s.load_repeats, "limit": s.limit},
        model_paths,
        [results_file, s.bench_out / "results.md"],
        lambda: run_benchmark(models, queries, s.bench_out, repeats=s.load_repeats, limit=s.limit),
    )
    results = json.loads(results_file.read_text())
    click.echo(format_table(results))
    total = time.perf_counter() - start
    if all(seconds is None for seconds in timings.values()):
        s.log(f"[demo] everything up to date; results in {s.bench_out}/ (--force re-runs it all)")
        return results
    write_json(
        s.bench_out / "demo_run.json",
        {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "blas": cpu_blas.describe(),
            "settings": {
                "model": model,
                "repos": s.repos,
                "packages": list(s.packages),
                "iters": s.iters,
                "epochs": s.epochs,
                "pretrain_steps": s.pretrain_steps if tiny else None,
                "limit": s.limit,
            },
            "total_seconds": round(total, 1),
            "stage_seconds": timings,
        },
    )
    s.log(f"[demo] finished in {total / 60:.1f} min; results in {s.bench_out}/")
    return results


def _data_stages(s: DemoSettings, stage) -> None:
    from mlx_tune.data import datacheck, examples, html_examples, merge, repos

    repos_dir = layout.REPOS_DIR
    if s.repos == "clone":

        def get_repos():
            failed = [r for r in repos.clone_repos(repos_dir) if r.status == "failed"]
            for r in failed:
                s.log(f"[demo] clone {r.name} failed: {r.reason}")

        stage(
            "repositories (clone)",
            {"names": sorted(repos.POPULAR_REPOS)},
            [],
            [repos_dir / "manifest.json"],
            get_repos,
        )
    elif s.repos == "installed":
        names = [d for d in s.packages if _installed(d)]
        versions = {d: importlib.metadata.version(d) for d in names}
        stage(
            "repositories (installed packages)",
            versions,
            [],
            [repos_dir / d for d in names],
            lambda: repos.add_installed(names, dest=repos_dir),
        )
    else:
        raise UserError(f"--repos: {s.repos!r} is neither 'installed' nor 'clone'")

    domain_out = layout.examples_file("domain")
    repo_out = layout.examples_file("repos")
    html_out = layout.examples_file("html")
    domain_root = examples.default_domain_root()
    stage(
        "domain examples",
        {"root": str(domain_root)},
        [domain_root / "mlx_tune"],
        [domain_out],
        lambda: examples.domain_examples(domain_out),
    )
    stage(
        "repository examples",
        {},
        [repos_dir],
        [repo_out],
        lambda: examples.repo_examples(repos_dir, repo_out),
    )
    stage("html examples", {}, [], [html_out], lambda: html_examples.generate_html_examples(html_out))
    for n in PHASES:
        phase_file = layout.phase_config_path(n)
        inputs = [phase_file, domain_out, repo_out, html_out]
        stage(
            f"merge phase {n}",
            {},
            inputs,
            [layout.phase_data_dir(n) / "manifest.json"],
            lambda n=n: merge.merge_phase(n),
        )
        click.echo(datacheck.format_stats(datacheck.dataset_stats(layout.phase_data_dir(n))))


def _run_length(s: DemoSettings) -> dict:
    """The demo's ``--iters`` or ``--epochs`` as training overrides (neither: the preset's)."""
    if s.iters is not None:
        return {"iters": s.iters}
    return {} if s.epochs is None else {"epochs": s.epochs}


def _phase_lane(s: DemoSettings, n: int, model: str, tiny: bool, progress: bool) -> list[Stage]:
    """Phase ``n``'s training, then its fuse into 8 bits when the demo fuses it."""
    from mlx_tune.training import train
    from mlx_tune.training.fuse import fuse

    data, adapters = layout.phase_data_dir(n), layout.adapter_dir(n)
    overrides = {"model": model, "data": str(data), "adapter_path": str(adapters), **_run_length(s)}
    # The phase files' train: sections are tuned for Qwen2.5-Coder-7B; the tiny model uses its own preset.
    settings = train.resolve_settings(
        phase=None if tiny else n, preset="tiny" if tiny else None, overrides=overrides
    )
    lane = [
        Stage(
            f"train phase {n}",
            overrides | {"preset": "tiny" if tiny else None},
            [Path(model) if Path(model).exists() else Path("-"), data / "train.jsonl", data / "valid.jsonl"],
            [adapters / "adapters.safetensors"],
            partial(_train_completed, settings, progress),
        )
    ]
    if n in FUSED_PHASES:
        out = layout.fused_model_dir(n)
        run = partial(fuse, model=model, adapter_path=str(adapters), save_path=str(out), bits=8, force=True)
        lane.append(
            Stage(f"fuse phase {n}", {"bits": 8, "model": model}, [adapters], [out / "config.json"], run)
        )
    return lane


def _qlora_lane(s: DemoSettings, progress: bool) -> list[Stage]:
    """A 4-bit tiny base, LoRA on one phase, and its fuse into 8 bits (see QLORA_OVERRIDES)."""
    from mlx_tune.models.tiny import build_tiny_model
    from mlx_tune.training import train
    from mlx_tune.training.fuse import fuse

    n, adapters = QLORA_PHASE, layout.adapter_dir(QLORA_PHASE, "qlora")
    data = layout.phase_data_dir(n)
    overrides = {
        "model": str(TINY_4BIT_DIR),
        "data": str(data),
        "adapter_path": str(adapters),
        **QLORA_OVERRIDES,
    }
    if s.iters is not None:
        overrides.pop("epochs")
    overrides.update(_run_length(s))
    settings = train.resolve_settings(preset="tiny", overrides=overrides)
    out = layout.fused_model_dir(n, "qlora")
    fuse_run = partial(
        fuse, model=str(TINY_4BIT_DIR), adapter_path=str(adapters), save_path=str(out), bits=8, force=True
    )
    return [
        Stage(
            "tiny model (4-bit)",
            {"seed": 0, "bits": 4, "pretrain_steps": s.pretrain_steps},
            [],
            [TINY_4BIT_DIR / "config.json"],
            partial(build_tiny_model, TINY_4BIT_DIR, seed=0, bits=4, pretrain_steps=s.pretrain_steps),
        ),
        Stage(
            f"train phase {n} (QLoRA)",
            overrides,
            [TINY_4BIT_DIR, data / "train.jsonl", data / "valid.jsonl"],
            [adapters / "adapters.safetensors"],
            partial(_train_completed, settings, progress),
        ),
        Stage(
            f"fuse phase {n} (QLoRA)",
            {"bits": 8, "model": str(TINY_4BIT_DIR)},
            [adapters],
            [out / "config.json"],
            fuse_run,
        ),
    ]


def _train_completed(settings, progress: bool = True) -> None:
    """Train (replacing an older adapter only once the new one is whole); a run that stopped
    early by interrupt is not a finished stage (it is not stamped, fused or benchmarked; the next
    demo resumes it from its checkpoint)."""
    from mlx_tune.training import train

    summary = train.train(settings, resume="auto", overwrite=True, progress=progress)
    if summary.get("status") == "interrupted":
        raise KeyboardInterrupt


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
