"""Guess a secret number from 1 to 100 in at most 10 guesses, with "Too low"/"Too high" hints.

Rules (the original terrarium-agent number_guess): a correct k-th guess earns 100 - 5k (95 on the first try, 50 on the
tenth) and completes the episode; a wrong guess earns -1 and a hint; after 10 guesses the episode fails. A guess
outside 1..100 or not an integer is refused by the base class and costs no guess.

`show_range=True` (not in the reference rules) adds the range the hints leave open to every wrong guess's
observation, "Too low. The number is between 51 and 100. Guesses left: 9.", so the best next guess depends on
the last observation alone: a small model can learn that, while tracking the hints over the whole
conversation is beyond it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from gymnasium import spaces

from rollout.harnesses.base import ActionDefinition, ActionResult, BaseHarness, HarnessStatus, Observation
from rollout.harnesses.tools import Action

LOWEST, HIGHEST = 1, 100
MAX_GUESSES = 10


class NumberGuessHarness(BaseHarness):
    def __init__(
        self, max_steps: int = MAX_GUESSES, timeout_seconds: float | None = None, show_range: bool = False
    ) -> None:
        super().__init__(
            name="number_guess",
            description=f"Guess the secret integer between {LOWEST} and {HIGHEST}. After each wrong guess you "
            f"are told whether it was too low or too high. You have {max_steps} guesses; fewer guesses earn more.",
            max_steps=max_steps,
            timeout_seconds=timeout_seconds,
        )
        self.show_range = show_range
        self.secret = LOWEST
        # The range still consistent with the hints given so far: the numeric observation for classic RL.
        self.low, self.high = LOWEST, HIGHEST

    def get_action_space(self) -> list[ActionDefinition]:
        number = {"type": "integer", "minimum": LOWEST, "maximum": HIGHEST, "description": "your guess"}
        return [ActionDefinition("guess", f"Guess the secret number ({LOWEST}-{HIGHEST}).", {"number": number})]

    async def _reset(self, rng: random.Random) -> Observation:
        self.secret = rng.randint(LOWEST, HIGHEST)
        self.low, self.high = LOWEST, HIGHEST
        return Observation(
            content=f"I'm thinking of a number between {LOWEST} and {HIGHEST}. You have {self.max_steps} guesses.",
            metadata={"guesses_left": self.max_steps},
        )

    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        guess = int(params["number"])  # the schema allows 50.0 as an integer
        guess_number = self.current_step + 1  # the base class counts this step after _step returns
        guesses_left = self.max_steps - guess_number
        metadata: dict[str, Any] = {"guess": guess, "guesses_left": guesses_left}
        if guess == self.secret:
            self.status = HarnessStatus.COMPLETED
            reward = 100.0 - 5.0 * guess_number
            metadata["hint"] = "Correct"
            text = f"Correct! The number was {self.secret}; you found it with guess {guess_number}."
            return ActionResult(success=True, observation=Observation(content=text, metadata=metadata), reward=reward)

        hint = "Too low" if guess < self.secret else "Too high"
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
        else:
            self.high = min(self.high, guess - 1)
        metadata["hint"] = hint
        if guesses_left <= 0:
            self.status = HarnessStatus.FAILED
            text = f"{hint}. {guess} was your last guess; the number was {self.secret}."
        elif self.show_range:
            text = f"{hint}. The number is between {self.low} and {self.high}. Guesses left: {guesses_left}."
        else:
            text = f"{hint}. {guess} is not the number. Guesses left: {guesses_left}."
        return ActionResult(success=True, observation=Observation(content=text, metadata=metadata), reward=-1.0)

    # --- numeric contract for gymnasium / RLlib (rollout.harnesses.gym_env) ----------------------

    def numeric_spaces(self) -> tuple[spaces.Box, spaces.Discrete]:
        """Observation [low, high, guesses used] scaled to [0, 1]; action k guesses k + 1."""
        return spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32), spaces.Discrete(HIGHEST - LOWEST + 1)

    def numeric_observation(self) -> np.ndarray:
        span = HIGHEST - LOWEST
        used = self.current_step / self.max_steps
        return np.array([(self.low - LOWEST) / span, (self.high - LOWEST) / span, used], dtype=np.float32)

    def numeric_action(self, index: int) -> Action:
        return Action("guess", {"number": LOWEST + int(index)})
