"""`terrarium train` end to end on the tiny model: SFT warm start, GRPO steps, store, checkpoints, resume,
and the monitoring (Ray gauges behind the Grafana dashboard, `terrarium status`) over the run it made."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cluster.config import load_config
from cluster.metrics import held_out_statistics, pass_at_k, read_metrics
from cluster.status import read_status
from cluster.train import RAY_JOB_ENV_VAR, step_seeds, train
from learner.group import flat_group_fraction
from learner.losses import rl_loss
from rollout.data.store import ParquetTrajectoryStore
from rollout.models.checkpoints import latest_checkpoint, read_checkpoint_state
from rollout.worker import group_requests

OVERRIDES = [
    "train.steps=2", "train.checkpoint_every=1", "train.eval_episodes=4", "train.sft.episodes=8",
    "train.sft.epochs=1", "rollout.groups_per_step=2", "rollout.group_size=2", "rollout.agent.max_turns=3",
    "sampling.max_tokens=24", "learner.policy_loss.kl_coef=0.01",
    "train.publish_to=no-such-app",  # publishing to an app that is not running logs and goes on
    "train.async.max_staleness=0",  # the synchronous loop's resume (tests/test_async.py resumes the async one)
    # Tensor-parallel engines (2 ranks, one core each): the run reserves, syncs into and resumes them as any.
    "engine.tensor_parallel_size=2",
]
DASHBOARD = Path(__file__).parent.parent / "cluster" / "grafana_dashboard.json"


def optimizer_step_keys(config) -> set[str]:
    """The learner figures of a train record that only appear when the update took an optimizer step (the tiny
    model's groups are often all flat): the policy loss's metrics and the gradient norm."""
    zeros = torch.zeros(1, 2)
    _, metrics = rl_loss(
        zeros, zeros, torch.ones(1), torch.ones(1, 2), config.learner.policy_loss,
        engine_logprobs=zeros, ref_logprobs=zeros,
    )
    return {f"learner_{key}" for key in [*metrics, "grad_norm"]}


def dashboard_metric_keys() -> set[str]:
    """The record keys the Grafana panels plot: ray_terrarium_<key> in each panel's query."""
    queries = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    return {key for query in queries for key in re.findall(r"ray_terrarium_(\w+)", query)}


def test_train_runs_checkpoints_and_resumes_without_repeating_steps(ray_session, tiny_model_dir, tmp_path):
    config = load_config("configs/local.yaml", OVERRIDES + [f"output_dir={tmp_path}", f"model.path={tiny_model_dir}"])
    train(config)
    run_dir = config.run_dir.resolve()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["phase"] == "train"] == [1, 2]
    assert [r["label"] for r in records if r["phase"] == "eval"] == ["before", "after-sft", "after"]
    # configs/local.yaml plays one episode per seed before training (train.before_eval_samples), two after.
    assert [r["eval_samples_per_seed"] for r in records if r["phase"] == "eval"] == [1.0, 2.0, 2.0]
    assert [r["phase"] for r in records].count("sft") == 1
    # What the persona table's training-time column is computed from (bench/persona_baselines.py).
    assert all({"step_s", "episodes"} <= set(r) for r in records if r["phase"] == "train")
    assert [r["episodes"] for r in records if r["phase"] == "train"] == [4, 4]
    assert "sft_s" in next(r for r in records if r["phase"] == "sft")
    assert (run_dir / "curves.png").stat().st_size > 0
    store = ParquetTrajectoryStore(run_dir / "trajectories")
    assert store.steps(config.run_name) == [0, 1]
    assert len(store.read(config.run_name)) == 8
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 2}
    # Every Grafana panel plots a figure the driver logs (and so sets as a gauge): train or final eval record.
    logged = set(records[-2]) | set(records[-1]) | optimizer_step_keys(config)
    assert dashboard_metric_keys() <= logged, dashboard_metric_keys() - logged
    status = read_status(run_dir)
    assert (status.step, status.total_steps, status.finished) == (2, 2, True)
    assert [c.policy_version for c in status.checkpoints] == [1, 2]

    # The driver died after checkpointing step 1 (step 2's checkpoint never landed): a rerun does step 2 again.
    shutil.rmtree(latest_checkpoint(run_dir))
    train(config)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["phase"] == "train"] == [1, 2, 2]
    assert [r["label"] for r in records if r["phase"] == "eval"][-1] == "after"
    assert "before" not in [r.get("label") for r in records[-2:]]  # no second "before" evaluation on resume
    assert len(store.read(config.run_name)) == 8  # replayed episodes were not stored twice
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 2}
    assert read_status(run_dir).finished

    # The newest checkpoint is damaged on disk (an empty state.json): the rerun warns, resumes from step 1's
    # checkpoint and does step 2 once more, neither repeating step 1 nor skipping step 2.
    (latest_checkpoint(run_dir) / "state.json").write_text("")
    assert latest_checkpoint(run_dir).name == "version_00000001"
    train(config)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["phase"] == "train"] == [1, 2, 2, 2]
    assert len(store.read(config.run_name)) == 8
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 2}


def test_relative_output_dir_is_refused_in_a_ray_job(monkeypatch):
    """A job's working directory is a temporary copy that Ray deletes: the run would be lost."""
    monkeypatch.setenv(RAY_JOB_ENV_VAR, "{}")
    with pytest.raises(ValueError, match="output_dir=\\$PWD/runs"):
        train(load_config("configs/local.yaml", ["output_dir=runs"]))


def test_another_seed_samples_other_training_episodes():
    """Sampling seeds follow episode ids: a run with seed=1 is a replicate, even on text_adventure's fixed map
    where every harness seed plays the same game."""

    def episode_ids(seed: int) -> set[str]:
        config = load_config("configs/local.yaml", [f"seed={seed}"])
        return {r.episode_id for r in group_requests(config.run_name, 0, step_seeds(config, 0), config.rollout)}

    assert episode_ids(0) == episode_ids(0)
    assert not episode_ids(0) & episode_ids(1)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 2, 4) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_held_out_statistics_are_over_seeds():
    # seed 1 wins once of twice, seed 2 never: pass@1 1/4, pass@2 1/2; per-seed success means 0.5 and 0.
    stats = held_out_statistics([1, 1, 2, 2], [True, False, False, False], [90.0, -7.0, -7.0, -7.0])
    assert (stats["seeds"], stats["samples_per_seed"]) == (2.0, 2.0)
    assert stats["pass_at_1"] == 0.25 and stats["pass_at_2"] == 0.5
    assert stats["success_rate_ci95"] == pytest.approx(0.49)  # 1.96 * stdev([0.5, 0]) / sqrt(2)


def test_flat_group_fraction_counts_groups_without_a_gradient():
    assert flat_group_fraction([1.0, 1.0, 2.0, 5.0, 3.0, 3.0], ["a", "a", "b", "b", "c", "c"], 1e-6) == 2 / 3
