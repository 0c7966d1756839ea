"""Phase configs: ``phaseN.yaml``, shipped in ``mlx_tune/configs/phases/`` (package data, so
``--phase 7`` works from any directory), or a user's own file or folder (see DESIGN.md, "Phases").

Schema (every key but ``phase`` is optional)::

    phase: 6                  # must match the file name phase6.yaml
    extends: 5                # inherit the inputs, split and train settings of phase 5
    inputs:                   # JSONL files added to the inherited ones, relative to the project root
      - data/repos_examples/training_examples.jsonl
    split: {valid: 0.1, test: 0.0, seed: 0}   # merged key by key over the parent's split
                              # (also unseen_templates: the share of question templates kept
                              # for test only, default 0.15)
    train: {...}              # free-form for ``mlx-tune train``; deep-merged over the parent's train
    task: chat                # the task (mlx_tune.tasks) the phase trains; inherited; default tools

Input paths are resolved against the current directory (the project root) unless absolute. A
config that extends a phase its own folder lacks extends the shipped one (a user's ``phase8.yaml``
may say ``extends: 7``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlx_tune import UserError, layout

DEFAULT_PHASES_DIR = layout.PHASES_DIR
DEFAULT_SPLIT = {"valid": 0.1, "test": 0.0, "seed": 0}
DEFAULT_UNSEEN_TEMPLATES = 0.15  # split.unseen_templates when no phase sets it
KNOWN_KEYS = ("phase", "extends", "inputs", "split", "train", "task")

# Where each generated input comes from, so a missing file's error says how to make it.
PRODUCERS = {
    "domain_examples": "mlx-tune data domain-examples",
    "repos_examples": "mlx-tune data repo-examples",
    "html_examples": "mlx-tune data html-examples",
}


@dataclass
class Phase:
    number: int
    path: Path
    inputs: list[Path]
    split: dict[str, Any]
    train: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)
    task: str = "tools"

    def missing_inputs(self) -> list[str]:
        """One message per input file that does not exist, naming the command that makes it."""
        return [
            f"{self.path}: inputs: {p} does not exist ({producer_hint(p)})"
            for p in self.inputs
            if not p.is_file()
        ]


def producer_hint(path: Path | str) -> str:
    parts = Path(path).parts
    for key, command in PRODUCERS.items():
        if key in parts:
            return f"run `{command}` to create it"
    return "create it or remove it from inputs"


def available_phases(phases_dir: str | Path | None = DEFAULT_PHASES_DIR) -> list[int]:
    """The phase numbers with a ``phaseN.yaml`` in ``phases_dir`` (the shipped configs by default)."""
    out = []
    for p in Path(phases_dir or DEFAULT_PHASES_DIR).glob("phase*.yaml"):
        m = re.fullmatch(r"phase(\d+)\.yaml", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def phase_path(phase: int | str | Path, phases_dir: str | Path | None = DEFAULT_PHASES_DIR) -> Path:
    """The YAML file for ``phase``: a number (``6``, ``"6"``, ``"phase6"``) or a path to a file."""
    if isinstance(phase, int) and not isinstance(phase, bool):
        return layout.phase_config_path(phase, phases_dir)
    text = str(phase)
    m = re.fullmatch(r"(?:phase)?(\d+)", text)
    if m:
        return layout.phase_config_path(int(m.group(1)), phases_dir)
    return Path(text)


def load_phase(
    phase: int | str | Path,
    phases_dir: str | Path | None = DEFAULT_PHASES_DIR,
    check_inputs: bool = False,
) -> Phase:
    """Load and validate a phase config with everything it inherits.

    Every problem (in this file and its parents) is collected into one ``UserError``. With
    ``check_inputs``, input files that do not exist are problems too.
    """
    path = phase_path(phase, phases_dir)
    if not path.is_file():
        have = ", ".join(str(n) for n in available_phases(path.parent)) or "none"
        label = phase if isinstance(phase, int) else Path(str(phase)).stem.removeprefix("phase")
        raise UserError(f"unknown phase {label}: {path} does not exist (have: {have})")
    problems: list[str] = []
    result = _load(path, problems, seen=[])
    if result is not None and check_inputs:
        problems.extend(result.missing_inputs())
    if problems or result is None:
        raise UserError(_joined(problems))
    return result


def _joined(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in phase config:\n  " + "\n  ".join(problems)


def _load(path: Path, problems: list[str], seen: list[Path]) -> Phase | None:
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in [*seen, path.resolve()])
        problems.append(f"{path}: extends: cycle ({chain})")
        return None
    seen = [*seen, path.resolve()]
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        what = " ".join(str(getattr(e, "problem", None) or e).split())  # one line
        problems.append(f"{where}: not valid YAML: {what}")
        return None
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not UTF-8: byte 0x{e.object[e.start]:02x} at offset {e.start}")
        return None
    except (RecursionError, MemoryError):  # hostile nesting overflows the YAML parser
        problems.append(f"{path}: not valid YAML: nested too deeply")
        return None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected a mapping of phase settings, got {type(raw).__name__}")
        return None
    n_before = len(problems)
    for key in raw:
        if key not in KNOWN_KEYS:
            problems.append(f"{path}: {key}: unknown key (known: {', '.join(KNOWN_KEYS)})")

    m = re.fullmatch(r"phase(\d+)\.yaml", path.name)
    number = raw.get("phase")
    if not isinstance(number, int) or isinstance(number, bool):
        problems.append(f"{path}: phase: expected an integer phase number, got {number!r}")
        number = int(m.group(1)) if m else 0
    elif m and int(m.group(1)) != number:
        problems.append(f"{path}: phase: says {number} but the file is {path.name}")

    parent: Phase | None = None
    parent_failed = False
    extends = raw.get("extends")
    if extends is not None:
        if not isinstance(extends, int) or isinstance(extends, bool):
            problems.append(f"{path}: extends: expected a phase number, got {extends!r}")
        else:
            parent_path = path.parent / f"phase{extends}.yaml"
            if not parent_path.is_file() and layout.phase_config_path(extends).is_file():
                parent_path = layout.phase_config_path(extends)
            if not parent_path.is_file():
                have = ", ".join(str(n) for n in available_phases(path.parent)) or "none"
                problems.append(
                    f"{path}: extends: phase {extends} ({parent_path}) does not exist (have: {have})"
                )
            else:
                parent = _load(parent_path, problems, seen)
                parent_failed = parent is None

    inputs: list[Path] = list(parent.inputs) if parent else []
    raw_inputs = raw.get("inputs", [])
    if raw_inputs is None:
        raw_inputs = []
    if not isinstance(raw_inputs, list):
        problems.append(f"{path}: inputs: expected a list of JSONL paths")
        raw_inputs = []
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, str) or not item.strip():
            problems.append(f"{path}: inputs[{i}]: expected a file path, got {item!r}")
            continue
        p = Path(item)
        if p not in inputs:
            inputs.append(p)
    # Only `data merge` (tools data) reads inputs; another task's command writes the phase folder itself.
    if not inputs and not parent_failed and raw.get("task", parent.task if parent else "tools") == "tools":
        problems.append(f"{path}: inputs: no input files (list some, or extend a phase that has them)")

    split = dict(parent.split) if parent else dict(DEFAULT_SPLIT)
    raw_split = raw.get("split", {}) or {}
    if not isinstance(raw_split, dict):
        problems.append(f"{path}: split: expected a mapping like {{valid: 0.1, test: 0.0, seed: 0}}")
        raw_split = {}
    for key, value in raw_split.items():
        if key in ("valid", "test", "unseen_templates"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                problems.append(f"{path}: split.{key}: expected a share in [0, 1), got {value!r}")
                continue
            split[key] = float(value)
        elif key == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{path}: split.seed: expected an integer, got {value!r}")
                continue
            split[key] = value
        else:
            problems.append(f"{path}: split.{key}: unknown key (known: valid, test, seed, unseen_templates)")
    if split["valid"] + split["test"] >= 1:
        problems.append(
            f"{path}: split: valid + test must leave a share for train (is {split['valid'] + split['test']})"
        )

    train = dict(parent.train) if parent else {}
    raw_train = raw.get("train", {}) or {}
    if not isinstance(raw_train, dict):
        problems.append(f"{path}: train: expected a mapping of training settings")
        raw_train = {}
    train = deep_merge(train, raw_train)

    task = raw.get("task", parent.task if parent else "tools")
    if "task" in raw:
        from mlx_tune.tasks import TASK_MODULES

        if task not in TASK_MODULES:
            problems.append(
                f"{path}: task: unknown task {task!r} (choose from {', '.join(sorted(TASK_MODULES))})"
            )

    if len(problems) > n_before:
        return None
    return Phase(number=number, path=path, inputs=inputs, split=split, train=train, raw=raw, task=task)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``; nested mappings are merged key by key."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
