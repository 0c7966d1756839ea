"""Model specs and the one function that loads them.

A spec is ``PATH`` (a local mlx-lm model folder), ``HF_ID`` (a Hugging Face repo id
``ORG/NAME``, fetched or taken from the cache by mlx-lm) or ``BASE@ADAPTER`` (a LoRA / DoRA /
full adapter folder on its base). One rule decides what is a Hugging Face id
(:func:`is_hf_id`), so a missing local folder is reported as missing, never as a failed
download. Every failure is a one-line ``UserError`` naming the option or spec it came from, and
the original exception is kept as its ``__cause__``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlx_tune import UserError, layout

# A repo id part: letters, digits, "-", "_", "."; starting and ending with a letter or digit.
_HF_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
# The project layout's top folders: ``models/x`` is always a local path, never a Hub id.
LOCAL_DIRS = tuple(
    str(p) for p in (layout.MODELS_DIR, layout.ADAPTERS_DIR, layout.DATA_DIR, layout.BENCHMARKS_DIR)
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: the base model and, for ``BASE@ADAPTER``, the adapter folder."""

    base: str
    adapter: str | None = None

    def __str__(self) -> str:
        return f"{self.base}@{self.adapter}" if self.adapter else self.base


def is_hf_id(name: str) -> bool:
    """Whether ``name`` names a Hugging Face repo (``ORG/NAME``) rather than a local path: it
    does not exist here, it has exactly one ``/``, neither part has odd characters (``..``,
    ``--``, a leading ``.`` or ``-``), and ``ORG`` is neither a local folder nor one of the
    project layout's top folders (``models/x`` that does not exist is a missing path)."""
    m = re.fullmatch(rf"({_HF_PART})/({_HF_PART})", name)
    if not m or "--" in name or ".." in name or Path(name).exists():
        return False
    return m.group(1) not in LOCAL_DIRS and not Path(m.group(1)).is_dir()


def parse_spec(spec: str) -> ModelSpec:
    """``BASE`` or ``BASE@ADAPTER`` -> :class:`ModelSpec` (a path that exists is never split)."""
    if spec and Path(spec).exists():
        return ModelSpec(spec)
    base, sep, adapter = spec.partition("@")
    if not base or (sep and not adapter):
        raise UserError(f"model spec {spec!r}: expected MODEL or MODEL@ADAPTER_DIR")
    return ModelSpec(base, adapter or None)


def check_base(base: str, label: str = "model") -> None:
    """A base that is a local path must be a model folder; one that is not must be a Hugging
    Face id (else it is a missing path)."""
    p = Path(base)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"{label}: {base} is not a model folder (no config.json)")
    elif p.exists():
        raise UserError(f"{label}: {base} is a file; give the model folder (with config.json)")
    elif not is_hf_id(base):
        raise UserError(
            f"{label}: {base} does not exist (not a local folder, nor a Hugging Face id ORG/NAME)"
        )


def check_adapter(adapter: str, label: str = "adapter", train_hint: str = "mlx-tune train") -> None:
    """An adapter is a folder holding ``adapters.safetensors`` and ``adapter_config.json``
    (``train_hint``: the command that makes one, for the error)."""
    p = Path(adapter)
    if p.exists() and not p.is_dir():
        raise UserError(f"{label}: {adapter} is a file; give the folder holding adapters.safetensors")
    if not (p / "adapters.safetensors").is_file() or not (p / "adapter_config.json").is_file():
        raise UserError(
            f"{label}: {adapter} has no adapters.safetensors + adapter_config.json "
            f"(train one with `{train_hint}`)"
        )


def check_spec(spec: str | ModelSpec, labels: tuple[str, str] = ("model", "adapter")) -> ModelSpec:
    """Parse ``spec`` and check that what it names exists locally (or is a Hugging Face id)."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    check_base(s.base, labels[0])
    if s.adapter is not None:
        check_adapter(s.adapter, labels[1])
    return s


def load_model(
    spec: str | ModelSpec,
    *,
    labels: tuple[str, str] = ("model", "adapter"),
    return_config: bool = False,
):
    """Load ``spec`` with mlx-lm, weights materialised: ``(model, tokenizer)``, plus the base's
    config with ``return_config``. ``labels`` name the base and the adapter in errors (an
    option such as ``--model``, or ``model`` for a spec). The base and the adapter are loaded
    in two steps so that a failure says which of them it was."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.utils import load_adapters

    s = check_spec(spec, labels)
    try:
        model, tokenizer, config = mlx_lm.load(s.base, return_config=True)
    except Exception as e:  # mlx-lm raises ValueError, FileNotFoundError, hub errors, ...
        if not Path(s.base).exists() and isinstance(e, OSError):  # every hub and network error is one
            raise UserError(
                f"{labels[0]}: {s.base} is not a local folder, and as a Hugging Face id it could not "
                f"be fetched (no network, or no such repo?): {_first_line(e)}"
            ) from e
        raise UserError(f"{labels[0]}: could not load {s.base}: {_first_line(e)}") from e
    if s.adapter is not None:
        try:
            model = load_adapters(model, s.adapter)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{labels[1]}: {s.adapter}: could not read it: {_first_line(e)}") from e
        except Exception as e:  # incompatible tensors (ValueError), settings the base lacks, ...
            raise UserError(
                f"{labels[1]}: {s.adapter} does not match the base {s.base}: {_first_line(e)}"
            ) from e
        model.eval()
    mx.eval(model.parameters())
    return (model, tokenizer, config) if return_config else (model, tokenizer)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else ""
    return f"{type(e).__name__}: {text}"[:400] if text else type(e).__name__
