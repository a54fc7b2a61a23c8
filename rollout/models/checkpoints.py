"""The checkpoint layout, read by everyone who loads trained weights (the learner resuming, serve publishing,
evaluation, `terrarium status`); only learner.checkpoint writes it. Below learner/ and serve/, so neither
needs the other to find a checkpoint.

Layout of `{run_dir}/checkpoints/version_{policy_version:08d}/`:
    model/        save_pretrained (safetensors) plus the tokenizer files of the source model, so the
                  directory loads in transformers and vLLM as it is (Serve publishes it)
    optimizer.pt  the optimizer's state_dict
    rng.pt        python, numpy and torch RNG states as tensors and plain types, one entry per learner rank
    state.json    step, policy_version, data_position (an opaque dict of the driver), world_size
A checkpoint is written into a hidden temporary directory, fsynced, and renamed into place only when
complete, so a writer killed midway leaves no half checkpoint. A checkpoint damaged after that (a truncated
file, a disk error) is skipped with a warning: `latest_checkpoint` returns the newest one that checks out.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

CHECKPOINTS_DIR = "checkpoints"
STEP_DIR_PATTERN = re.compile(r"^version_(\d+)$")
TEMP_PREFIX = ".tmp-"
TORCH_FILES = ("optimizer.pt", "rng.pt")

log = logging.getLogger(__name__)


class CorruptCheckpointError(ValueError):
    """A checkpoint directory that is incomplete or damaged; the message names the file."""


@dataclass
class CheckpointState:
    step: int  # optimizer steps taken
    policy_version: int
    data_position: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1


def checkpoint_dir(run_dir: str | Path, policy_version: int) -> Path:
    """Named by policy version (the driver's training step), not optimizer steps: a step whose groups were
    all flat takes no optimizer step but is still a step the run must not repeat."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"version_{policy_version:08d}"


def read_checkpoint_state(path: str | Path) -> CheckpointState:
    """state.json of a checkpoint directory. FileNotFoundError: there is none (not a checkpoint);
    CorruptCheckpointError: it is there but unreadable."""
    state_file = Path(path) / "state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory (no state.json)")
    try:
        data = json.loads(state_file.read_text())
        state = CheckpointState(**data)
    except (ValueError, TypeError) as exc:  # truncated JSON, or keys that are not CheckpointState's
        raise CorruptCheckpointError(f"{state_file}: not a checkpoint state ({exc})") from exc
    if not (isinstance(state.step, int) and isinstance(state.policy_version, int)):
        raise CorruptCheckpointError(f"{state_file}: step and policy_version must be integers")
    return state


def check_checkpoint(path: str | Path) -> CheckpointState:
    """Every file of the layout is there and readable (headers and archive directories, not every byte):
    what a truncated or half-copied checkpoint fails. Returns its state; raises CorruptCheckpointError."""
    path = Path(path)
    state = read_checkpoint_state(path)
    model = path / "model"
    try:
        json.loads((model / "config.json").read_text())
        weights = sorted(model.glob("*.safetensors"))
        if not weights:
            raise CorruptCheckpointError(f"{model}: no .safetensors weights")
        for weight_file in weights:
            with safe_open(str(weight_file), "pt"):
                pass
        for name in TORCH_FILES:  # torch.save writes zip archives: a truncated one has no central directory
            with zipfile.ZipFile(path / name):
                pass
    except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as exc:
        raise CorruptCheckpointError(f"{path}: {exc}") from exc
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete, readable checkpoint with the highest policy version under run_dir, or None. A damaged
    newer one is skipped with a warning (the run resumes from the one before it)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    candidates = sorted(
        ((int(match.group(1)), entry) for entry in root.iterdir() if (match := STEP_DIR_PATTERN.match(entry.name))),
        reverse=True,
    )
    for _, entry in candidates:
        try:
            check_checkpoint(entry)
        except FileNotFoundError:
            continue  # no state.json: not a checkpoint
        except CorruptCheckpointError as exc:
            log.warning("skipping damaged checkpoint %s: %s", entry, exc)
            continue
        return entry
    return None


def resolve_model_dir(path: str | Path) -> Path:
    """The model directory to load: the model/ of a learner checkpoint, of the newest checkpoint of a run
    directory, or `path` itself. A run directory is tried before a model directory: its config.json is the
    training config, not a model's."""
    path = Path(path).expanduser().resolve()
    if (path / "model" / "config.json").is_file():
        return path / "model"
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest / "model"
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(
        f"{path}: not a model directory (config.json), a checkpoint (model/config.json) or a run directory "
        "with checkpoints"
    )


def describe_checkpoint(path: str | Path, policy_version: int | None = None) -> dict[str, Any]:
    """{"checkpoint": model directory, "policy_version", "checkpoint_step"} for a checkpoint, model or run
    directory (its newest checkpoint). The version defaults to the checkpoint's (0 for a bare model
    directory); the step is the learner's optimizer step (None for a bare model directory)."""
    model_dir = resolve_model_dir(path)
    try:
        state = read_checkpoint_state(model_dir.parent)
        version, step = state.policy_version, state.step
    except FileNotFoundError:
        version, step = 0, None
    return {
        "checkpoint": str(model_dir),
        "policy_version": version if policy_version is None else policy_version,
        "checkpoint_step": step,
    }


def fsync_tree(path: Path) -> None:
    """Flush every file and directory under `path` (and `path` itself) to disk: what a rename then makes
    visible is complete even after a power loss."""
    for directory, _, files in os.walk(path):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries (a rename into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
