"""Asynchronous GRPO (train.async): the staleness bound, partial rollouts across a weight sync, long-tail
groups (min_groups_fraction, episode timeouts) and exact resume after a kill, on the session's engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.config import ConfigError, load_config
from cluster.metrics import MetricsLog, plot_curves, read_metrics
from cluster.train import grpo, staleness, step_seeds
from learner.group import LearnerConfig, LearnerGroup
from learner.weight_sync import sync_through_object_store
from rollout.agent_loop import EpisodeRequest
from rollout.data.store import ParquetTrajectoryStore
from rollout.models.checkpoints import checkpoint_dir, latest_checkpoint, read_checkpoint_state
from rollout.worker import RolloutCoordinator

HARNESS = "tests.long_tail_harness:LongTailGuess"
OVERRIDES = [
    f"rollout.harness={HARNESS}", "rollout.groups_per_step=4", "rollout.group_size=2", "rollout.agent.max_turns=2",
    "sampling.max_tokens=16", "train.checkpoint_every=1", "engine.dtype=float32", "engine.weight_sync_timeout_s=45",
]


def test_async_config_keys():
    config = load_config("configs/local.yaml", ["train.async.max_staleness=2", "train.async.stale_data=wait"])
    assert (config.train.async_.max_staleness, config.train.async_.stale_data) == (2, "wait")
    assert load_config(None).train.async_.max_staleness == 0  # the schema's default is the synchronous loop
    assert load_config("configs/local.yaml").train.async_.max_staleness == 1  # the default run overlaps
    with pytest.raises(ConfigError, match=r"train.async.max_staleness.*learner.policy_loss.tis_cap"):
        load_config(None, ["train.async.max_staleness=1", "learner.policy_loss.tis_cap=null"])
    with pytest.raises(ConfigError, match=r"train.async.stale_data"):
        load_config(None, ["train.async.stale_data=later"])
    with pytest.raises(ConfigError, match=r"train.min_groups_fraction.*stale_data=drop"):
        load_config(None, ["train.min_groups_fraction=0.5", "train.async.stale_data=wait"])
    with pytest.raises(ConfigError, match=r"train.min_groups_fraction"):
        load_config(None, ["train.min_groups_fraction=0"])


@pytest.fixture(scope="module")
def learner(ray_session, engine, engine_config, tiny_model_dir):
    learner = LearnerGroup(1, tiny_model_dir, LearnerConfig(lr=1e-4, micro_batch_size=8, seed=0))
    yield learner
    # The session engine goes back to the model's own weights, at a version above any used here.
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    version = ray_session.get(engine.get_policy_version.remote())
    sync_through_object_store(original, [engine], version + 1, engine_config.weight_sync_timeout_s)
    learner.shutdown()


def run_grpo(config, learner, engine, tiny_model_dir, start_step=0, carried=None, coordinator=None):
    """What `train` does around its GRPO loop, on the session's engine: engines at the learner's version."""
    run_dir = config.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    learner.sync_weights([engine], start_step, config.engine)
    coordinator = coordinator or RolloutCoordinator(str(tiny_model_dir), [engine], config.sampling, config.rollout)
    store = ParquetTrajectoryStore(run_dir / "trajectories")
    try:
        grpo(config, run_dir, learner, [engine], coordinator, store,
             MetricsLog(run_dir / "metrics.jsonl", config.run_name), start_step, carried or {})
    finally:
        coordinator.shutdown()  # also what a killed driver does to its workers
    return run_dir, store


def test_partial_rollout_across_a_weight_sync(ray_session, engine, engine_config, learner, tiny_model_dir, tmp_path):
    """The answer to "what happens to an episode when the weights change": the sync waits for the turns in
    flight, swaps, and the episode's next turn runs on the new weights; both versions are recorded."""
    config = load_config("configs/local.yaml", OVERRIDES + ["rollout.agent.max_turns=3"])
    version = ray_session.get(engine.get_policy_version.remote())
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], config.sampling, config.rollout)
    try:
        requests = [
            EpisodeRequest(f"partial/ep{k}", "partial", 0, "step0/group0", HARNESS, 7, {"barrier": str(tmp_path)})
            for k in range(2)
        ]
        calls = coordinator.submit(requests)
        deadline = time.monotonic() + 120
        while not (tmp_path / "turn1").exists():  # an episode finished its first turn and is held
            assert time.monotonic() < deadline, "no episode finished a turn"
            time.sleep(0.05)
        learner.sync_weights([engine], version + 1, engine_config)
        (tmp_path / "go").touch()
        (group,) = coordinator.collect(calls, 1, 300).values()
    finally:
        coordinator.shutdown()
    for trajectory in group:
        assert trajectory.num_turns == 3
        assert trajectory.metadata["policy_versions"][0] == version
        assert trajectory.metadata["policy_versions"][-1] == version + 1
        assert trajectory.policy_version == version  # the oldest
        assert staleness(trajectory, version + 1) == 1  # kept with max_staleness >= 1, dropped with 0
    update = learner.update(group)  # the learner takes an episode of two versions as any
    assert update["update_time_s"] > 0


def test_async_steps_never_train_on_data_staler_than_k(learner, engine, tiny_model_dir, tmp_path):
    """max_staleness 2, half of the groups needed. Groups 2 and 3 of every step are long-tail groups: one
    episode plays at once, on the weights of its submission, the other is held. Step 0's are released at
    checkpoint 1, and step 2's groups 0 and 1 wait for them: they arrive at version 1 or 2, carried over and
    trained. Step 1's (sampled at version 0) are released at checkpoint 3, and step 4's groups 0 and 1 wait
    for them: they arrive at version 3 or 4, too stale, dropped. The rest are never released: cancelled."""
    base = load_config("configs/local.yaml", OVERRIDES + [f"output_dir={tmp_path}", "run_name=stale"])
    run_dir = base.run_dir.resolve()
    seeds = [step_seeds(base, step) for step in range(5)]
    signal, never = tmp_path / "signal", tmp_path / "never"
    signal.mkdir()
    hold = {seeds[step][g]: never for step in range(1, 5) for g in (2, 3)}
    hold |= {seeds[0][g]: checkpoint_dir(run_dir, 1) for g in (2, 3)}
    hold |= {seeds[1][g]: checkpoint_dir(run_dir, 3) for g in (2, 3)}
    hold |= {seeds[2][g]: signal / f"{seeds[0][g + 2]}.turn2" for g in (0, 1)}  # after step 0's long tail
    hold |= {seeds[4][g]: signal / f"{seeds[1][g + 2]}.turn2" for g in (0, 1)}  # after step 1's long tail
    hold = {str(seed): str(path) for seed, path in hold.items()}
    config = load_config("configs/local.yaml", OVERRIDES + [
        f"output_dir={tmp_path}", "run_name=stale", "train.steps=5", "train.async.max_staleness=2",
        "train.async.stale_data=drop", "train.min_groups_fraction=0.5",
        f"rollout.harness_kwargs={{hold: {hold}, signal: '{signal}'}}",
    ])
    run_dir, store = run_grpo(config, learner, engine, tiny_model_dir)

    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["phase"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    trained = {gid: r["step"] - 1 for r in records for gid in r["trained_groups"]}  # group -> learner version
    stored = store.read(config.run_name)
    assert sorted({t.group_id for t in stored}) == sorted(trained)  # the store holds exactly what was trained
    for trajectory in stored:
        assert 0 <= staleness(trajectory, trained[trajectory.group_id]) <= 2
    assert all(int(age) <= 2 for r in records for age in r["staleness_hist"])
    assert {"step0/group2", "step0/group3"} <= set(trained)  # carried over, then trained
    assert trained["step0/group2"] >= 1
    assert not {"step1/group2", "step1/group3"} & set(trained)  # arrived too stale
    assert sum(r["groups_dropped_stale"] for r in records) >= 2
    assert sum(r["episodes_dropped_stale"] for r in records) >= 4
    assert records[0]["groups_carried"] == 2
    # Checkpoint 2 names the groups carried past it, for a resume to play them again.
    carried = read_checkpoint_state(checkpoint_dir(run_dir, 2)).data_position["carried_groups"]
    assert {"step1/group2": 1, "step1/group3": 1}.items() <= carried.items()
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")  # with the staleness and idle panels
    assert (run_dir / "curves.png").stat().st_size > 0
    for record in records:
        assert 0 <= record["learner_idle_fraction"] <= 1 and 0 <= record["engine_idle_fraction"] <= 1
        assert record["sync_s"] > 0


class Killed(Exception):
    """Stands in for the driver dying."""


def test_async_resume_after_a_kill_neither_repeats_nor_skips(learner, engine, tiny_model_dir, tmp_path):
    """max_staleness 1; group 3 of every step has an episode that never ends but times out (it does not hold
    the step past rollout.episode_timeout_s). The driver dies in step 1's update, after checkpoint 1, with
    step 1's episodes stored and step 2's rollouts in flight; the rerun resumes at step 1."""
    base = load_config("configs/local.yaml", OVERRIDES + [f"output_dir={tmp_path}", "run_name=resume"])
    hold = {str(step_seeds(base, s)[3]): str(tmp_path / "never") for s in range(3)}
    config = load_config("configs/local.yaml", OVERRIDES + [
        f"output_dir={tmp_path}", "run_name=resume", "train.steps=3", "train.async.max_staleness=1",
        "rollout.episode_timeout_s=3", f"rollout.harness_kwargs={{hold: {hold}}}",
    ])
    update = learner.update
    calls = []

    def dies_in_the_second_update(trajectories):
        calls.append(len(trajectories))
        if len(calls) == 2:
            raise Killed
        return update(trajectories)

    learner.update = dies_in_the_second_update
    try:
        with pytest.raises(Killed):
            run_grpo(config, learner, engine, tiny_model_dir)
    finally:
        learner.update = update
    run_dir = config.run_dir.resolve()
    store = ParquetTrajectoryStore(run_dir / "trajectories")
    assert store.steps(config.run_name) == [0, 1]  # step 1 was stored before the kill
    position = learner.load_checkpoint(latest_checkpoint(run_dir)).data_position
    assert position == {"train_step": 1}

    run_grpo(config, learner, engine, tiny_model_dir, position["train_step"], position.get("carried_groups"))
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["phase"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3]
    stored = store.read(config.run_name)
    assert len(stored) == len({t.episode_id for t in stored}) == 3 * 4 * 2  # every episode once
    assert read_checkpoint_state(latest_checkpoint(run_dir)).data_position == {"train_step": 3}
    held = [t for t in stored if t.group_id.endswith("group3") and not t.token_ids]  # the held episodes
    assert len(held) == 3 and {t.status for t in held} == {"timeout"}
    assert all(r["timeout_episodes"] >= 1 for r in records)
    assert all(int(age) <= 1 for r in records for age in r["staleness_hist"])
