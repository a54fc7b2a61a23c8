"""One multi-turn episode on token ids: prompt -> engine -> parse action -> harness.step -> observation ids.

The token sequence grows by appending exactly what the engine generated (loss mask 1, with its logprobs) and
the tokenized observation (mask 0); nothing is ever decoded and re-encoded. A reply that does not parse as an
action costs `format_penalty`, is counted, and the agent is told what was wrong; the harness is not stepped.
A finished trajectory's metadata holds the harness's own figures ("harness_steps", "figures": its
get_stats()), so an evaluation reads, e.g., the persona convergence from the very episodes it trained on.
An episode that runs past its time limit (a hung engine or harness) ends with status "timeout", keeping the
turns it finished.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rollout.chat import ChatRenderer, system_prompt
from rollout.engine import SamplingConfig
from rollout.harnesses.base import BaseHarness
from rollout.harnesses.registry import make_harness
from rollout.harnesses.tools import ActionParseError, parse_action, tool_call_grammar
from rollout.data.trajectory import Trajectory


class AgentLoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(12, ge=1, description="model replies per episode")
    max_episode_tokens: int = Field(1536, ge=64, description="prompt + all turns; must fit the engine's max_model_len")
    format_penalty: float = Field(-1.0, le=0, description="reward for a reply that is not a valid action")
    constrain_actions: bool = Field(
        False,
        description="sample every reply under the grammar of one tool call of the harness's actions (vLLM "
        "structured outputs): replies always parse, unless max_tokens cuts one off; the recorded logprobs are the "
        "masked sampling distribution's, which the learner's truncated importance weights correct for",
    )


@dataclass
class EpisodeRequest:
    episode_id: str
    run_id: str
    step: int
    group_id: str
    harness: str
    seed: int
    harness_kwargs: dict[str, Any] = field(default_factory=dict)


def sampling_seed(episode_id: str, turn: int) -> int:
    """Stable per (episode, turn): a replayed episode samples the same tokens from the same weights."""
    return zlib.crc32(f"{episode_id}:{turn}".encode())


@dataclass
class _Episode:
    """What an episode accumulates turn by turn, turned into a Trajectory at the end."""

    request: EpisodeRequest
    started: float = field(default_factory=time.perf_counter)
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0
    turn_rewards: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    parse_failures: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "harness": 0.0})
    metadata: dict[str, Any] = field(default_factory=dict)

    def append(self, ids: list[int], policy: bool, logprobs: list[float] | None = None) -> None:
        self.token_ids += ids
        self.loss_mask += [int(policy)] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)

    def finish(self, status: str, harness: BaseHarness | None = None) -> Trajectory:
        """`harness`: the episode's harness, whose stats go into the metadata (None: reset failed)."""
        request = self.request
        self.timings["total"] = time.perf_counter() - self.started
        if harness is not None:
            stats = harness.get_stats()
            self.metadata.update(harness_steps=stats.total_steps, figures=stats.figures())
        return Trajectory.from_episode(
            episode_id=request.episode_id,
            run_id=request.run_id,
            step=request.step,
            group_id=request.group_id,
            harness=request.harness,
            seed=request.seed,
            policy_version=min(self.versions, default=-1),  # the oldest weights that contributed
            token_ids=self.token_ids,
            loss_mask=self.loss_mask,
            logprobs=self.logprobs,
            prompt_length=self.prompt_length,
            turn_rewards=self.turn_rewards,
            status=status,
            parse_failures=self.parse_failures,
            timings=self.timings,
            metadata={"policy_versions": self.versions, **self.metadata},
        )


async def play_episode(
    request: EpisodeRequest,
    engine: Any,  # an InferenceEngine actor handle
    renderer: ChatRenderer,
    sampling: SamplingConfig,
    config: AgentLoopConfig,
    timeout_s: float | None = None,
) -> Trajectory:
    """One episode; after `timeout_s` seconds (None: no limit) it ends with status "timeout"."""
    episode = _Episode(request)
    harness = make_harness(request.harness, **request.harness_kwargs)
    try:
        async with asyncio.timeout(timeout_s):
            return await _play(episode, harness, engine, renderer, sampling, config)
    except TimeoutError:
        episode.metadata["timeout_s"] = timeout_s
        return episode.finish("timeout", harness)


async def _play(
    episode: _Episode,
    harness: BaseHarness,
    engine: Any,
    renderer: ChatRenderer,
    sampling: SamplingConfig,
    config: AgentLoopConfig,
) -> Trajectory:
    request = episode.request
    try:
        observation = await harness.reset(request.seed)
    except Exception as exc:  # a broken harness ends this episode only
        episode.metadata["error"] = repr(exc)
        return episode.finish("error")
    episode.timings["harness"] += time.perf_counter() - episode.started

    prompt = renderer.first_prompt(system_prompt(harness, harness.get_action_space()), str(observation.content))
    episode.append(prompt, policy=False)
    episode.prompt_length = len(prompt)
    end_of_turn = renderer.end_of_turn_id

    for turn in range(config.max_turns):
        if len(episode.token_ids) + sampling.max_tokens > config.max_episode_tokens:
            break
        t0 = time.perf_counter()
        grammar = tool_call_grammar(harness.get_action_space()) if config.constrain_actions else None
        generation = await engine.generate.remote(
            episode.token_ids, sampling, [end_of_turn], sampling_seed(request.episode_id, turn), grammar
        )
        episode.timings["generate"] += time.perf_counter() - t0
        episode.versions.append(generation.policy_version)
        episode.append(generation.token_ids, policy=True, logprobs=generation.logprobs)
        if not generation.token_ids or generation.token_ids[-1] != end_of_turn:
            episode.append([end_of_turn], policy=False)  # cut at max_tokens: close the turn, not trained on

        reply = renderer.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
        t0 = time.perf_counter()
        try:
            action = parse_action(reply, harness.get_action_space())
        except ActionParseError as exc:
            episode.parse_failures += 1
            reward, feedback = config.format_penalty, f"Error: {exc}"
        else:
            result = await harness.step(action.name, **action.arguments)
            reward, feedback = result.reward, str(result.observation.content)
        episode.timings["harness"] += time.perf_counter() - t0
        episode.turn_rewards.append(reward)
        if harness.is_done():
            return episode.finish(harness.status.value, harness)
        if turn + 1 < config.max_turns:  # the last reply gets no observation: nothing would read it
            episode.append(renderer.observation_ids(feedback), policy=False)
    return episode.finish("truncated", harness)
