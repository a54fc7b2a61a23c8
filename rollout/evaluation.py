"""Evaluate a policy on a harness over many seeded episodes: a registered or trained policy (expert, rllib, ...)
played here, or a language model played through engines and rollout workers (the training agent loop).

Episode i uses seed `seed + i` for both the harness and the policy, so a report is reproducible and two
policies evaluated with the same seed face the same episodes. `terrarium eval` prints this report.

A language model's steps are its replies: a reply that is not a valid action (a parse failure, or arguments
the harness refuses) uses up a turn as an observation would, and the episode ends after max_turns replies
(status "truncated", not a success). Its reward is the episode's training reward (format penalties included).

`episode_summary` names the figures of played episodes once, for training steps, `terrarium train`'s
evaluations, `terrarium eval` and the benches: mean_reward, success_rate, mean_steps, and parse_failure_rate,
counted per turn (per model reply).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any

from rollout.harnesses.base import BaseHarness
from rollout.harnesses.experts import Policy
from rollout.harnesses.registry import make_harness, make_policy
from rollout.data.trajectory import Trajectory
from rollout.worker import RolloutCoordinator, evaluation_requests

# Refused actions cost no step, so a policy that repeats one forever would never end its episode.
MAX_CONSECUTIVE_REFUSALS = 10


@dataclass
class EvalReport:
    harness: str
    policy: str
    episodes: int
    seed: int
    success_rate: float
    mean_reward: float
    mean_steps: float
    # status_<s>: fraction of episodes that ended with status s ("aborted": stuck on refused actions);
    # max_steps; mean_steps_success (when any succeeded); refused_per_episode; mean_<k> for each number
    # the harness adds to get_stats().metadata (its own figures).
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Episode:
    status: str
    success: bool
    reward: float
    steps: int
    refused: int
    figures: dict[str, float]


def evaluate(
    harness: str,
    policy: str,
    episodes: int,
    seed: int = 0,
    harness_kwargs: dict[str, Any] | None = None,
    agent: Policy | None = None,
) -> EvalReport:
    """`harness_kwargs` go to the harness constructor, e.g. {"split": "heldout"} for persona. `policy` is a
    registered name or "module:Factory"; or, with `agent` (a trained policy the caller loaded, e.g. the RLlib
    baseline: cluster.evaluation loads "rllib:PATH"), only the report's name for it."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    environment = make_harness(harness, **(harness_kwargs or {}))
    agent = agent or make_policy(harness, policy)

    async def play_all() -> list[_Episode]:
        return [await _play(environment, agent, seed + i) for i in range(episodes)]

    return _report(harness, policy, seed, asyncio.run(play_all()))


def episode_summary(trajectories: list[Trajectory]) -> dict[str, float]:
    """The figures of played episodes under the names every report uses (module doc)."""
    turns = sum(t.num_turns for t in trajectories)
    return {
        "mean_reward": fmean(t.total_reward for t in trajectories),
        "success_rate": fmean(t.status == "completed" for t in trajectories),
        "parse_failure_rate": sum(t.parse_failures for t in trajectories) / max(turns, 1),  # per turn
        "mean_steps": turns / len(trajectories),
        "policy_tokens": float(sum(t.num_policy_tokens for t in trajectories)),
        "error_episodes": float(sum(t.status == "error" for t in trajectories)),
        "timeout_episodes": float(sum(t.status == "timeout" for t in trajectories)),  # rollout.episode_timeout_s
    }


def evaluate_on_engines(
    coordinator: RolloutCoordinator,
    harness: str,
    policy: str,
    episodes: int,
    seed: int = 0,
    harness_kwargs: dict[str, Any] | None = None,
    run_id: str = "eval",
    label: str | None = None,
) -> EvalReport:
    """The language model behind `coordinator`'s engines, one episode per seed through the rollout workers
    (the agent loop training uses); `policy` only names it in the report. `run_id` and `label` (default: the
    seed) name the episodes, and so their sampling seeds. Adds episode_summary's parse_failure_rate,
    policy_tokens and error_episodes."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    seeds = [seed + i for i in range(episodes)]
    requests = evaluation_requests(run_id, label or str(seed), harness, seeds, harness_kwargs or {})
    trajectories = coordinator.run(requests)
    report = _report(harness, policy, seed, [_from_trajectory(t) for t in trajectories])
    summary = episode_summary(trajectories)
    report.metrics.update({key: summary[key] for key in ("parse_failure_rate", "policy_tokens", "error_episodes")})
    return report


def _from_trajectory(trajectory: Trajectory) -> _Episode:
    """Refused = replies that did not step the harness (parse failures and refused arguments)."""
    harness_steps = trajectory.metadata.get("harness_steps", 0)  # absent when the harness failed to reset
    return _Episode(
        status=trajectory.status,
        success=trajectory.status == "completed",
        reward=trajectory.total_reward,
        steps=trajectory.num_turns,
        refused=trajectory.num_turns - harness_steps,
        figures=trajectory.metadata.get("figures", {}),
    )


def _report(harness: str, policy: str, seed: int, played: list[_Episode]) -> EvalReport:
    episodes = len(played)
    successes = [e for e in played if e.success]
    statuses = Counter(e.status for e in played)
    metrics: dict[str, float] = {f"status_{s}": n / episodes for s, n in sorted(statuses.items())}
    metrics["max_steps"] = max(e.steps for e in played)
    if successes:
        metrics["mean_steps_success"] = fmean(e.steps for e in successes)
    metrics["refused_per_episode"] = fmean(e.refused for e in played)
    for key in sorted({k for e in played for k in e.figures}):
        metrics[f"mean_{key}"] = fmean(e.figures[key] for e in played if key in e.figures)
    return EvalReport(
        harness=harness,
        policy=policy,
        episodes=episodes,
        seed=seed,
        success_rate=len(successes) / episodes,
        mean_reward=fmean(e.reward for e in played),
        mean_steps=fmean(e.steps for e in played),
        metrics=metrics,
    )


async def _play(harness: BaseHarness, policy: Policy, seed: int) -> _Episode:
    policy.reset(seed)
    observation = await harness.reset(seed)
    refused = consecutive_refusals = 0
    while not harness.is_done() and consecutive_refusals < MAX_CONSECUTIVE_REFUSALS:
        action = policy.act(observation)
        result = await harness.step(action.name, **action.arguments)
        observation = result.observation
        consecutive_refusals = 0 if result.step_used else consecutive_refusals + 1
        refused += not result.step_used
    stats = harness.get_stats()
    return _Episode(
        status=stats.metadata["status"] if harness.is_done() else "aborted",
        success=stats.success,
        reward=stats.total_reward,
        steps=stats.total_steps,
        refused=refused,
        figures=stats.figures(),
    )
