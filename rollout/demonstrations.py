"""Expert demonstrations as token-level trajectories, for the SFT warm start of a model that cannot act yet.

The expert plays the harness; its actions are written in the canonical tool-call form and laid out on token
ids exactly as the agent loop lays out a model's turns (chat template prompt, reply + end-of-turn with loss
mask 1, observation ids with mask 0), so SFT teaches the very format the rollouts parse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rollout.chat import ChatRenderer, system_prompt
from rollout.harnesses.registry import make_harness, make_policy
from rollout.harnesses.tools import format_action
from rollout.data.trajectory import Trajectory


async def _demonstration(
    renderer: ChatRenderer, harness_spec: str, harness_kwargs: dict[str, Any], seed: int, run_id: str, policy: str
) -> Trajectory:
    harness = make_harness(harness_spec, **harness_kwargs)
    expert = make_policy(harness_spec, policy)
    expert.reset(seed)
    observation = await harness.reset(seed)
    token_ids = renderer.first_prompt(system_prompt(harness, harness.get_action_space()), str(observation.content))
    prompt_length = len(token_ids)
    loss_mask = [0] * prompt_length
    rewards: list[float] = []
    while not harness.is_done():
        action = expert.act(observation)
        reply = renderer.tokenizer.encode(format_action(action), add_special_tokens=False) + [renderer.end_of_turn_id]
        token_ids += reply
        loss_mask += [1] * len(reply)
        result = await harness.step(action.name, **action.arguments)
        observation = result.observation
        rewards.append(result.reward)
        if not harness.is_done():
            feedback = renderer.observation_ids(str(observation.content))
            token_ids += feedback
            loss_mask += [0] * len(feedback)
    return Trajectory.from_episode(
        episode_id=f"{run_id}/demo/{harness_spec}/{seed}",
        run_id=run_id,
        step=-1,
        group_id=f"demo/{seed}",
        harness=harness_spec,
        seed=seed,
        policy_version=-1,
        token_ids=token_ids,
        loss_mask=loss_mask,
        prompt_length=prompt_length,
        turn_rewards=rewards,
        status=harness.status.value,
    )


def expert_demonstrations(
    renderer: ChatRenderer,
    harness_spec: str,
    seeds: list[int],
    run_id: str,
    harness_kwargs: dict[str, Any] | None = None,
    policy: str = "expert",
) -> list[Trajectory]:
    """`policy`: the demonstrator, a policy registered for the harness (rollout.harnesses.registry) or
    "module:Factory"; a weaker one than the expert leaves GRPO something to improve."""

    async def all_demos() -> list[Trajectory]:
        return [await _demonstration(renderer, harness_spec, harness_kwargs or {}, s, run_id, policy) for s in seeds]

    return asyncio.run(all_demos())
