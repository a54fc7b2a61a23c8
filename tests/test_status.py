"""`terrarium status` on a run directory written through the project's own APIs (MetricsLog, checkpoints)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from cluster.cli import main
from cluster.config import load_config
from cluster.metrics import MetricsLog
from cluster.status import find_run_dir, read_status
from learner.checkpoint import capture_rng_state, save_checkpoint
from rollout.models.checkpoints import CheckpointState, checkpoint_dir


def write_checkpoint(run_dir, model_dir, policy_version: int, optimizer_steps: int) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state = CheckpointState(optimizer_steps, policy_version, {"train_step": policy_version})
    save_checkpoint(run_dir, state, model, optimizer, [capture_rng_state()], model_dir)


def train_record(step: int, reward: float) -> dict:
    return {"phase": "train", "step": step, "policy_version": step, "mean_reward": reward, "success_rate": 0.5}


def test_status_follows_a_run_from_start_to_finish(tmp_path, tiny_model_dir, capsys):
    config = load_config("configs/local.yaml", [f"output_dir={tmp_path}", "run_name=demo", "train.steps=3"])
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config.model_dump_json())
    log = MetricsLog(run_dir / "metrics.jsonl", config.run_name)
    log.write({"phase": "eval", "step": 0, "label": "before", "eval_success_rate": 0.0})
    log.write({"phase": "sft", "epoch": 0, "sft_loss": 2.5})
    log.write({"phase": "eval", "step": 0, "label": "after-sft", "eval_success_rate": 0.25})
    log.write(train_record(1, 10.0))
    write_checkpoint(run_dir, tiny_model_dir, policy_version=1, optimizer_steps=1)
    log.write(train_record(2, 20.0))
    write_checkpoint(run_dir, tiny_model_dir, policy_version=2, optimizer_steps=2)
    # A checkpoint writer killed midway leaves a hidden temporary directory: not a checkpoint.
    (checkpoint_dir(run_dir, 3).parent / ".tmp-version_00000003-dead").mkdir()

    status = read_status(find_run_dir("demo", tmp_path))
    assert (status.run_name, status.step, status.total_steps, status.finished) == ("demo", 2, 3, False)
    assert status.last_train["mean_reward"] == 20.0
    assert list(status.evals) == ["before", "after-sft"]
    assert [(c.policy_version, c.optimizer_steps) for c in status.checkpoints] == [(1, 1), (2, 2)]
    weights = (checkpoint_dir(run_dir, 2) / "model" / "model.safetensors").stat().st_size
    assert status.checkpoints[-1].size_bytes > weights

    log.write(train_record(3, 30.0))
    log.write({"phase": "eval", "step": 3, "label": "after", "eval_success_rate": 0.75})
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "step 3/3, finished" in out
    assert "eval after (step 3)" in out and "eval_success_rate" in out
    assert "version 2" in out and "version 3" not in out

    # Resumed with more steps (config.json rewritten at start): no longer finished.
    longer = config.model_copy(update={"train": config.train.model_copy(update={"steps": 5})})
    (run_dir / "config.json").write_text(longer.model_dump_json())
    assert not read_status(run_dir).finished


def test_unknown_run_names_the_known_ones(tmp_path, capsys):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "metrics.jsonl").write_text("")
    assert main(["status", "beta", "--output-dir", str(tmp_path)]) == 2
    assert f"runs under {tmp_path}: alpha" in capsys.readouterr().err
