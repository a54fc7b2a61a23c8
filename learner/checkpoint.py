"""Checkpoint directories: everything needed to continue training exactly where it stopped.

Layout of `{run_dir}/checkpoints/version_{policy_version:08d}/`:
    model/        save_pretrained (safetensors) plus the tokenizer files of the source model, so the
                  directory loads in transformers and vLLM as it is (Serve publishes it); with learner.lora
                  the adapters only (adapter_model.safetensors; adapter_config.json names the base)
    optimizer.pt  the optimizer's state_dict
    rng.pt        python, numpy and torch RNG states, one entry per learner rank
    state.json    step, policy_version, data_position (an opaque dict of the driver), world_size
A checkpoint is written into a hidden temporary directory and renamed into place only when complete, so a
writer killed midway leaves no half checkpoint: `latest_checkpoint` never sees the temporary ones.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from learner.lora import is_adapter_dir, load_adapter

CHECKPOINTS_DIR = "checkpoints"
STEP_DIR_PATTERN = re.compile(r"^version_(\d+)$")
TEMP_PREFIX = ".tmp-"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


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


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    state: CheckpointState,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    rng_states: list[dict[str, Any]],
    tokenizer_source: str | Path | None = None,
) -> Path:
    """Write a complete checkpoint for `state.policy_version` atomically; returns its directory.
    `tokenizer_source`: a model directory whose non-weight files (tokenizer, chat template) are copied."""
    final = checkpoint_dir(run_dir, state.policy_version)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(TEMP_PREFIX + "*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    temp = final.parent / f"{TEMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()

    model.save_pretrained(temp / "model", safe_serialization=True)
    if tokenizer_source is not None:
        for source in Path(tokenizer_source).iterdir():
            target = temp / "model" / source.name
            if source.is_file() and not source.name.endswith(WEIGHT_SUFFIXES) and not target.exists():
                shutil.copy2(source, target)
    torch.save(optimizer.state_dict(), temp / "optimizer.pt")
    torch.save(rng_states, temp / "rng.pt")
    (temp / "state.json").write_text(json.dumps(vars(state), indent=2))

    if final.exists():  # re-saving a step: swap, so some complete copy exists at every moment
        trash = final.parent / f"{TEMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(temp, final)
    return final


def read_checkpoint_state(path: str | Path) -> CheckpointState:
    state_file = Path(path) / "state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory (no state.json)")
    return CheckpointState(**json.loads(state_file.read_text()))


def load_checkpoint(
    path: str | Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer, rank: int = 0
) -> CheckpointState:
    """Restore weights, optimizer state and this rank's RNG in place. A checkpoint written by fewer ranks
    gives rank r the RNG state of rank r % saved_ranks (weights and optimizer are the same on every rank)."""
    path = Path(path)
    state = read_checkpoint_state(path)
    device = next(model.parameters()).device
    if is_adapter_dir(path / "model"):  # LoRA: adapters only; the frozen base is the learner's own
        load_adapter(model, path / "model")
    else:
        saved = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
        model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    # Our own file, holding python and numpy RNG tuples that the weights_only loader refuses.
    rng_states = torch.load(path / "rng.pt", weights_only=False)
    restore_rng_state(rng_states[rank % len(rng_states)])
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest policy version under run_dir, or None."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    steps = [
        (int(match.group(1)), entry)
        for entry in root.iterdir()
        if (match := STEP_DIR_PATTERN.match(entry.name)) and (entry / "state.json").is_file()
    ]
    return max(steps)[1] if steps else None
