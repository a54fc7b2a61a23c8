"""Persona harness baselines on held-out personas: RustyWorm's refine_profile heuristic vs PersonaExpert.

Prints, per policy: converged rate (convergence >= 0.90 within max_observations), the rate converged within
4 observations (the product goal: >= 90%), mean observations to converge (over converged episodes), mean
final convergence and mean episode reward. Held-out persona i is played with seed i, so both policies face
the same personas and the same responses until their profiles differ. Seeds 0..5 are RustyWorm's built-in
profiles, shown separately too.

    python bench/persona_baselines.py [--personas 300] [--max-observations 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from statistics import fmean

from rollout.harnesses.base import HarnessStatus
from rollout.harnesses.experts import Policy
from rollout.harnesses.persona import PersonaHarness
from rollout.persona.estimator import PersonaExpert, RustyWormHeuristic
from rollout.persona.profiles import BUILTIN_IDS

GOAL_OBSERVATIONS = 4


@dataclass
class Episode:
    converged: bool
    observations: int
    convergence: float
    reward: float


async def play(harness: PersonaHarness, policy: Policy, seed: int) -> Episode:
    policy.reset(seed)
    observation = await harness.reset(seed)
    while not harness.is_done():
        action = policy.act(observation)
        result = await harness.step(action.name, **action.arguments)
        if not result.step_used:
            raise RuntimeError(f"seed {seed}: the policy's action was refused: {result.error}")
        observation = result.observation
    return Episode(harness.status == HarnessStatus.COMPLETED, harness.current_step, harness.convergence, harness.episode_reward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=300)
    parser.add_argument("--max-observations", type=int, default=10)
    args = parser.parse_args()
    policies: dict[str, Policy] = {"rustyworm_heuristic": RustyWormHeuristic(), "persona_expert": PersonaExpert()}

    print(f"{args.personas} held-out personas (seeds 0..{args.personas - 1}), max {args.max_observations} observations")
    header = f"{'policy':<20} {'converged':>9} {'conv<=4obs':>10} {'obs_to_conv':>11} {'final_conv':>10} {'reward':>7} {'s/episode':>9}"
    print(header)
    print("-" * len(header))
    builtins: dict[str, list[Episode]] = {}
    for name, policy in policies.items():
        harness = PersonaHarness(split="heldout", max_observations=args.max_observations)
        started = time.perf_counter()
        episodes = asyncio.run(_play_all(harness, policy, args.personas))
        seconds = (time.perf_counter() - started) / args.personas
        converged = [e for e in episodes if e.converged]
        within_goal = sum(e.observations <= GOAL_OBSERVATIONS for e in converged) / len(episodes)
        to_converge = f"{fmean(e.observations for e in converged):.2f}" if converged else "-"
        print(
            f"{name:<20} {len(converged) / len(episodes):>9.1%} {within_goal:>10.1%} {to_converge:>11} "
            f"{fmean(e.convergence for e in episodes):>10.3f} {fmean(e.reward for e in episodes):>7.3f} {seconds:>9.4f}"
        )
        builtins[name] = episodes[: len(BUILTIN_IDS)]

    print("\nbuilt-in profiles (status, observations used, final convergence):")
    for index, persona in enumerate(BUILTIN_IDS[: args.personas]):
        cells = [
            f"{name}: {'converged' if e.converged else 'failed':>9} {e.observations:>2} {e.convergence:.3f}"
            for name, e in ((name, episodes[index]) for name, episodes in builtins.items())
        ]
        print(f"  {persona:<10} " + " | ".join(cells))


async def _play_all(harness: PersonaHarness, policy: Policy, personas: int) -> list[Episode]:
    return [await play(harness, policy, seed) for seed in range(personas)]


if __name__ == "__main__":
    main()
