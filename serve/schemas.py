"""The service's request and response bodies.

/predict-delta and /train take RustyWorm's serde shapes exactly (rollout.harnesses.persona.models) and answer
with the fields its client reads; the extra `policy_version` it ignores (serde skips unknown fields). The
OpenAI routes take vLLM's own request models (serve.llm_server). /train bounds what the learner would
otherwise choke on: a trajectory id is 1-128 characters (RustyWorm sends a UUID) and a reward lies in [-1, 1],
the range RustyWorm clamps its shaped step reward to; anything else is a 422 naming the field, never an
overflow deeper in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, EvolutionTrajectory, PersonalityDelta


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictDeltaRequest(_Body):
    profile: AiProfile
    observation: BehaviorObservation


class PredictDeltaResponse(_Body):
    delta: PersonalityDelta
    confidence: float
    reasoning: str
    policy_version: int | None = Field(None, description="the engine weights that wrote it; null: the expert did")


MAX_ID_CHARS = 128
REWARD_BOUND = 1.0  # RustyWorm clamps a step's reward to [-1, 1] (evolution.rs)


class TrainTrajectory(EvolutionTrajectory):
    """An EvolutionTrajectory as /train accepts it: the id names it in the store, the reward is bounded."""

    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    reward: float = Field(ge=-REWARD_BOUND, le=REWARD_BOUND)


class TrainRequest(_Body):
    trajectories: list[TrainTrajectory] = Field(min_length=1)
    # serde_json writes a NaN weight as null: accepted here, and dropped like any other unusable weight.
    importance_weights: list[float | None]
    loss_type: Literal["MINIRL", "GRPO"]

    @field_validator("importance_weights")
    @classmethod
    def _one_weight_per_trajectory(cls, weights: list[float | None], info: ValidationInfo) -> list[float | None]:
        trajectories = info.data.get("trajectories")
        if trajectories is not None and len(weights) != len(trajectories):
            raise ValueError(
                f"has {len(weights)} entries but trajectories has {len(trajectories)}; give one weight per trajectory"
            )
        return weights


class TrainResponse(_Body):
    loss: float
    training_time_ms: int
    num_trajectories_used: int
    loss_type: str
    policy_version: int | None = Field(None, description="the engine's version after the update")


class VersionResponse(_Body):
    policy_kind: str
    policy_version: int | None = Field(None, description="the engine's weights; null for the expert")
    model_path: str | None
    checkpoint: str | None = Field(None, description="the published checkpoint; null: the base model")
    checkpoint_step: int | None = Field(None, description="its learner optimizer step, when it is a checkpoint")
    answers: int = Field(0, description="/predict-delta answers of the replica that answered")
    fallbacks: int = Field(0, description="of them, fallbacks to the persona expert (reasoning says 'Fallback')")
    fallback_rate: float = Field(0.0, description="fallbacks / answers; 0 before the first answer")
