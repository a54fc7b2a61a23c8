"""Weight sync: the learner's new weights into every engine, tagged with the policy version.

Two transports, one contract (the engine holds new requests, lets admitted ones finish on the old weights,
swaps, bumps its version; a failure raises within the timeout instead of hanging):

- object store (CPU, or any single machine): rank 0's state dict as torch.save bytes, put in the Ray object
  store once and loaded by every engine (rollout.weight_receiver). LoRA adapters (learner.lora with
  engine.lora_sync=adapter) always go this way, on GPUs too: a few MB that vLLM's LoRA support loads.
- NCCL (GPU clusters): vLLM's weight-transfer API. Learner rank 0 and every engine worker form one NCCL
  group; rank 0 broadcasts the parameters straight from GPU memory while the engines receive them
  (NCCLTrainerWeightTransferEngine drives start -> update_weights + broadcast -> finish). Engines need
  `engine.weight_transfer: nccl`. The sender runs inside the learner rank-0 actor (LearnerWorker).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import ray
import torch

from rollout.engine import serialize_state_dict
from rollout.weight_receiver import LoraAdapter


def sync_through_object_store(
    state_dict: dict[str, torch.Tensor], engines: list[Any], policy_version: int, timeout_s: float
) -> float:
    """Push a full state dict to every engine; returns the seconds it took."""
    start = time.perf_counter()
    _load_on_engines(engines, "load_weights", serialize_state_dict(state_dict), policy_version, timeout_s)
    return time.perf_counter() - start


def sync_adapter_through_object_store(
    adapter: LoraAdapter, engines: list[Any], policy_version: int, timeout_s: float
) -> float:
    """Push LoRA adapters to every engine (started with lora_rank); returns the seconds it took."""
    start = time.perf_counter()
    _load_on_engines(engines, "load_adapter", adapter, policy_version, timeout_s)
    return time.perf_counter() - start


def _load_on_engines(engines: list[Any], method: str, payload: Any, policy_version: int, timeout_s: float) -> None:
    """One copy of `payload` in the object store, loaded by every engine's `method` as `policy_version`."""
    ref = ray.put(payload)
    versions = ray.get([getattr(engine, method).remote(ref, policy_version) for engine in engines], timeout=timeout_s)
    if any(version != policy_version for version in versions):
        raise RuntimeError(f"weight sync: engines report versions {versions}, expected {policy_version}")


class EngineGroupClient:
    """vLLM's VLLMWeightSyncClient protocol over several InferenceEngine actors: every call goes to all
    engines and waits at most `timeout_s`. Engine i's workers take NCCL ranks 1 + i * tensor_parallel_size
    onwards (rank 0 is the learner)."""

    def __init__(self, engines: list[Any], tensor_parallel_size: int, timeout_s: float) -> None:
        self.engines = engines
        self.tensor_parallel_size = tensor_parallel_size
        self.timeout_s = timeout_s
        self.pending_version = 0  # set by NcclWeightSender before each round; finish tags the engines with it

    def _all(self, refs: list[Any]) -> list[Any]:
        return ray.get(refs, timeout=self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        first = init_info["rank_offset"]
        self._all(
            [
                engine.init_weight_transfer_engine.remote({**init_info, "rank_offset": first + i * self.tensor_parallel_size})
                for i, engine in enumerate(self.engines)
            ]
        )

    def start_weight_update(self) -> None:
        self._all([engine.start_weight_update.remote() for engine in self.engines])

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self._all([engine.update_weights.remote(update_info) for engine in self.engines])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all([engine.finish_weight_update.remote(self.pending_version) for engine in self.engines])


class NcclWeightSender:
    """Lives in learner rank 0 (it needs the model's GPU tensors). Built once per training run."""

    def __init__(
        self,
        model: torch.nn.Module,
        engines: list[Any],
        tensor_parallel_size: int,
        master_address: str,
        master_port: int,
        timeout_s: float,
    ) -> None:
        from vllm.distributed.weight_transfer.base import ModuleSource
        from vllm.distributed.weight_transfer.nccl_engine import (
            NCCLTrainerInitInfo,
            NCCLTrainerWeightTransferEngine,
        )

        self.timeout_s = timeout_s
        self.client = EngineGroupClient(engines, tensor_parallel_size, timeout_s)
        init_info = NCCLTrainerInitInfo(
            master_address=master_address,
            master_port=master_port,
            world_size=1 + len(engines) * tensor_parallel_size,
        )
        # The rendezvous and every broadcast run on a side thread: a peer that never joins must surface as a
        # TimeoutError here, not as a learner blocked forever inside NCCL.
        self._thread = ThreadPoolExecutor(max_workers=1)
        self.transfer = self._bounded(
            lambda: NCCLTrainerWeightTransferEngine.trainer_init(init_info, client=self.client, source=ModuleSource(model)),
            "NCCL rendezvous with the engines",
        )

    def _bounded(self, call: Any, what: str) -> Any:
        try:
            return self._thread.submit(call).result(timeout=self.timeout_s)
        except FutureTimeout:
            raise TimeoutError(
                f"weight sync: {what} did not finish within {self.timeout_s:.0f} s; the NCCL group is unusable"
            ) from None

    def send(self, policy_version: int) -> None:
        self.client.pending_version = policy_version
        self._bounded(self.transfer.send_weights, f"NCCL broadcast of policy version {policy_version}")
