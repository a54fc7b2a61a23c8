"""`terrarium train` end to end on the tiny model: SFT warm start, GRPO steps, store, checkpoints, resume."""

from __future__ import annotations

import shutil

from cluster.config import load_config
from cluster.metrics import read_metrics
from cluster.train import train
from learner.checkpoint import latest_checkpoint, read_checkpoint_state
from rollout.store import ParquetTrajectoryStore

OVERRIDES = [
    "train.steps=2", "train.checkpoint_every=1", "train.eval_episodes=4", "train.sft.episodes=8",
    "train.sft.epochs=1", "rollout.groups_per_step=2", "rollout.group_size=2", "rollout.agent.max_turns=3",
    "sampling.max_tokens=24",
]


def test_train_runs_checkpoints_and_resumes_without_repeating_steps(ray_session, tiny_model_dir, tmp_path):
    config = load_config("configs/local.yaml", OVERRIDES + [f"output_dir={tmp_path}", f"model.path={tiny_model_dir}"])
    train(config)
    run_dir = config.run_dir.resolve()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["phase"] == "train"] == [1, 2]
    assert [r["label"] for r in records if r["phase"] == "eval"] == ["before", "after-sft", "after"]
    assert [r["phase"] for r in records].count("sft") == 1
    assert (run_dir / "curves.png").stat().st_size > 0
    store = ParquetTrajectoryStore(run_dir / "trajectories")
    assert store.steps(config.run_name) == [0, 1]
    assert len(store.read(config.run_name)) == 8
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 2}

    # The driver died after checkpointing step 1 (step 2's checkpoint never landed): a rerun does step 2 again.
    shutil.rmtree(latest_checkpoint(run_dir))
    train(config)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["phase"] == "train"] == [1, 2, 2]
    assert [r["label"] for r in records if r["phase"] == "eval"][-1] == "after"
    assert "before" not in [r.get("label") for r in records[-2:]]  # no second "before" evaluation on resume
    assert len(store.read(config.run_name)) == 8  # replayed episodes were not stored twice
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 2}
