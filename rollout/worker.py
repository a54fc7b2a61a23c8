"""Rollout worker actors and the coordinator that spreads episode groups over them.

A worker runs many episodes at once (asyncio), so each engine sees a full continuous batch. Workers are
restartable Ray actors whose calls Ray retries: if a worker dies mid-batch, Ray restarts it and replays the
call, and the replayed episodes keep their episode ids (and their sampling seeds), so the store never holds
a trajectory twice and none is lost.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoTokenizer

from rollout.agent_loop import AgentLoopConfig, EpisodeRequest, play_episode
from rollout.chat import ChatRenderer
from rollout.engine import SamplingConfig
from rollout.data.trajectory import Trajectory


class RolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    harness: str = "number_guess"  # a built-in name or "module:Class"
    harness_kwargs: dict[str, Any] = {}
    num_workers: int = Field(1, ge=1)
    max_concurrent_episodes: int = Field(64, ge=1, description="episodes in flight per worker")
    groups_per_step: int = Field(8, ge=1, description="B: harness seeds per training step")
    group_size: int = Field(8, ge=1, description="G: episodes per seed (a GRPO group)")
    max_worker_restarts: int = Field(3, ge=0)
    episode_timeout_s: float | None = Field(
        600.0, gt=0, description='an episode running longer ends with status "timeout" (null: no limit)'
    )
    agent: AgentLoopConfig = AgentLoopConfig()


class RolloutWorker:
    """A plain class; RolloutCoordinator makes it a restartable async Ray actor."""

    def __init__(self, model_path: str, engines: list[Any], sampling: SamplingConfig, config: RolloutConfig) -> None:
        self.engines = engines
        self.sampling = sampling
        self.config = config
        self.renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
        self.finished = 0
        self.timed_out = 0

    async def run(self, requests: list[EpisodeRequest]) -> list[Trajectory]:
        limit = asyncio.Semaphore(self.config.max_concurrent_episodes)

        async def one(request: EpisodeRequest) -> Trajectory:
            # The same engine for every turn of an episode: its prefix cache holds the conversation so far.
            engine = self.engines[zlib.crc32(request.episode_id.encode()) % len(self.engines)]
            async with limit:
                trajectory = await play_episode(
                    request, engine, self.renderer, self.sampling, self.config.agent, self.config.episode_timeout_s
                )
            self.finished += 1
            self.timed_out += trajectory.status == "timeout"
            return trajectory

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def episodes_finished(self) -> int:
        return self.finished

    def episodes_timed_out(self) -> int:
        return self.timed_out


def group_requests(run_id: str, step: int, seeds: list[int], config: RolloutConfig) -> list[EpisodeRequest]:
    """B seeds x G episodes: every episode of a group plays the same harness seed."""
    return [
        EpisodeRequest(
            episode_id=f"{run_id}/step{step}/group{g}/ep{k}",
            run_id=run_id,
            step=step,
            group_id=f"step{step}/group{g}",
            harness=config.harness,
            seed=seed,
            harness_kwargs=config.harness_kwargs,
        )
        for g, seed in enumerate(seeds)
        for k in range(config.group_size)
    ]


def evaluation_requests(
    run_id: str, label: str, harness: str, seeds: list[int], harness_kwargs: dict[str, Any]
) -> list[EpisodeRequest]:
    """One episode per seed, in its own group. Episode ids (and so sampling seeds) depend on the run, the
    label and the episode's index only, so an evaluation repeats exactly for the same weights."""
    return [
        EpisodeRequest(
            episode_id=f"{run_id}/eval-{label}/{i}",
            run_id=run_id,
            step=-1,
            group_id=f"eval-{label}/{i}",
            harness=harness,
            seed=seed,
            harness_kwargs=harness_kwargs,
        )
        for i, seed in enumerate(seeds)
    ]


class RolloutCoordinator:
    """Owns the worker actors; `run` plays a list of episodes over all of them and returns them in order."""

    def __init__(self, model_path: str, engines: list[Any], sampling: SamplingConfig, config: RolloutConfig) -> None:
        self.config = config
        actor = ray.remote(num_cpus=1, max_restarts=config.max_worker_restarts, max_task_retries=config.max_worker_restarts)(
            RolloutWorker
        )
        self.workers = [actor.remote(model_path, engines, sampling, config) for _ in range(config.num_workers)]

    def run(self, requests: list[EpisodeRequest], timeout_s: float | None = None) -> list[Trajectory]:
        """Episodes are dealt round-robin, so every worker gets an equal share of each group."""
        shares = [requests[i :: len(self.workers)] for i in range(len(self.workers))]
        calls = [worker.run.remote(share) for worker, share in zip(self.workers, shares) if share]
        by_id = {t.episode_id: t for batch in ray.get(calls, timeout=timeout_s) for t in batch}
        return [by_id[r.episode_id] for r in requests]

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
