"""Checkpoint files on disk, no Ray: the layout's reader skips a damaged newest checkpoint, and everything a
checkpoint holds loads back with torch.load(weights_only=True)."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from learner.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from rollout.models.checkpoints import (
    CheckpointState,
    CorruptCheckpointError,
    check_checkpoint,
    describe_checkpoint,
    latest_checkpoint,
    resolve_model_dir,
)


def write(run_dir, model_dir, policy_version: int):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state = CheckpointState(policy_version, policy_version, {"train_step": policy_version})
    return save_checkpoint(run_dir, state, model, optimizer, [capture_rng_state()], model_dir)


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damaged", ["state.json", "model/model.safetensors", "optimizer.pt", "rng.pt", "model/config.json"]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_model_dir, caplog, damaged):
    older = write(tmp_path, tiny_model_dir, 1)
    newest = write(tmp_path, tiny_model_dir, 2)
    assert latest_checkpoint(tmp_path) == newest
    truncate(newest / damaged, keep=0.0 if damaged == "state.json" else 0.5)
    with pytest.raises(CorruptCheckpointError):
        check_checkpoint(newest)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == older
    assert f"skipping damaged checkpoint {newest}" in caplog.text
    assert resolve_model_dir(tmp_path) == older / "model"
    assert describe_checkpoint(tmp_path)["policy_version"] == 1


def test_rng_and_optimizer_load_with_weights_only(tmp_path, tiny_model_dir):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    path = write(tmp_path, tiny_model_dir, 1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    assert isinstance(torch.load(path / "rng.pt", weights_only=True), list)

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state = load_checkpoint(path, model, optimizer)
    assert (state.step, state.policy_version) == (1, 1)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
