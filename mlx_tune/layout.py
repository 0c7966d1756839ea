"""The project layout: every path mlx-tune reads or writes by default, named once.

Paths of the working layout are relative to the project root (the current directory), as every
command uses them::

    data/repos/<repo>/                            repositories (``mlx-tune data repos``)
    data/html/                                    the HTML pages the HTML examples are about
    data/{domain,repos,html}_examples/training_examples.jsonl   generated examples
    data/phaseN/{train,valid,test}.jsonl          a merged phase (``mlx-tune data merge``)
    data/cache/demo_stamps.json                   the demo's record of finished stages
    adapters/phaseN[-VARIANT]/                    a trained adapter (``mlx-tune train``)
    models/tiny/, models/tiny-4bit/               the embedded tiny model, float and 4-bit
    models/phaseN[-VARIANT]-fused-8bit/           a fused model (``mlx-tune fuse``)
    benchmarks/demo/                              the demo's benchmark

The shipped configs (phase configs and training presets) are package data next to this module,
so ``--phase 7`` and ``--preset qlora`` work from any directory.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
REPOS_DIR = DATA_DIR / "repos"
"""Source repositories, one sub-folder each, plus ``manifest.json``."""
HTML_DIR = DATA_DIR / "html"
"""The pages the HTML examples are grounded in (their tool calls run there)."""
DEMO_STAMPS = DATA_DIR / "cache" / "demo_stamps.json"
"""Fingerprints of the demo's finished stages."""
ADAPTERS_DIR = Path("adapters")
MODELS_DIR = Path("models")
TINY_MODEL_DIR = MODELS_DIR / "tiny"
"""The embedded tiny model (``mlx-tune tiny build``), the demo's base."""
TINY_4BIT_DIR = MODELS_DIR / "tiny-4bit"
"""The tiny model quantized to 4 bits: the demo's QLoRA base."""
BENCHMARKS_DIR = Path("benchmarks")
DEMO_BENCH_DIR = BENCHMARKS_DIR / "demo"
"""Where the demo's benchmark writes results.json, results.md and bench.log."""

EXAMPLE_SETS = ("domain", "repos", "html")
"""The generated example sets: the domain set (phase 5), repository examples (6), HTML examples (7)."""
PHASES = (5, 6, 7)
"""The shipped phases, each a superset of the one before."""
FUSED_PHASES = (5, 7)
"""The phases the demo fuses to 8 bits (and the benchmark expects fused)."""
QUERY_PHASE = 7
"""The phase whose held-out split is the default benchmark query set."""
QLORA_PHASE = 5
"""The phase the demo trains once more on the 4-bit tiny base (the QLoRA path)."""

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
PHASES_DIR = CONFIGS_DIR / "phases"
"""The shipped phase configs ``phaseN.yaml`` (package data)."""
PRESETS_DIR = CONFIGS_DIR / "presets"
"""The shipped training presets ``NAME.yaml`` (package data)."""


def examples_file(kind: str) -> Path:
    """The JSONL file an example generator writes: ``data/KIND_examples/training_examples.jsonl``."""
    if kind not in EXAMPLE_SETS:
        raise ValueError(f"unknown example set {kind!r} (have: {', '.join(EXAMPLE_SETS)})")
    return DATA_DIR / f"{kind}_examples" / "training_examples.jsonl"


DOMAIN_EXAMPLES = examples_file("domain")
REPO_EXAMPLES = examples_file("repos")
HTML_EXAMPLES = examples_file("html")


def phase_data_dir(phase: int | str) -> Path:
    """A merged phase's folder: ``data/phaseN`` (train/valid/test JSONL and manifest.json)."""
    return DATA_DIR / f"phase{phase}"


def query_file(phase: int | str = QUERY_PHASE) -> Path:
    """A phase's held-out split, the benchmark's queries: ``data/phaseN/test.jsonl``."""
    return phase_data_dir(phase) / "test.jsonl"


def adapter_dir(phase: int, variant: str = "") -> Path:
    """A phase's trained adapter: ``adapters/phaseN``, or ``adapters/phaseN-VARIANT``."""
    return ADAPTERS_DIR / _name(phase, variant)


def fused_model_dir(phase: int, variant: str = "", bits: int = 8) -> Path:
    """A phase's fused model: ``models/phaseN-fused-8bit`` (``models/phaseN-VARIANT-fused-8bit``)."""
    return MODELS_DIR / f"{_name(phase, variant)}-fused-{bits}bit"


def _name(phase: int, variant: str) -> str:
    return f"phase{phase}-{variant}" if variant else f"phase{phase}"


def phase_config_path(phase: int, phases_dir: str | Path | None = None) -> Path:
    """A phase's config ``phaseN.yaml``: the shipped one, or the one in ``phases_dir``."""
    return Path(phases_dir or PHASES_DIR) / f"phase{phase}.yaml"


def preset_path(name: str, presets_dir: str | Path | None = None) -> Path:
    """A training preset: a shipped name (``qlora`` -> ``configs/presets/qlora.yaml``, or
    ``presets_dir/NAME.yaml``), or a path to the user's own YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return Path(presets_dir or PRESETS_DIR) / f"{name}.yaml"


def preset_names(presets_dir: str | Path | None = None) -> list[str]:
    """The presets there are (shipped by default), sorted."""
    return sorted(p.stem for p in Path(presets_dir or PRESETS_DIR).glob("*.yaml"))
