"""Any harness as a gymnasium environment, so RLlib (or any gymnasium learner) can train classic policies on it.

A harness opts in by defining the numeric contract:
    numeric_spaces() -> (observation_space, action_space)
    numeric_observation() -> np.ndarray        (an element of observation_space, for the current state)
    numeric_action(a) -> tools.Action           (the harness action for an element of action_space)
The text observation always comes along in `info["text"]`. The harness is async; the env owns a private event
loop and runs each call to completion on it, so it must not be used from inside a running event loop.

Registered ids: terrarium/NumberGuess-v0 and terrarium/TextAdventure-v0. In a process that has not imported
this module, name the module too: gymnasium.make("rollout.harnesses.gym_env:terrarium/NumberGuess-v0").
"""

from __future__ import annotations

import asyncio
from typing import Any

import gymnasium
import numpy as np

from rollout.harnesses.base import BaseHarness, HarnessStatus, Observation
from rollout.harnesses.registry import make_harness

NUMERIC_CONTRACT = ("numeric_spaces", "numeric_observation", "numeric_action")


class HarnessEnv(gymnasium.Env):
    """`harness` is a harness or a registry spec ("number_guess", "module:Class").

    An episode ends `terminated` when the harness completes, fails (its step limit is a rule of the game
    and part of the state) or errors, and `truncated` when it times out.
    """

    metadata = {"render_modes": []}

    def __init__(self, harness: BaseHarness | str) -> None:
        self.harness = make_harness(harness) if isinstance(harness, str) else harness
        missing = [m for m in NUMERIC_CONTRACT if not callable(getattr(self.harness, m, None))]
        if missing:
            raise TypeError(
                f"harness {self.harness.name!r} does not support numeric RL: it must define {', '.join(missing)} "
                "(see rollout.harnesses.gym_env)"
            )
        self.observation_space, self.action_space = self.harness.numeric_spaces()
        self._loop = asyncio.new_event_loop()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """`seed` seeds the harness directly (same seed as an LLM episode); without one the harness seed is
        drawn from the env's seeded generator, so reset(seed=s), reset() is reproducible."""
        super().reset(seed=seed)
        harness_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        observation = self._loop.run_until_complete(self.harness.reset(harness_seed))
        return self.harness.numeric_observation(), self._info(observation)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        chosen = self.harness.numeric_action(action)
        result = self._loop.run_until_complete(self.harness.step(chosen.name, **chosen.arguments))
        status = self.harness.status
        terminated = status in (HarnessStatus.COMPLETED, HarnessStatus.FAILED, HarnessStatus.ERROR)
        truncated = status == HarnessStatus.TIMEOUT
        info = self._info(result.observation)
        if result.error is not None:
            info["error"] = result.error
        return self.harness.numeric_observation(), float(result.reward), terminated, truncated, info

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.harness.shutdown())
            self._loop.close()

    def _info(self, observation: Observation) -> dict[str, Any]:
        harness = self.harness
        return {"text": str(observation.content), "status": harness.status.value, "step": harness.current_step}


ENV_IDS = {"terrarium/NumberGuess-v0": "number_guess", "terrarium/TextAdventure-v0": "text_adventure"}
for _env_id, _harness in ENV_IDS.items():
    gymnasium.register(id=_env_id, entry_point="rollout.harnesses.gym_env:HarnessEnv", kwargs={"harness": _harness})
