"""The gymnasium wrapper: gymnasium's own env checker, whole episodes, and the numeric contract of the two
built-in harnesses (the observation carries what a classic policy needs to play well)."""

from __future__ import annotations

import time
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rollout.harnesses.gym_env import ENV_IDS, HarnessEnv
from rollout.harnesses.number_guess import NumberGuessHarness
from rollout.harnesses.text_adventure import NUMERIC_ACTIONS, TextAdventureHarness
from tests.test_harnesses import CountingHarness


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_gymnasium_env_checker_passes_without_warnings(env_id):
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_random_episodes_run_to_the_end(env_id):
    env = gymnasium.make(env_id)
    env.action_space.seed(0)
    for episode in range(5):
        observation, info = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert observation in env.observation_space and isinstance(info["text"], str) and info["text"]
            total += reward
            done = terminated or truncated
        harness = env.unwrapped.harness
        assert info["status"] in ("completed", "failed") and total == harness.episode_reward
    env.close()


def test_numeric_binary_search_solves_number_guess():
    """The observation's [low, high] is the range the hints leave open: guessing its middle always wins."""
    env = HarnessEnv(NumberGuessHarness())
    for seed in range(30):
        observation, _ = env.reset(seed=seed)
        terminated = False
        while not terminated:
            low, high = np.rint(observation[:2] * 99).astype(int)  # 0-based: action k guesses k + 1
            observation, reward, terminated, truncated, info = env.step((low + high) // 2)
        assert info["status"] == "completed" and info["step"] <= 7 and reward == 100 - 5 * info["step"]
    env.close()


def test_numeric_best_path_solves_text_adventure():
    env = HarnessEnv("text_adventure")
    env.reset(seed=0)
    names = [(a.name, tuple(a.arguments.values())) for a in NUMERIC_ACTIONS]
    path = [("go", ("north",)), ("go", ("north",)), ("take", ("key",)), ("go", ("south",)), ("go", ("east",)),
            ("take", ("treasure",))]
    rewards = [env.step(names.index(step))[1] for step in path]
    assert rewards == [5, 5, 10, 0, 5, 100]
    assert env.unwrapped.harness.status.value == "completed"
    env.close()


def test_same_seed_same_numeric_episode():
    env = HarnessEnv("number_guess")

    def episode(seed: int) -> list[float]:
        env.reset(seed=seed)
        return [env.step(a)[1] for a in (10, 90, 40, 60)]

    def hint_after_guessing_50(seed: int) -> bytes:
        env.reset(seed=seed)
        return env.step(49)[0].tobytes()

    assert episode(5) == episode(5)
    assert len({hint_after_guessing_50(s) for s in range(10)}) > 1  # different secrets, different hints
    env.close()


def test_timeout_truncates():
    env = HarnessEnv(NumberGuessHarness(timeout_seconds=0.01))
    env.reset(seed=0)
    time.sleep(0.05)
    _, reward, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and reward == 0 and info["status"] == "timeout"
    env.close()


def test_make_by_module_qualified_id():
    env = gymnasium.make("rollout.harnesses.gym_env:terrarium/TextAdventure-v0")
    assert isinstance(env.unwrapped.harness, TextAdventureHarness)
    env.close()


def test_harness_without_numeric_contract_is_a_clear_error():
    with pytest.raises(TypeError, match="'counting' does not support numeric RL: it must define numeric_spaces"):
        HarnessEnv(CountingHarness())
