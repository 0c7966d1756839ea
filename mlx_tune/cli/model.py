"""``mlx-tune tiny``, ``train``, ``fuse`` and ``upload``: build the embedded tiny model, train an
adapter, fuse it into its base and push the result (tiny.py, train.py, fuse.py, upload.py)."""

from __future__ import annotations

import click

from mlx_tune.cli.group import Group
from mlx_tune.training import train_config


@click.group(cls=Group)
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
    help="Pretraining steps on local code, docstrings and plain chat turns (cached per machine; "
    "0: a random base). Default: 300.",
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

    from mlx_tune.models import tiny as tiny_mod

    size = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_hidden_layers": layers}
    kwargs = {k: v for k, v in size.items() if v is not None}
    if pretrain_steps is not None:
        kwargs["pretrain_steps"] = pretrain_steps
    path = tiny_mod.build_tiny_model(
        out, bits=int(bits) if bits else None, seed=seed, corpus=[Path(c) for c in corpus] or None, **kwargs
    )
    click.echo(f"wrote {path} ({tiny_mod.count_parameters(path):,} parameters)")


# ---------------- train and fuse (train.py, fuse.py)


@click.command("train")
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
    from mlx_tune.training import train as train_mod

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


@click.command("fuse")
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
    from mlx_tune.training import fuse as fuse_mod

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


@click.command("upload")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repository as private.")
def upload_cmd(folder, repo_id, private) -> None:
    """Push a fused model FOLDER to the Hugging Face Hub as REPO_ID (owner/name), keeping its card.

    Needs a token (`hf auth login` or HF_TOKEN). Unlike `mlx_lm upload`, the model card that
    `mlx-tune fuse` wrote (metadata, training, verification, usage) is uploaded unchanged.
    """
    from mlx_tune.training import upload as upload_mod

    url = upload_mod.upload(folder, repo_id, private=private)
    click.echo(f"uploaded {folder} to {url}")
