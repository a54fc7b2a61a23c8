"""The RLlib PPO baseline: a real (tiny) training run on the persona environment, its checkpoint reloaded as
RLlibDeltaPolicy for evaluation and /predict-delta, and the config file's validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cluster.config import ConfigError, load_config
from cluster.evaluation import evaluate_policy
from learner.rllib_baseline import REPORT_FILE, BaselineConfig, BaselineFile, RLlibDeltaPolicy, run_baseline
from rollout.harnesses.persona.harness import PersonaHarness
from rollout.harnesses.persona.models import PersonalityDelta, apply_correction
from rollout.harnesses.persona.profiles import AXES, builtin_profiles
from rollout.harnesses.persona.simulator import observe

CONFIG_FILE = Path(__file__).parent.parent / "configs" / "persona-baseline.yaml"


@pytest.fixture(scope="module")
def baseline_run(ray_session, tmp_path_factory):
    config = BaselineConfig(
        output_dir=str(tmp_path_factory.mktemp("runs")), iterations=2, train_batch_size=64, minibatch_size=32,
        num_epochs=1, hidden_sizes=[16], eval_personas=4, max_observations=4,
    )
    lines: list[str] = []
    report = run_baseline(config, log=lines.append)
    return config, report, lines


def test_config_file_loads_with_overrides():
    config = load_config(CONFIG_FILE, ["baseline.iterations=3", "baseline.lr=1e-3"], BaselineFile).baseline
    assert config.iterations == 3 and config.lr == 1e-3 and config.eval_personas >= 200


@pytest.mark.parametrize(
    "override, key",
    [("baseline.iterations=0", "baseline.iterations"), ("baseline.hidden_sizes=wide", "baseline.hidden_sizes"),
     ("baseline.no_such_key=1", "baseline.no_such_key")],
)
def test_bad_config_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(CONFIG_FILE, [override], BaselineFile)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", [], BaselineFile)


def test_training_reports_progress_and_the_table_row(baseline_run):
    config, report, lines = baseline_run
    progress = [line for line in lines if line.startswith("iteration ")]
    assert len(progress) == 2 and progress[-1].startswith(f"iteration 2/2: {report.training.env_steps} deltas")
    assert report.training.env_steps >= 128 and report.training.episodes > 0 and report.personas == 4
    assert 0.0 <= report.converged_rate <= 1.0 and 0.0 < report.mean_final_convergence <= 1.0
    assert report.row() in lines
    saved = json.loads((config.run_dir / REPORT_FILE).read_text())
    assert saved["converged_rate"] == report.converged_rate and saved["checkpoint"] == report.checkpoint


def test_reloaded_policy_predicts_a_valid_rust_shaped_delta(baseline_run):
    _, report, _ = baseline_run
    policy = RLlibDeltaPolicy.load(report.checkpoint)
    claude = builtin_profiles()["claude"]  # a RustyWorm profile: lacks some of the harness's axes
    observation = observe(claude, claude, __import__("random").Random(0))
    delta = policy.predict(claude, observation)
    assert [axis for axis, _ in delta.adjustments] == AXES and delta.confidence == 1.0
    assert all(-2.0 <= amount <= 2.0 for _, amount in delta.adjustments)
    assert PersonalityDelta.model_validate_json(delta.model_dump_json()) == delta
    assert policy.predict(claude, observation) == delta  # greedy: deterministic
    relative = RLlibDeltaPolicy.load(os.path.relpath(report.checkpoint))  # as typed on a command line
    assert relative.predict(claude, observation) == delta
    evolved = apply_correction(claude, delta)
    assert {a.name for a in evolved.personality} >= set(AXES)


def test_policy_reads_the_same_numbers_as_the_training_environment(baseline_run):
    """What predict() feeds the MLP for a (profile, observation) is the harness's own numeric observation (up to
    similarity_to_target, which the observation carries rounded to 6 decimals)."""
    import asyncio

    _, report, _ = baseline_run
    policy = RLlibDeltaPolicy.load(report.checkpoint)
    harness = PersonaHarness(split="heldout", max_observations=policy.max_observations)
    observation = asyncio.run(harness.reset(seed=7))
    action = policy.act(observation)
    asyncio.run(harness.step(action.name, **action.arguments))
    features = policy.features(harness.profile, harness.behaviour, harness.current_step)
    assert np.allclose(features, harness.numeric_observation(), rtol=0, atol=1e-6)


def test_terrarium_eval_runs_the_checkpoint_policy(baseline_run):
    _, report, _ = baseline_run
    result = evaluate_policy("persona", f"rllib:{report.checkpoint}", 3, harness_kwargs={"split": "heldout"})
    assert result.episodes == 3 and result.metrics["refused_per_episode"] == 0
    assert result.metrics.get("status_completed", 0) + result.metrics.get("status_failed", 0) == 1.0


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a persona baseline checkpoint"):
        RLlibDeltaPolicy.load(tmp_path)
    with pytest.raises(ValueError, match="name the checkpoint"):
        evaluate_policy("persona", "rllib:", 1)
