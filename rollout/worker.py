"""Rollout worker actors and the coordinator that spreads episode groups over them.

A worker runs many episodes at once (asyncio), so each engine sees a full continuous batch. Workers are
restartable Ray actors whose calls Ray retries: if a worker dies mid-batch, Ray restarts it and replays the
call, and the replayed episodes keep their episode ids (and their sampling seeds), so the store never holds
a trajectory twice and none is lost.
"""

from __future__ import annotations

import asyncio
import time
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
        # Shared by every call in flight (the coordinator sends one call per group).
        self.limit = asyncio.Semaphore(config.max_concurrent_episodes)
        self.in_flight = 0  # episodes playing now
        self.busy_since = 0.0
        self.busy_s = 0.0  # total time with at least one episode playing

    async def run(self, requests: list[EpisodeRequest]) -> list[Trajectory]:
        async def one(request: EpisodeRequest) -> Trajectory:
            # The same engine for every turn of an episode: its prefix cache holds the conversation so far.
            engine = self.engines[zlib.crc32(request.episode_id.encode()) % len(self.engines)]
            async with self.limit:
                self._busy(+1)
                try:
                    trajectory = await play_episode(
                        request, engine, self.renderer, self.sampling, self.config.agent, self.config.episode_timeout_s
                    )
                finally:
                    self._busy(-1)
            self.finished += 1
            self.timed_out += trajectory.status == "timeout"
            return trajectory

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def _busy(self, change: int) -> None:
        if self.in_flight == 0:
            self.busy_since = time.perf_counter()
        self.in_flight += change
        if self.in_flight == 0:
            self.busy_s += time.perf_counter() - self.busy_since

    def busy_seconds(self) -> float:
        """Seconds so far with at least one episode playing: what the driver's engine idle fraction reads."""
        now = time.perf_counter()
        return self.busy_s + (now - self.busy_since if self.in_flight else 0.0)

    def episodes_finished(self) -> int:
        return self.finished

    def episodes_timed_out(self) -> int:
        return self.timed_out


def group_requests(run_id: str, step: int, seeds: list[int], config: RolloutConfig) -> list[EpisodeRequest]:
    """B seeds x G episodes: every episode of a group plays the same harness seed. The seed is in the episode
    id, and so in its sampling seeds: runs with other harness seeds sample differently even on a harness
    whose episodes do not depend on the seed (text_adventure's fixed map)."""
    return [
        EpisodeRequest(
            episode_id=f"{run_id}/step{step}/group{g}/seed{seed}/ep{k}",
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
    """Owns the worker actors. `submit` starts episodes without waiting, one call per group (a group is the
    unit the learner trains on), dealt round-robin over the workers: group i of a submission goes to worker
    i % num_workers. `collect` waits for some of those calls, with a deadline; `run` is the two in a row."""

    def __init__(self, model_path: str, engines: list[Any], sampling: SamplingConfig, config: RolloutConfig) -> None:
        self.config = config
        actor = ray.remote(num_cpus=1, max_restarts=config.max_worker_restarts, max_task_retries=config.max_worker_restarts)(
            RolloutWorker
        )
        self.workers = [actor.remote(model_path, engines, sampling, config) for _ in range(config.num_workers)]

    def submit(self, requests: list[EpisodeRequest]) -> dict[str, ray.ObjectRef]:
        """Start the episodes; returns the call playing each group, by group id."""
        groups: dict[str, list[EpisodeRequest]] = {}
        for request in requests:
            groups.setdefault(request.group_id, []).append(request)
        return {
            group_id: self.workers[i % len(self.workers)].run.remote(group)
            for i, (group_id, group) in enumerate(groups.items())
        }

    def collect(
        self, calls: dict[str, ray.ObjectRef], num_groups: int, timeout_s: float
    ) -> dict[str, list[Trajectory]]:
        """Wait until at least `num_groups` of `calls` are done (every one that is done is returned, by group
        id); TimeoutError after `timeout_s` seconds."""
        refs = list(calls.values())
        if not refs:
            return {}
        if num_groups > 0:
            ready, _ = ray.wait(refs, num_returns=min(num_groups, len(refs)), timeout=timeout_s)
            if len(ready) < num_groups:
                raise TimeoutError(f"{len(ready)} of {num_groups} rollout groups were done after {timeout_s:.0f} s")
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)  # every one that is done
        done = set(ready)
        return {group_id: ray.get(ref, timeout=timeout_s) for group_id, ref in calls.items() if ref in done}

    def run(self, requests: list[EpisodeRequest], timeout_s: float = 3600.0) -> list[Trajectory]:
        """Play the episodes and return them in the order of `requests`."""
        calls = self.submit(requests)
        by_id = {t.episode_id: t for group in self.collect(calls, len(calls), timeout_s).values() for t in group}
        return [by_id[r.episode_id] for r in requests]

    def cancel(self, calls: dict[str, ray.ObjectRef]) -> None:
        """Stop groups nobody will train on (the run ended); their episodes end where they are."""
        for ref in calls.values():
            ray.cancel(ref)

    def busy_seconds(self, timeout_s: float = 60.0) -> float:
        """The busiest worker's seconds with an episode playing (approximates the engines' busy time)."""
        return max(ray.get([worker.busy_seconds.remote() for worker in self.workers], timeout=timeout_s))

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
