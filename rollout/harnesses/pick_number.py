"""One turn: pick an integer from 1 to 10 and earn that many points.

The smallest task whose reward depends on what the model replies, for the learning regression test
(tests/test_learning.py): a policy that picks uniformly earns 5.5 on average, one that has learned earns 10.
"""

from __future__ import annotations

import random
from typing import Any

from rollout.harnesses.base import ActionDefinition, ActionResult, BaseHarness, HarnessStatus, Observation
from rollout.harnesses.tools import Action

LOWEST, HIGHEST = 1, 10


class PickNumberHarness(BaseHarness):
    def __init__(self, timeout_seconds: float | None = None) -> None:
        super().__init__(
            name="pick_number",
            description=f"Pick an integer from {LOWEST} to {HIGHEST}: you earn as many points as the number.",
            max_steps=1,
            timeout_seconds=timeout_seconds,
        )

    def get_action_space(self) -> list[ActionDefinition]:
        number = {"type": "integer", "minimum": LOWEST, "maximum": HIGHEST, "description": "your pick"}
        return [ActionDefinition("pick", f"Pick a number ({LOWEST}-{HIGHEST}).", {"number": number})]

    async def _reset(self, rng: random.Random) -> Observation:
        return Observation(content=f"Pick a number from {LOWEST} to {HIGHEST}.")

    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        number = int(params["number"])
        self.status = HarnessStatus.COMPLETED
        return ActionResult(success=True, observation=Observation(content=f"You picked {number}."), reward=float(number))


class HighestPick:
    """The expert: always the highest number."""

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, observation: Observation) -> Action:
        return Action("pick", {"number": HIGHEST})
