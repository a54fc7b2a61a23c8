"""LoRA in the learner (learner.lora): only the adapters train, checkpoints hold the adapters and a pointer to
the base, resume is exact, and after a sync the engine serves the merged policy (its logprobs equal the
learner's)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.config import ConfigError, load_config
from learner.group import LearnerConfig, LearnerGroup
from learner.lora import LoraConfig
from learner.weight_sync import sync_through_object_store
from tests.test_learner_group import SCALE_SENSITIVE, make_batch, model_dir  # noqa: F401 (a fixture)
from tests.test_weight_sync import check_sync_serves_the_learners_weights

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_lora_config_is_validated_with_dotted_keys():
    config = load_config(None, ["learner.lora.rank=4", "learner.lora.target_modules=[q_proj]"])
    assert config.learner.lora == LoraConfig(rank=4, target_modules=["q_proj"])
    assert load_config(None).learner.lora is None
    with pytest.raises(ConfigError, match="learner"):
        load_config(None, ["learner.lora.rank=0"])


def test_only_adapters_train_and_the_engine_serves_the_merged_policy(
    ray_session, engine, engine_config, tiny_model_dir, tmp_path
):
    config = LearnerConfig(sft_lr=3e-2, lora=LoraConfig(rank=8, target_modules=ATTENTION))
    learner = LearnerGroup(1, tiny_model_dir, config)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    try:
        assert all(torch.equal(tensor, base[name]) for name, tensor in learner.state_dict().items())  # B = 0
        check_sync_serves_the_learners_weights(ray_session, engine, engine_config, tiny_model_dir, learner)
        merged = learner.state_dict()
        assert merged.keys() == base.keys()
        for name, tensor in merged.items():
            adapted = any(name.endswith(f".{module}.weight") for module in ATTENTION)  # not their biases
            assert torch.equal(tensor, base[name]) != adapted, name  # only the adapted layers moved
            if adapted:  # by a rank-8 update
                assert torch.linalg.matrix_rank(tensor - base[name]).item() <= 8

        checkpoint = learner.save_checkpoint(tmp_path, policy_version=1) / "model"
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert not (checkpoint / "model.safetensors").exists()
        assert json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            tiny_model_dir
        )
    finally:
        learner.shutdown()
        version = ray_session.get(engine.get_policy_version.remote()) + 1
        sync_through_object_store(base, [engine], version, engine_config.weight_sync_timeout_s)


def test_lora_resume_is_exact(ray_session, model_dir, tmp_path):  # noqa: F811 (the imported fixture)
    first, second = make_batch(2, [[1.0, 0.0, 0.0], [0.2, 0.9, 0.4]]), make_batch(3, [[0.0, 1.0, 1.0], [0.5, 0.1]])
    # dropout > 0: the second update's masks come from the torch RNG, which the checkpoint must restore too
    config = LearnerConfig(**SCALE_SENSITIVE, micro_batch_size=2, lora=LoraConfig(rank=4, dropout=0.1))
    group = LearnerGroup(1, model_dir, config, use_gpu=False)
    try:
        group.update(first)
        path = group.save_checkpoint(tmp_path, policy_version=1)
        group.update(second)
        continued = group.state_dict()
    finally:
        group.shutdown()
    resumed = LearnerGroup(1, model_dir, config.model_copy(update={"seed": 99}), use_gpu=False)
    try:
        assert resumed.load_checkpoint(path).step == 1
        resumed.update(second)
        for name, tensor in resumed.state_dict().items():
            torch.testing.assert_close(tensor, continued[name], rtol=0, atol=0)
    finally:
        resumed.shutdown()
    full = LearnerGroup(1, model_dir, config.model_copy(update={"lora": None}), use_gpu=False)
    try:
        with pytest.raises(Exception, match="learner.lora is not set"):
            full.load_checkpoint(path)
    finally:
        full.shutdown()
