"""Group-relative advantages: every episode is judged against the other episodes of its group.

A group is G episodes played from the same harness seed, so the group mean is a baseline with no critic.
- "grpo": (r - mean) / (std + eps), std the sample std (ddof=1, as verl and OpenRLHF compute it).
  `normalize_by_std=False` gives Dr.GRPO's r - mean (std division favours easy or hopeless groups).
- "loo": leave-one-out, r_i minus the mean of the other rewards of the group (AgentCPM, RLOO); no std.
A group whose rewards span (max - min) less than `min_spread` carries no learning signal; it is dropped
(keep False) unless `drop_low_spread` is False. A group of one episode has no baseline: its advantage is 0.
- `weighted_advantages`: one group with importance weights (the served /train update), a weighted grpo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AdvantageConfig(BaseModel):
    """The `learner.advantage` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    estimator: Literal["grpo", "loo"] = "grpo"
    normalize_by_std: bool = Field(True, description="grpo only; false is Dr.GRPO")
    eps: float = Field(1e-6, ge=0)
    min_spread: float = Field(1e-6, ge=0, description='groups whose reward span is below this are "flat"')
    drop_low_spread: bool = True


@dataclass
class GroupAdvantages:
    advantages: np.ndarray  # [n] float64, 0.0 for dropped episodes
    keep: np.ndarray  # [n] bool, False for episodes of dropped groups
    num_groups: int
    num_dropped_groups: int


def group_advantages(
    rewards: Sequence[float], group_ids: Sequence[str], config: AdvantageConfig = AdvantageConfig()
) -> GroupAdvantages:
    if len(rewards) != len(group_ids):
        raise ValueError(f"got {len(rewards)} rewards but {len(group_ids)} group ids")
    if not all(math.isfinite(float(r)) for r in rewards):
        raise ValueError("rewards must be finite numbers")
    rewards_array = np.asarray(rewards, dtype=np.float64)
    advantages = np.zeros(len(rewards_array))
    keep = np.ones(len(rewards_array), dtype=bool)

    members: dict[str, list[int]] = {}
    for index, group_id in enumerate(group_ids):
        members.setdefault(group_id, []).append(index)

    num_dropped = 0
    for indices in members.values():
        group = rewards_array[indices]
        if group.max() - group.min() < config.min_spread and config.drop_low_spread:
            keep[indices] = False
            num_dropped += 1
            continue
        n = len(group)
        if n == 1:
            continue
        if config.estimator == "grpo":
            centred = group - group.mean()
            advantages[indices] = centred / (group.std(ddof=1) + config.eps) if config.normalize_by_std else centred
        else:
            mean_of_others = (group.sum() - group) / (n - 1)
            advantages[indices] = group - mean_of_others
    return GroupAdvantages(advantages, keep, len(members), num_dropped)


def weighted_advantages(rewards: Sequence[float], weights: Sequence[float], eps: float = 1e-6) -> list[float] | None:
    """One weighted group (the /train request): (r - weighted mean) / (weighted std + eps), so the weighted
    advantages sum to zero; None when the rewards do not vary (no learning signal). Weights must be > 0."""
    total = sum(weights)
    mean = sum(w * r for w, r in zip(weights, rewards)) / total
    std = math.sqrt(sum(w * (r - mean) ** 2 for w, r in zip(weights, rewards)) / total)
    if std < eps:
        return None
    return [(r - mean) / (std + eps) for r in rewards]
