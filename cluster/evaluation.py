"""`terrarium eval` and the persona table: any policy spec, a language model ("llm:PATH") included.

"llm:PATH" (a model directory, a training checkpoint, or a run directory: its newest checkpoint) starts Ray,
the config's engines and rollout workers on those weights (a LoRA checkpoint: engines on the base its adapters
name, then given the merged weights) and plays the episodes through the agent loop that
training uses (rollout.evaluation.evaluate_on_engines), with the config's sampling and agent limits.
"KIND:PATH" loads a trained policy (CHECKPOINT_POLICIES, e.g. the RLlib baseline); it and every other spec
are played here by rollout.evaluation.evaluate. All face the same seeds, so their reports compare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from cluster.config import TerrariumConfig
from cluster.placement import connect_ray
from learner.lora import adapter_base_dir, load_policy_model, policy_state_dict
from learner.rllib_baseline import RLlibDeltaPolicy
from learner.weight_sync import sync_through_object_store
from rollout.engine import start_engines
from rollout.models.checkpoints import resolve_model_dir
from rollout.evaluation import EvalReport, evaluate, evaluate_on_engines
from rollout.harnesses.experts import Policy
from rollout.worker import RolloutCoordinator

LLM_POLICY = "llm"
# Trained policies loaded from a path: "KIND:PATH" -> the loader called with PATH. Here, above learner/, so
# rollout and serve get the loaded policy object and import nothing of the packages that train them.
CHECKPOINT_POLICIES: dict[str, Callable[[str], Policy]] = {"rllib": RLlibDeltaPolicy.load}


def load_checkpoint_policy(policy: str) -> Policy | None:
    """The trained policy a "KIND:PATH" spec names (e.g. "rllib:runs/persona-baseline/checkpoint"), or None when
    `policy` is not of that form. `terrarium serve` loads policy rllib through it too."""
    kind, _, path = policy.partition(":")
    if kind not in CHECKPOINT_POLICIES:
        return None
    if not path:
        raise ValueError(f"policy {policy!r}: name the checkpoint, e.g. {kind}:runs/persona-baseline/checkpoint")
    return CHECKPOINT_POLICIES[kind](path)


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
        agent = load_checkpoint_policy(policy)
        return evaluate(harness, policy, episodes, seed=seed, harness_kwargs=harness_kwargs, agent=agent)
    if not path:
        raise ValueError(f"policy {policy!r}: name the weights, e.g. llm:runs/persona (its newest checkpoint)")
    config = config or TerrariumConfig()
    model_dir = resolve_model_dir(path)
    base_dir = adapter_base_dir(model_dir)
    connect_ray(config.engine.num_engines * config.engine.num_cpus + config.rollout.num_workers)
    engines = start_engines(str(base_dir or model_dir), config.engine)
    try:
        if base_dir is not None:
            merged = policy_state_dict(load_policy_model(model_dir))
            sync_through_object_store(merged, engines, 1, config.engine.weight_sync_timeout_s)
        coordinator = RolloutCoordinator(str(model_dir), engines, config.sampling, config.rollout)
        try:
            return evaluate_on_engines(coordinator, harness, policy, episodes, seed, harness_kwargs)
        finally:
            coordinator.shutdown()
    finally:
        ray.get([engine.shutdown.remote() for engine in engines])
        for engine in engines:
            ray.kill(engine)
