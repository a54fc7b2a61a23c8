"""The text the tiny model's tokenizer is trained on: what the built-in harnesses actually show and what their
experts answer, so that harness words, numbers and tool-call syntax become short token sequences."""

from __future__ import annotations

import asyncio

from rollout.chat import system_prompt
from rollout.harnesses.registry import BUILTIN_HARNESSES, make_expert, make_harness
from rollout.harnesses.tools import format_action

EPISODES_PER_HARNESS = 64


async def _expert_transcript(name: str, seed: int) -> list[str]:
    harness = make_harness(name)
    expert = make_expert(name)
    expert.reset()
    observation = await harness.reset(seed)
    lines = [system_prompt(harness, harness.get_action_space()), str(observation.content)]
    while not harness.is_done():
        action = expert.act(observation)
        lines.append(format_action(action))
        observation = (await harness.step(action.name, **action.arguments)).observation
        lines.append(str(observation.content))
    return lines


def harness_corpus(episodes_per_harness: int = EPISODES_PER_HARNESS) -> list[str]:
    """Deterministic: fixed seeds, so the same code gives the same tokenizer."""

    async def collect() -> list[str]:
        lines: list[str] = []
        for name in sorted(BUILTIN_HARNESSES):
            for seed in range(episodes_per_harness):
                lines += await _expert_transcript(name, seed)
        return lines

    return asyncio.run(collect())
