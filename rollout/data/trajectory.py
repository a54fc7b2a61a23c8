"""The record of one finished episode: what the learner trains on and the store keeps.

Token ids are kept exactly as the engine generated them and as the observations were tokenized; text is
never re-encoded, so the learner scores the very tokens the engine sampled (no retokenization drift).
`loss_mask` is 1 only on tokens the policy generated; `logprobs` holds the engine's logprob of each token
(0.0 where the mask is 0), aligned with `token_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Trajectory:
    episode_id: str  # unique per (run, step, group, index): a replayed episode keeps its id, so no duplicates
    run_id: str
    step: int  # the training step whose rollouts produced it
    group_id: str  # episodes of one group share the harness seed; GRPO normalises within a group
    harness: str
    seed: int
    policy_version: int
    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    prompt_length: int  # tokens of the first rendered prompt (mask 0)
    turn_rewards: list[float]
    total_reward: float
    status: str  # the harness status at the end: completed, failed, timeout, error, or truncated
    num_turns: int
    parse_failures: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds: generate, harness, total
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"trajectory {self.episode_id}: token_ids ({n}), loss_mask ({len(self.loss_mask)}) and "
                f"logprobs ({len(self.logprobs)}) must have the same length"
            )

    @classmethod
    def from_episode(
        cls,
        *,
        episode_id: str,
        run_id: str,
        step: int,
        group_id: str,
        harness: str,
        seed: int,
        policy_version: int,
        token_ids: list[int],
        loss_mask: list[int],
        prompt_length: int,
        turn_rewards: list[float],
        status: str,
        logprobs: list[float] | None = None,
        parse_failures: int = 0,
        timings: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Trajectory:
        """The one way an episode becomes a record (agent loop, expert demonstrations, served /train): the
        totals are derived from the turn rewards, and tokens nobody sampled (logprobs None) get logprob 0."""
        return cls(
            episode_id=episode_id,
            run_id=run_id,
            step=step,
            group_id=group_id,
            harness=harness,
            seed=seed,
            policy_version=policy_version,
            token_ids=token_ids,
            loss_mask=loss_mask,
            logprobs=[0.0] * len(token_ids) if logprobs is None else logprobs,
            prompt_length=prompt_length,
            turn_rewards=turn_rewards,
            total_reward=sum(turn_rewards),
            status=status,
            num_turns=len(turn_rewards),
            parse_failures=parse_failures,
            timings=timings if timings is not None else {},
            metadata=metadata if metadata is not None else {},
        )

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)

    def to_dict(self) -> dict[str, Any]:
        """Shallow: the token lists are shared, not deep-copied (dataclasses.asdict copies every element)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        return cls(**data)
