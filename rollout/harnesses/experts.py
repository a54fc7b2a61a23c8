"""Policies that act from observations alone: the built-in harnesses' experts (SFT demonstrations and the
baseline to beat) and a random policy (the floor).

A policy is any object with `reset(seed=None)` before each episode and `act(observation) -> Action`. Experts
read the structured facts a harness puts in `observation.metadata`, never the harness's hidden state.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Protocol

from rollout.harnesses.base import Observation
from rollout.harnesses.number_guess import HIGHEST, LOWEST
from rollout.harnesses.text_adventure import LOCKED_ROOM, ROOMS, UNLOCKING_ITEM
from rollout.harnesses.tools import Action


class Policy(Protocol):
    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: Observation) -> Action: ...


class BinarySearchExpert:
    """Guesses the middle of the range the hints leave open: at most 7 guesses for 1..100."""

    def __init__(self) -> None:
        self.low, self.high = LOWEST, HIGHEST

    def reset(self, seed: int | None = None) -> None:
        self.low, self.high = LOWEST, HIGHEST

    def act(self, observation: Observation) -> Action:
        facts = observation.metadata
        if facts.get("hint") == "Too low":
            self.low = max(self.low, facts["guess"] + 1)
        elif facts.get("hint") == "Too high":
            self.high = min(self.high, facts["guess"] - 1)
        return Action("guess", {"number": (self.low + self.high) // 2})


class NoisyBinarySearch(BinarySearchExpert):
    """A deliberately weaker demonstrator: the middle of the open range on a `bisect_prob` share of its guesses,
    otherwise a uniformly random number inside that range. SFT on it leaves GRPO room to sharpen the policy
    toward bisection: with 7 guesses it wins about 74% of the games at 0.5 (bisection 100%, uniform guessing
    inside the range 51%)."""

    def __init__(self, bisect_prob: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.bisect_prob = bisect_prob
        self.rng = random.Random(seed)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        if seed is not None:
            self.rng = random.Random(seed)

    def act(self, observation: Observation) -> Action:
        middle = super().act(observation)  # also narrows the range by the last hint
        if self.rng.random() < self.bisect_prob:
            return middle
        return Action("guess", {"number": self.rng.randint(self.low, self.high)})


class ShortestPathExpert:
    """Takes any item it sees, otherwise walks the shortest way to the key, then to the locked room.

    It knows the map (like a player who has read the walkthrough) and reads where it is and what it carries
    from the observation.
    """

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, observation: Observation) -> Action:
        facts = observation.metadata
        if facts["items"]:
            return Action("take", {"item": facts["items"][0]})
        holding_key = UNLOCKING_ITEM in facts["inventory"]
        goal = LOCKED_ROOM if holding_key else next(n for n, r in ROOMS.items() if r.item == UNLOCKING_ITEM)
        return Action("go", {"direction": _first_step(facts["room"], goal, holding_key)})


def _first_step(start: str, goal: str, holding_key: bool) -> str:
    """Breadth-first search over the map; the locked room is passable only with the key."""
    first_direction: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        room = queue.popleft()
        if room == goal and room != start:
            return first_direction[room]  # type: ignore[return-value]
        for direction, neighbour in ROOMS[room].exits.items():
            if neighbour in first_direction or (neighbour == LOCKED_ROOM and not holding_key):
                continue
            first_direction[neighbour] = first_direction[room] or direction
            queue.append(neighbour)
    raise ValueError(f"no path from {start!r} to {goal!r}")


class NoisyShortestPath(ShortestPathExpert):
    """A deliberately weaker text_adventure demonstrator: the expert's move on a `expert_prob` share of its
    turns, otherwise a uniformly random action (RandomPolicy). At 0.5 it wins about 45% of the games within
    10 turns (the expert 100%): room for GRPO to sharpen an SFT policy toward the shortest path."""

    def __init__(self, expert_prob: float = 0.5, seed: int = 0) -> None:
        self.expert_prob = expert_prob
        self.rng = random.Random(seed)
        self.random_policy = RandomPolicy(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = random.Random(seed)
            self.random_policy.reset(seed + 1)

    def act(self, observation: Observation) -> Action:
        if self.rng.random() < self.expert_prob:
            return super().act(observation)
        return self.random_policy.act(observation)


class RandomPolicy:
    """Uniformly random actions with random arguments drawn from each parameter's JSON Schema.

    Works for any harness whose parameters have an enum, a boolean type, numeric bounds, or are objects of
    such properties (optional ones included at random).
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = random.Random(seed)

    def act(self, observation: Observation) -> Action:
        if not observation.available_actions:
            raise ValueError("the observation offers no actions (is the episode over?)")
        action = self.rng.choice(observation.available_actions)
        return Action(action.name, {p: self._sample(p, schema) for p, schema in action.parameters.items()})

    def _sample(self, parameter: str, schema: dict[str, Any]) -> Any:
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "object" and "properties" in schema:
            return {key: self._sample(f"{parameter}.{key}", sub) for key, sub in schema["properties"].items()
                    if key in schema.get("required", ()) or self.rng.random() < 0.5}
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind in ("integer", "number") and "minimum" in schema and "maximum" in schema:
            if kind == "integer":
                return self.rng.randint(schema["minimum"], schema["maximum"])
            return self.rng.uniform(schema["minimum"], schema["maximum"])
        raise ValueError(f"cannot sample {parameter!r} at random: its schema needs an enum, a boolean type or "
                         f"numeric minimum and maximum, got {schema}")
