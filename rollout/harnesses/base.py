"""The Terrarium harness interface: an async episode with reset/step/reward.

Follows the original terrarium-agent harness interface with its defects fixed:
the base class enforces max_steps and timeout_seconds, validates every action against that action's JSON
Schema before the harness sees it, and turns a harness exception into an episode that ends with status
"error" instead of a crashed worker. Resets are seeded: the same seed gives the same episode, which GRPO
groups depend on.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import jsonschema


class HarnessStatus(str, Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass
class ActionDefinition:
    """One action; `parameters` maps each parameter name to its JSON Schema."""

    name: str
    description: str
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def json_schema(self) -> dict[str, Any]:
        """The whole argument object as a valid JSON Schema (every parameter required)."""
        return {
            "type": "object",
            "properties": self.parameters,
            "required": list(self.parameters),
            "additionalProperties": False,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass
class Observation:
    content: Any
    content_type: str = "text"
    available_actions: list[ActionDefinition] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    reward: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ActionResult:
    """What one step did. `step_used` False means the action was refused and cost no step."""

    success: bool
    observation: Observation
    reward: float = 0.0
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    step_used: bool = True


@dataclass
class EpisodeStats:
    total_steps: int
    total_reward: float
    success: bool
    duration_seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        """The numbers a harness adds to its metadata (persona: convergence, ...), which evaluations average;
        the seed is an id, not a figure."""
        return {
            k: float(v)
            for k, v in self.metadata.items()
            if k != "seed" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }


class BaseHarness(ABC):
    """An environment an agent plays episodes in.

    Subclasses implement `_reset`, `_step` and `get_action_space`; the public methods here own the
    bookkeeping (status, step count, reward, limits, validation, errors) so no harness can get it wrong.
    """

    def __init__(
        self,
        name: str,
        description: str,
        max_steps: int | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.max_steps = max_steps
        self.timeout_seconds = timeout_seconds
        self.status = HarnessStatus.ACTIVE
        self.current_step = 0
        self.episode_reward = 0.0
        self.seed: int | None = None
        self._started_at = time.monotonic()
        self._last_observation: Observation | None = None

    # --- what a harness implements -------------------------------------------------------------

    @abstractmethod
    async def _reset(self, rng: random.Random) -> Observation:
        """Start a new episode; all randomness must come from `rng`."""

    @abstractmethod
    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        """Apply one schema-valid action. Set self.status to end the episode."""

    @abstractmethod
    def get_action_space(self) -> list[ActionDefinition]:
        """The actions available now."""

    # --- the interface -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        return None

    async def reset(self, seed: int | None = None) -> Observation:
        self.seed = seed
        self.status = HarnessStatus.ACTIVE
        self.current_step = 0
        self.episode_reward = 0.0
        self._started_at = time.monotonic()
        observation = await self._reset(random.Random(seed))
        observation.available_actions = self.get_action_space()
        observation.metadata["status"] = self.status.value
        observation.metadata["step"] = self.current_step
        self._last_observation = observation
        return observation

    async def get_observation(self) -> Observation:
        if self._last_observation is None:
            raise RuntimeError(f"harness {self.name!r}: call reset() before get_observation()")
        return self._last_observation

    def is_done(self) -> bool:
        return self.status != HarnessStatus.ACTIVE

    def get_stats(self) -> EpisodeStats:
        return EpisodeStats(
            total_steps=self.current_step,
            total_reward=self.episode_reward,
            success=self.status == HarnessStatus.COMPLETED,
            duration_seconds=time.monotonic() - self._started_at,
            metadata={"status": self.status.value, "seed": self.seed},
        )

    async def step(self, action: str, /, **params: Any) -> ActionResult:
        """Validate, apply and account for one action. Never raises for bad input or harness bugs.

        `action` is positional-only so that an action may have a parameter named "action".
        """
        if self._last_observation is None:
            return self._refuse("call reset() before step()")
        if self.is_done():
            return self._refuse(f"the episode is over (status {self.status.value})")
        if self.timeout_seconds is not None and time.monotonic() - self._started_at > self.timeout_seconds:
            self.status = HarnessStatus.TIMEOUT
            result = self._refuse(f"the episode ran past its {self.timeout_seconds}s timeout")
            self._last_observation = result.observation  # the episode ended: get_observation() must say so
            return result

        definitions = {a.name: a for a in self.get_action_space()}
        if action not in definitions:
            return self._refuse(f"unknown action {action!r}; available: {', '.join(definitions)}")
        # Not jsonschema.validate: it re-checks the schema itself on every call, milliseconds per step.
        validator = jsonschema.Draft202012Validator(definitions[action].json_schema())
        problem = jsonschema.exceptions.best_match(validator.iter_errors(params))
        if problem is not None:
            where = ".".join(str(p) for p in problem.absolute_path) or "arguments"
            return self._refuse(f"invalid arguments for {action!r} ({where}): {problem.message}")

        try:
            result = await self._step(action, params)
        except Exception as exc:  # a harness bug ends this episode only
            self.status = HarnessStatus.ERROR
            result = ActionResult(
                success=False,
                observation=Observation(content=f"harness error: {exc}", done=True),
                error=f"{type(exc).__name__}: {exc}",
            )

        if result.step_used:
            self.current_step += 1
            self.episode_reward += result.reward
            if self.max_steps is not None and self.current_step >= self.max_steps and not self.is_done():
                self.status = HarnessStatus.FAILED
        result.observation.done = self.is_done()
        result.observation.reward = result.reward
        result.observation.available_actions = [] if self.is_done() else self.get_action_space()
        # The base class owns these two: a harness's own value could be stale (e.g. before max_steps hit).
        result.observation.metadata["status"] = self.status.value
        result.observation.metadata["step"] = self.current_step
        self._last_observation = result.observation
        return result

    def _refuse(self, message: str) -> ActionResult:
        """An action that did nothing: the agent sees why, the episode state is unchanged."""
        done = self.is_done()
        observation = Observation(
            content=f"Error: {message}",
            available_actions=[] if done else self.get_action_space(),
            metadata={"status": self.status.value, "step": self.current_step},
            done=done,
            reward=0.0,
        )
        return ActionResult(success=False, observation=observation, error=message, step_used=False)
