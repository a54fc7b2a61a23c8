"""Placement groups: the resources of every engine and learner rank, reserved up front and all at once.

Reserving before starting anything means a cluster too small for the config fails within a deadline, with a
message that says what was asked for, instead of leaving half the actors waiting forever.

- Engine i gets its own group of tensor_parallel_size bundles of one GPU each (PACK: on one node when they
  fit). Bundle 0 also holds the engine actor's CPUs. The engine actor is scheduled into bundle 0 with
  placement_group_capture_child_tasks=True; vLLM (with tensor_parallel_size > 1 and Ray as its distributed
  executor) reads that group back with ray.util.get_current_placement_group() inside the actor and puts one
  worker in each GPU bundle.
- The learner gets one group of num_learner_ranks bundles, one GPU (and learner.num_cpus CPUs) each; rank r
  runs in bundle r.
- A cluster without GPUs gets CPU-only bundles: one per engine, one per learner rank. An engine's bundle
  holds a CPU per tensor-parallel rank at least (rollout.engine.engine_cpus): on CPU its ranks are processes
  of the engine actor (vLLM's multiprocessing executor), bound to cores derived from what the bundle grants.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from rollout.engine import EngineConfig, engine_cpus

def connect_ray(needed_cpus: float) -> None:
    """The cluster in RAY_ADDRESS, or a local one with at least `needed_cpus` logical CPUs: engines, rollout
    workers, learner ranks and replicas each reserve Ray CPUs, and on a small machine they would otherwise
    wait forever for one another."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed_cpus)))


def engine_bundles(config: EngineConfig, use_gpu: bool) -> list[dict[str, float]]:
    if not use_gpu:
        return [{"CPU": engine_cpus(config, use_gpu=False)}]
    return [{"CPU": config.num_cpus, "GPU": 1.0}] + [{"GPU": 1.0} for _ in range(config.tensor_parallel_size - 1)]


def learner_bundles(num_ranks: int, cpus_per_rank: int, use_gpu: bool) -> list[dict[str, float]]:
    """What LearnerGroup asks for per rank (learner.num_cpus, and a GPU when the cluster has them)."""
    bundle = {"CPU": float(cpus_per_rank), "GPU": 1.0} if use_gpu else {"CPU": float(cpus_per_rank)}
    return [dict(bundle) for _ in range(num_ranks)]


@dataclass
class Placement:
    use_gpu: bool
    engine_groups: list[PlacementGroup]  # one per engine, in engine order
    learner_group: PlacementGroup  # bundle r: learner rank r

    def remove(self) -> None:
        """Free the reservations (and kill whatever still runs in them)."""
        for group in [*self.engine_groups, self.learner_group]:
            remove_placement_group(group)


def reserve(
    engine: EngineConfig, num_learner_ranks: int, learner_cpus: int, timeout_s: float, name: str
) -> Placement:
    """Reserve every bundle, GPU ones when the cluster has any GPU; raise if they are not all placed within
    `timeout_s` (an autoscaling cluster may need minutes to add the nodes). `name` (the run) prefixes the
    groups' names, as `ray list placement-groups` and the dashboard show them."""
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    engine_groups = [
        placement_group(engine_bundles(engine, use_gpu), strategy="PACK", name=f"{name}-engine-{i}")
        for i in range(engine.num_engines)
    ]
    learner_group = placement_group(
        learner_bundles(num_learner_ranks, learner_cpus, use_gpu), strategy="PACK", name=f"{name}-learner"
    )
    placement = Placement(use_gpu, engine_groups, learner_group)
    groups = [*engine_groups, learner_group]
    ready, _ = ray.wait([group.ready() for group in groups], num_returns=len(groups), timeout=timeout_s)
    if len(ready) < len(groups):
        placement.remove()
        wanted = [bundle for group in groups for bundle in group.bundle_specs]
        raise TimeoutError(
            f"could not reserve {len(wanted)} bundles within {timeout_s:.0f} s: "
            f"{engine.num_engines} engine(s) x {engine_bundles(engine, use_gpu)} and "
            f"{num_learner_ranks} learner rank(s) x {learner_bundles(1, learner_cpus, use_gpu)}; the cluster has "
            f"{ray.cluster_resources()} in all and {ray.available_resources()} free "
            "(raise train.placement_timeout_s while an autoscaler adds nodes)"
        )
    return placement
