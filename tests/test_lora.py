"""LoRA in the learner (learner.lora): only the adapters train, checkpoints hold the adapters and a pointer to
the base, resume is exact, and after a sync the engine serves the learner's policy (its logprobs equal the
learner's): adapters alone into an engine running vLLM's LoRA support (engine.lora_sync=adapter, its own
tiny-model engine for this module), or merged weights into the session's engine with LoRA off (merged)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from transformers import AutoModelForCausalLM

from cluster.config import ConfigError, load_config
from learner.group import LearnerConfig, LearnerGroup
from learner.lora import LoraConfig
from learner.weight_sync import sync_adapter_through_object_store, sync_through_object_store
from rollout.engine import start_engines
from rollout.weight_receiver import LoraAdapter
from tests.test_learner_group import SCALE_SENSITIVE, make_batch, model_dir  # noqa: F401 (a fixture)
from tests.test_weight_sync import check_sync_serves_the_learners_weights, logprob_errors, play, rollouts

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_lora_config_is_validated_with_dotted_keys():
    config = load_config(None, ["learner.lora.rank=4", "learner.lora.target_modules=[q_proj]"])
    assert config.learner.lora == LoraConfig(rank=4, target_modules=["q_proj"])
    assert config.engine.lora_sync == "adapter" and config.engine_lora_rank == 4  # engines load the adapters
    assert load_config(None, ["learner.lora.rank=4", "engine.lora_sync=merged"]).engine_lora_rank is None
    assert load_config(None).learner.lora is None and load_config(None).engine_lora_rank is None
    with pytest.raises(ConfigError, match="learner"):
        load_config(None, ["learner.lora.rank=0"])
    with pytest.raises(ConfigError, match="engine.lora_sync"):
        load_config(None, ["engine.lora_sync=lazy"])
    with pytest.raises(ConfigError, match="engine.lora_sync=merged syncs through engine.weight_transfer=object_store"):
        load_config(None, ["learner.lora.rank=4", "engine.lora_sync=merged", "engine.weight_transfer=nccl"])


@pytest.fixture(scope="module")
def lora_engine(ray_session, tiny_model_dir, engine_config):
    """A tiny-model engine with vLLM's LoRA support on, for adapters of rank <= 8."""
    (handle,) = start_engines(str(tiny_model_dir), engine_config.model_copy(update={"max_num_seqs": 16}), lora_rank=8)
    yield handle
    ray_session.get(handle.shutdown.remote())


def adapter_with(adapter: LoraAdapter, change) -> LoraAdapter:
    """`adapter` with its tensors (and adapter_config) passed through `change`."""
    tensors, config = change(load_tensors(adapter.weights), json.loads(adapter.config))
    return LoraAdapter(config=json.dumps(config).encode(), weights=save_tensors(tensors))


def wrong_shape(tensors: dict, config: dict) -> tuple[dict, dict]:
    name = next(name for name in sorted(tensors) if name.endswith("q_proj.lora_A.weight"))
    return {**tensors, name: tensors[name][:, :-1].contiguous()}, config


def wrong_layer(tensors: dict, config: dict) -> tuple[dict, dict]:
    return {name.replace(".layers.0.", ".layers.99."): tensor for name, tensor in tensors.items()}, config


def rank_over_the_limit(tensors: dict, config: dict) -> tuple[dict, dict]:
    padded = {}
    for name, tensor in tensors.items():  # rank 8 -> 16 with zero rows (A) and columns (B)
        padded[name] = torch.cat([tensor, torch.zeros_like(tensor)], dim=0 if ".lora_A." in name else 1)
    return padded, {**config, "r": 16, "lora_alpha": 2 * config["lora_alpha"]}


def test_adapter_sync_serves_the_learners_policy_and_refuses_bad_adapters(
    ray_session, lora_engine, engine, engine_config, tiny_model_dir
):
    config = LearnerConfig(sft_lr=3e-2, lora=LoraConfig(rank=8, target_modules=ATTENTION))
    learner = LearnerGroup(1, tiny_model_dir, config)
    coordinator = rollouts(lora_engine, tiny_model_dir)
    timeout = engine_config.weight_sync_timeout_s
    try:
        # SFT, adapter-only sync, logprobs equal the learner's; twice: the second adapter replaces the first
        for _ in range(2):
            check_sync_serves_the_learners_weights(
                ray_session, lora_engine, engine_config, tiny_model_dir, learner, coordinator
            )
        version = ray_session.get(lora_engine.get_policy_version.remote())
        adapter = ray_session.get(learner.workers[0].lora_adapter.remote())
        full_bytes = sum(t.numel() * t.element_size() for t in learner.state_dict().values())
        assert adapter.num_bytes < full_bytes / 4  # what travels: adapters, not the model

        for change, error in (
            (wrong_shape, r"q_proj: lora_A \(8, \d+\) and lora_B .* do not fit its weight"),
            (wrong_layer, "the served model has no linear layer model.layers.99.self_attn"),
            (rank_over_the_limit, "LoRA rank 16 is greater than max_lora_rank 8"),
        ):
            with pytest.raises(Exception, match=error):
                sync_adapter_through_object_store(adapter_with(adapter, change), [lora_engine], version + 1, timeout)
            assert ray_session.get(lora_engine.get_policy_version.remote()) == version
        with pytest.raises(Exception, match="runs with LoRA off"):  # the session engine: no lora_rank
            sync_adapter_through_object_store(adapter, [engine], version + 1, timeout)

        kept = play(coordinator, "kept")  # the refused adapters left the last good one serving
        assert {t.policy_version for t in kept} == {version}
        assert max(logprob_errors(learner, kept)) < 1e-3
        # only the served adapter's files remain on the engine's node
        files = ray_session.get(lora_engine.__ray_call__.remote(lambda actor: sorted(actor.lora_dir.iterdir())))
        assert [path.name for path in files] == ["adapter-2"], files
    finally:
        coordinator.shutdown()
        learner.shutdown()


def test_only_adapters_train_and_the_engine_serves_the_merged_policy(
    ray_session, engine, engine_config, tiny_model_dir, tmp_path
):
    config = LearnerConfig(sft_lr=3e-2, lora=LoraConfig(rank=8, target_modules=ATTENTION))
    learner = LearnerGroup(1, tiny_model_dir, config)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    merged_sync = engine_config.model_copy(update={"lora_sync": "merged"})  # the session engine runs LoRA off
    try:
        assert all(torch.equal(tensor, base[name]) for name, tensor in learner.state_dict().items())  # B = 0
        check_sync_serves_the_learners_weights(ray_session, engine, merged_sync, tiny_model_dir, learner)
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
