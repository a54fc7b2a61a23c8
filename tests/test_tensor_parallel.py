"""Tensor parallel on CPU: a TP=2 engine (vLLM's multiprocessing executor, one core per rank) against the
session's TP=1 engine, and weight sync into both of its ranks.

One TP=2 engine for the module; every test that changes its weights puts the model's own back.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.placement import engine_bundles
from learner.group import LearnerConfig, LearnerGroup
from learner.weight_sync import sync_through_object_store
from rollout.chat import ChatRenderer
from rollout.demonstrations import expert_demonstrations
from rollout.engine import EngineConfig, SamplingConfig, cpu_thread_binding, start_engines
from rollout.worker import RolloutConfig, RolloutCoordinator
from tests.test_weight_sync import logprob_errors, play

PROMPTS = ["Guess a number between 1 and 100.", "You are in a dark room. Look around.", "Hello", "7 8 9 10"]
GREEDY = SamplingConfig(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def tp2_engine(ray_session, tiny_model_dir, engine_config):
    (handle,) = start_engines(str(tiny_model_dir), engine_config.model_copy(update={"tensor_parallel_size": 2}))
    yield handle
    ray_session.get(handle.shutdown.remote())


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def greedy(ray_session, engine, tokenizer) -> list:
    prompts = [tokenizer.encode(prompt) for prompt in PROMPTS]
    return ray_session.get([engine.generate.remote(ids, GREEDY, [tokenizer.eos_token_id]) for ids in prompts])


def put_back_the_models_weights(ray_session, engine, engine_config, model_dir) -> int:
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    version = ray_session.get(engine.get_policy_version.remote()) + 1
    sync_through_object_store(original, [engine], version, engine_config.weight_sync_timeout_s)
    return version


def test_binding_gives_each_rank_its_own_cores():
    assert cpu_thread_binding(2, 2.0, [0, 1], 0) == "0|1"
    assert cpu_thread_binding(1, 1.0, [0, 1], 1) == "1"  # the second engine of a node starts further along
    assert cpu_thread_binding(2, 4.0, list(range(8)), 0) == "0,1|2,3"
    assert cpu_thread_binding(2, 4.0, list(range(8)), 1) == "4,5|6,7"
    assert cpu_thread_binding(2, 8.0, [0, 1], 0) == "0|1"  # more Ray CPUs than cores: one core per rank
    with pytest.raises(ValueError, match=r"engine.tensor_parallel_size=3 does not fit.* 2 core\(s\) \[0, 1\]"):
        cpu_thread_binding(3, 3.0, [0, 1], 0)
    with pytest.raises(ValueError, match="granted 1 Ray CPUs"):
        cpu_thread_binding(2, 1.0, [0, 1], 0)


def test_a_cpu_engine_bundle_reserves_a_cpu_per_rank():
    assert engine_bundles(EngineConfig(tensor_parallel_size=2), use_gpu=False) == [{"CPU": 2.0}]
    assert engine_bundles(EngineConfig(tensor_parallel_size=2, num_cpus=4), use_gpu=False) == [{"CPU": 4.0}]
    gpu_bundles = engine_bundles(EngineConfig(tensor_parallel_size=2), use_gpu=True)
    assert gpu_bundles == [{"CPU": 1.0, "GPU": 1.0}, {"GPU": 1.0}]


def test_more_ranks_than_cores_is_refused_at_start(ray_session, tiny_model_dir, engine_config):
    ranks = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(Exception, match=f"engine.tensor_parallel_size={ranks} does not fit"):
        start_engines(str(tiny_model_dir), engine_config.model_copy(update={"tensor_parallel_size": ranks}))


def test_tp2_generates_what_tp1_does(ray_session, engine, tp2_engine, tokenizer):
    tp1, tp2 = greedy(ray_session, engine, tokenizer), greedy(ray_session, tp2_engine, tokenizer)
    for one, two in zip(tp1, tp2):
        assert one.token_ids == two.token_ids and len(one.token_ids) > 0
        assert max(abs(a - b) for a, b in zip(one.logprobs, two.logprobs)) < 1e-4


def test_a_sync_reaches_every_rank_and_matches_the_learner(ray_session, tp2_engine, engine_config, tiny_model_dir):
    learner = LearnerGroup(1, tiny_model_dir, LearnerConfig(sft_lr=3e-3))
    config = RolloutConfig(harness="number_guess", group_size=4, agent={"max_turns": 3})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [tp2_engine], SamplingConfig(max_tokens=24), config)
    try:
        renderer = ChatRenderer(AutoTokenizer.from_pretrained(tiny_model_dir))
        learner.sft_update(expert_demonstrations(renderer, "number_guess", list(range(16)), "tp-sync", {}))
        assert max(logprob_errors(learner, play(coordinator, "stale"))) > 0.05  # the engine has not synced yet

        version = ray_session.get(tp2_engine.get_policy_version.remote()) + 1
        learner.sync_weights([tp2_engine], version, engine_config)
        assert ray_session.get(tp2_engine.rank_policy_versions.remote()) == [version, version]
        synced = play(coordinator, "synced")
        assert {t.policy_version for t in synced} == {version}
        assert max(logprob_errors(learner, synced)) < 1e-4
    finally:
        coordinator.shutdown()
        learner.shutdown()
        put_back_the_models_weights(ray_session, tp2_engine, engine_config, tiny_model_dir)


def test_a_refused_sync_leaves_every_rank_on_the_old_weights(
    ray_session, tp2_engine, engine_config, tiny_model_dir, tokenizer
):
    version = ray_session.get(tp2_engine.get_policy_version.remote())
    ranks_before = ray_session.get(tp2_engine.rank_policy_versions.remote())
    before = greedy(ray_session, tp2_engine, tokenizer)
    weights = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    torch.manual_seed(0)
    changed = {name: tensor + 0.05 * torch.randn_like(tensor) for name, tensor in weights.items()}
    changed["model.norm.weight"] = torch.ones(3)  # one tensor that fits no rank: the whole update is refused

    with pytest.raises(Exception, match=r"refused: rank 0: .*do not fit.*; rank 1: "):
        sync_through_object_store(changed, [tp2_engine], version + 1, engine_config.weight_sync_timeout_s)
    assert ray_session.get(tp2_engine.get_policy_version.remote()) == version
    assert ray_session.get(tp2_engine.rank_policy_versions.remote()) == ranks_before
    after = greedy(ray_session, tp2_engine, tokenizer)
    assert [g.token_ids for g in after] == [g.token_ids for g in before]
    assert [g.logprobs for g in after] == [g.logprobs for g in before]

    # Every rank answered the refused call, so the next one is matched to its own replies and goes through.
    version = put_back_the_models_weights(ray_session, tp2_engine, engine_config, tiny_model_dir)
    assert ray_session.get(tp2_engine.rank_policy_versions.remote()) == [version, version]
