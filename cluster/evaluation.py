"""`terrarium eval` and the persona table: any policy spec, a language model ("llm:PATH") included.

"llm:PATH" (a model directory, a training checkpoint, or a run directory: its newest checkpoint) starts Ray,
the config's engines and rollout workers on those weights and plays the episodes through the agent loop that
training uses (rollout.evaluation.evaluate_on_engines), with the config's sampling and agent limits. Every
other spec is played here by rollout.evaluation.evaluate. Both face the same seeds, so their reports compare.
"""

from __future__ import annotations

from typing import Any

import ray

from cluster.config import TerrariumConfig
from cluster.placement import connect_ray
from learner.online_trainer import resolve_model_dir
from rollout.engine import start_engines
from rollout.evaluation import EvalReport, evaluate, evaluate_on_engines
from rollout.worker import RolloutCoordinator

LLM_POLICY = "llm"


def evaluate_policy(
    harness: str,
    policy: str,
    episodes: int,
    seed: int = 0,
    harness_kwargs: dict[str, Any] | None = None,
    config: TerrariumConfig | None = None,
) -> EvalReport:
    """`config` (default: the defaults) gives an llm policy its engine, sampling and rollout settings; the
    harness and its kwargs are the arguments', not the config's rollout.harness."""
    kind, _, path = policy.partition(":")
    if kind != LLM_POLICY:
        return evaluate(harness, policy, episodes, seed=seed, harness_kwargs=harness_kwargs)
    if not path:
        raise ValueError(f"policy {policy!r}: name the weights, e.g. llm:runs/persona (its newest checkpoint)")
    config = config or TerrariumConfig()
    model_dir = str(resolve_model_dir(path))
    connect_ray(config.engine.num_engines * config.engine.num_cpus + config.rollout.num_workers)
    engines = start_engines(model_dir, config.engine)
    coordinator = RolloutCoordinator(model_dir, engines, config.sampling, config.rollout)
    try:
        return evaluate_on_engines(coordinator, harness, policy, episodes, seed, harness_kwargs)
    finally:
        coordinator.shutdown()
        ray.get([engine.shutdown.remote() for engine in engines])
        for engine in engines:
            ray.kill(engine)
