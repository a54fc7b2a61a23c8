"""Writing and restoring learner checkpoints: everything needed to continue training exactly where it stopped.

The layout (directories, files, state.json, which checkpoint is the newest good one) is
rollout.models.checkpoints, which serve and evaluation read too; this module adds the torch side: weights,
optimizer and RNG states, saved atomically and durably, and loaded with torch.load(weights_only=True).
With learner.lora, `model/` holds the adapters only (adapter_model.safetensors; adapter_config.json names the base).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from learner.lora import is_adapter_dir, load_adapter
from rollout.models.checkpoints import (
    TEMP_PREFIX,
    CheckpointState,
    check_checkpoint,
    checkpoint_dir,
    fsync_path,
    fsync_tree,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain tuples, which torch.load(weights_only=True)
    reads back (numpy's own state holds an ndarray, which it refuses)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
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
    """Write a complete checkpoint for `state.policy_version` atomically and durably (files and directories
    fsynced before the rename); returns its directory. `tokenizer_source`: a model directory whose non-weight
    files (tokenizer, chat template) are copied."""
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
    fsync_tree(temp)

    if final.exists():  # re-saving a step: swap, so some complete copy exists at every moment
        trash = final.parent / f"{TEMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(temp, final)
    fsync_path(final.parent)
    return final


def load_checkpoint(
    path: str | Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer, rank: int = 0
) -> CheckpointState:
    """Restore weights, optimizer state and this rank's RNG in place. A checkpoint written by fewer ranks
    gives rank r the RNG state of rank r % saved_ranks (weights and optimizer are the same on every rank)."""
    path = Path(path)
    state = check_checkpoint(path)
    device = next(model.parameters()).device
    if is_adapter_dir(path / "model"):  # LoRA: adapters only; the frozen base is the learner's own
        load_adapter(model, path / "model")
    else:
        saved = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
        model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    rng_states = torch.load(path / "rng.pt", weights_only=True)
    restore_rng_state(rng_states[rank % len(rng_states)])
    return state
