"""RustyWorm's convergence task as a harness: infer a hidden persona from its responses and mimic it.

reset(seed) picks a hidden target persona (seed i -> persona i of the chosen split, see
rollout.harnesses.persona.profiles), starts the agent from the neutral profile (every axis 0) and shows one
BehaviorObservation of the target: a query, the target's response (rollout.harnesses.persona.simulator), RustyWorm's
keyword patterns, and similarity_to_target = the convergence of the agent's current profile.

One action, apply_delta(adjustments, confidence): `adjustments` is an object axis -> amount (any subset of
the axes; an object rather than RustyWorm's [name, amount] pairs because models write it reliably and its
schema is plain) and `confidence` in [0, 1]. It is applied with RustyWorm's apply_correction: value +=
amount * confidence, clamped to [-1, 1]. Each delta uses one observation; the reward is RustyWorm's shaped
step reward on the convergence (rollout.harnesses.persona.analysis). The episode completes when convergence reaches
0.90 and fails once max_observations observations are used. A malformed delta (unknown axis, amount
outside [-2, 2], not a number) is refused and costs no observation.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from gymnasium import spaces
from pydantic import ValidationError

from rollout.harnesses.base import ActionDefinition, ActionResult, BaseHarness, EpisodeStats, HarnessStatus, Observation
from rollout.harnesses.tools import Action
from rollout.harnesses.persona.analysis import CONVERGED_AT, analyze_response, convergence, marker_counts, register_counts, shaped_reward
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta, apply_correction
from rollout.harnesses.persona.profiles import AXES, heldout_persona, neutral_profile, train_persona
from rollout.harnesses.persona.simulator import observe

SPLITS = ("train", "heldout")
MAX_OBSERVATIONS = 10
MAX_AMOUNT = 2.0  # enough to cross the whole [-1, 1] range in one delta
# Numeric observation: RustyWorm's keyword features, marker sentences per body sentence for each marker
# axis, body sentences / 10, the profile's value on every axis, convergence, share of observations used.
_KEYWORD_FEATURES = ["hedging", "tone", "length", "questions", "exclamations", "vocabulary_complexity",
                     "code_blocks", "bullets", "numbered"]


def delta_action_definition(axes: list[str]) -> ActionDefinition:
    """apply_delta over `axes`: the harness's own, or (policy_format) those plus a client profile's."""
    amount = {"type": "number", "minimum": -MAX_AMOUNT, "maximum": MAX_AMOUNT}
    adjustments = {
        "type": "object",
        "description": "axis -> amount to add (times confidence) to that axis; omit axes to leave them",
        "properties": {axis: amount for axis in axes},
        "additionalProperties": False,
    }
    confidence = {"type": "number", "minimum": 0.0, "maximum": 1.0,
                  "description": "scales every amount; 1 applies them in full"}
    return ActionDefinition(
        "apply_delta",
        "Adjust your personality axes: each axis value += amount * confidence, clamped to [-1, 1].",
        {"adjustments": adjustments, "confidence": confidence},
    )


class PersonaHarness(BaseHarness):
    def __init__(self, split: str = "train", max_observations: int = MAX_OBSERVATIONS, timeout_seconds: float | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(max_observations, int) or max_observations < 1:
            raise ValueError(f"max_observations must be a positive integer, got {max_observations!r}")
        super().__init__(
            name="persona",
            description="Mimic a hidden AI persona. Each turn you see one response of the target and your "
            "profile's convergence to it; adjust your personality axes (each in [-1, 1]) with apply_delta. "
            f"Reach convergence {CONVERGED_AT:.2f} within {max_observations} observations; fewer is better.",
            max_steps=max_observations,
            timeout_seconds=timeout_seconds,
        )
        self.split = split
        self.target: AiProfile | None = None
        self.profile = neutral_profile()
        self.behaviour = BehaviorObservation()
        self.convergence = self.best_convergence = 0.0
        self._rng = random.Random()

    def get_action_space(self) -> list[ActionDefinition]:
        return [delta_action_definition(AXES)]

    async def _reset(self, rng: random.Random) -> Observation:
        index = self.seed if self.seed is not None and self.seed >= 0 else rng.randrange(2**31)
        self.target = train_persona(index) if self.split == "train" else heldout_persona(index)
        self._rng = rng
        self.profile = neutral_profile()
        self.convergence = self.best_convergence = convergence(self.profile, self.target)
        self.behaviour = observe(self.target, self.profile, rng)
        content = episode_intro(self.max_steps) + self._render(shown=1)
        return Observation(content=content, metadata=self._facts(observations_used=0))

    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        assert self.target is not None  # the base class refuses step() before reset()
        try:
            delta = PersonalityDelta(
                adjustments=list(params["adjustments"].items()), confidence=params["confidence"], source="Observation"
            )
        except ValidationError as exc:  # e.g. NaN, which JSON Schema cannot exclude
            message = f"invalid delta: {exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc']))}"
            shown = self.current_step + 1
            observation = Observation(
                content=f"Error: {message}\n\n{self._render(shown)}", metadata=self._facts(observations_used=self.current_step)
            )
            return ActionResult(success=False, observation=observation, error=message, step_used=False)

        best_before = self.best_convergence
        self.profile = apply_correction(self.profile, delta)
        self.convergence = convergence(self.profile, self.target)
        self.best_convergence = max(best_before, self.convergence)
        reward = shaped_reward(best_before, self.convergence)
        observations_used = self.current_step + 1
        if self.convergence >= CONVERGED_AT:
            self.status = HarnessStatus.COMPLETED
            header = f"Converged: {self.convergence:.3f} after {observations_used} observations."
        elif observations_used >= self.max_steps:
            self.status = HarnessStatus.FAILED
            header = f"Out of observations: convergence {self.convergence:.3f} (needed {CONVERGED_AT:.2f})."
        else:
            self.behaviour = observe(self.target, self.profile, self._rng)
            header = ""
        if header:
            self.behaviour = self.behaviour.model_copy(update={"similarity_to_target": round(self.convergence, 6)})
            content = header + "\n" + self._render_profile()
        else:
            content = self._render(shown=observations_used + 1)
        facts = self._facts(observations_used) | {"reward": reward}
        return ActionResult(success=True, observation=Observation(content=content, metadata=facts), reward=reward)

    def get_stats(self) -> EpisodeStats:
        stats = super().get_stats()
        stats.metadata.update(
            convergence=self.convergence, best_convergence=self.best_convergence, observations_used=self.current_step
        )
        return stats

    def _facts(self, observations_used: int) -> dict[str, Any]:
        return {
            "observation": self.behaviour.model_dump(mode="json"),
            "profile": self.profile.model_dump(mode="json"),
            "convergence": self.convergence,
            "best_convergence": self.best_convergence,
            "observations_used": observations_used,
            "max_observations": self.max_steps,
            "axes": list(AXES),
        }

    def _render(self, shown: int) -> str:
        return observation_text(
            self.profile, self.behaviour, self.convergence, self.best_convergence, shown, self.max_steps
        )

    def _render_profile(self) -> str:
        return profile_text(self.profile, self.convergence, self.best_convergence)

    # --- numeric contract for gymnasium / RLlib (rollout.harnesses.gym_env) ----------------------

    def numeric_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        """Observation (every entry clipped to [-2, 2]): see _KEYWORD_FEATURES and numeric_observation.
        Action: one number in [-1, 1] per axis (AXES order), applied as amount 2 * a at confidence 1."""
        size = len(_KEYWORD_FEATURES) + len(marker_counts("")) + 1 + len(AXES) + 2
        return (
            spaces.Box(-2.0, 2.0, shape=(size,), dtype=np.float32),
            spaces.Box(-1.0, 1.0, shape=(len(AXES),), dtype=np.float32),
        )

    def numeric_observation(self) -> np.ndarray:
        response = self.behaviour.response
        features = analyze_response(response).features
        keyword = [features[k] for k in _KEYWORD_FEATURES]
        keyword[_KEYWORD_FEATURES.index("length")] /= 1000.0
        keyword[_KEYWORD_FEATURES.index("questions")] /= 5.0
        keyword[_KEYWORD_FEATURES.index("exclamations")] /= 5.0
        body = max(1, sum(register_counts(response)))
        markers = [(positive - negative) / body for negative, positive in marker_counts(response).values()]
        profile = [self.profile.personality_value(axis) or 0.0 for axis in AXES]
        progress = [self.convergence, self.current_step / self.max_steps]
        vector = np.array(keyword + markers + [body / 10.0] + profile + progress, dtype=np.float32)
        return np.clip(vector, -2.0, 2.0)

    def numeric_action(self, action: Any) -> Action:
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.shape != (len(AXES),) or not np.all(np.isfinite(values)):
            raise ValueError(f"persona numeric action must be {len(AXES)} finite numbers (one per axis in {AXES}), got {action!r}")
        amounts = MAX_AMOUNT * np.clip(values, -1.0, 1.0)
        return Action("apply_delta", {"adjustments": {axis: float(a) for axis, a in zip(AXES, amounts)}, "confidence": 1.0})


# --- the text a model reads; rollout.harnesses.persona.policy_format shows the served model exactly these prompts -------------


def episode_intro(max_observations: int) -> str:
    """The instructions before an episode's first observation."""
    return (
        f"You are mimicking a hidden AI persona. Your profile has the axes {', '.join(AXES)}, each in [-1, 1] "
        f"(0 = neutral). Each turn shows one response of the target; reply with apply_delta to move your axes "
        f"toward the target's (value += amount * confidence). Converged at {CONVERGED_AT:.2f}; you have "
        f"{max_observations} observations.\n\n"
    )


def observation_text(
    profile: AiProfile,
    observation: BehaviorObservation,
    convergence: float,
    best_convergence: float,
    shown: int,
    max_observations: int,
) -> str:
    """The target observation number `shown` and the agent's profile, for a model to read."""
    return (
        f"Observation {shown} of {max_observations}. Query: {observation.query}\n"
        f"Response:\n{observation.response}\n"
        f"Patterns: {'; '.join(observation.patterns)}\n" + profile_text(profile, convergence, best_convergence)
    )


def profile_text(profile: AiProfile, convergence: float, best_convergence: float) -> str:
    values = ", ".join(f"{axis} {profile.personality_value(axis) or 0.0:+.2f}" for axis in AXES)
    return (
        f"Convergence of your profile: {convergence:.3f} (best {best_convergence:.3f}, target "
        f"{CONVERGED_AT:.2f}).\nYour profile: {values}"
    )


def first_observation_text(
    profile: AiProfile, observation: BehaviorObservation, max_observations: int = MAX_OBSERVATIONS
) -> str:
    """The first turn reset() would show for this (profile, observation), with the observation's
    similarity_to_target as the convergence: the prompt a policy trained on this harness reads first."""
    similarity = observation.similarity_to_target
    shown = observation_text(profile, observation, similarity, similarity, 1, max_observations)
    return episode_intro(max_observations) + shown
