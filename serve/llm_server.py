"""The served language model: Ray Serve LLM's LLMServer (vLLM's own OpenAI server: streaming, n, tools) with
our weight receiver and a policy version. One deployment, one engine, behind both surfaces of the app
(serve.app): the OpenAI routes call its chat/completions, /predict-delta its `generate`, and the
PolicyTrainer (through ServedEngine) its `load_weights`.

Every request is admitted through a rollout.engine.WeightGate, so it runs on one policy version; a hot
reload holds new requests, lets admitted ones finish, pauses the scheduler, loads the new weights on every
vLLM worker (collective_rpc into rollout.weight_receiver) and resumes. A reload that fails (bad weights, a
timeout) raises and leaves the old weights and version serving. OpenAI answers say which version wrote them
in `system_fingerprint` ("policy-v3"), which vLLM stamps on whole responses and on the last streamed chunk.

With `lora` (serve.config.ServeLoraSettings) the engine runs vLLM's LoRA support and a LoRA version arrives as
its adapters (`load_adapter`), which stay on the frozen base: each version is a model of its own,
"<model_id>:policy-vN" (`adapter_model_id`), that Ray Serve LLM's multiplexing routes requests to (the ingress
sends a request naming it with that multiplexed model id; LLMServer's LoRA model loader, here
PublishedAdapterLoader, finds its directory on this replica's disk and vLLM loads it). The newest version is also
the current one: requests for model_id and `generate` run with its adapter. The newest serve.lora.max_adapters
versions are served; older ones are withdrawn (their files go: /train makes a version per request). Full weights
(`load_weights`) replace the base the adapters were trained on, so they withdraw every adapter version.

On CPU the deployment's placement group asks for one CPU (vLLM's worker) and the replica actor for none, so
the ingress replicas keep room on a small machine.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from ray import serve
from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, LLMServer

from rollout.engine import EngineConfig, Generation, SamplingConfig, WeightGate, rank_errors, vllm_engine_kwargs
from rollout.weight_receiver import LoraAdapter, write_adapter
from serve.config import ServeLoraSettings

DEPLOYMENT_NAME = "PolicyLLM"
MAX_ONGOING_REQUESTS = 1000  # the ingress replicas bound what they send; vLLM batches max_num_seqs of them
# Constrained JSON (tool arguments, response_format) without free whitespace: fewer tokens, and a weak model
# cannot pad it until max_tokens cuts it off.
COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}


def fingerprint(policy_version: int) -> str:
    """The system_fingerprint of OpenAI answers written by `policy_version`."""
    return f"policy-v{policy_version}"


def adapter_model_id(model_id: str, policy_version: int) -> str:
    """The OpenAI model name of LoRA version `policy_version`: "<model_id>:<adapter id>", Ray Serve LLM's form of
    a multiplexed LoRA model on base model `model_id`."""
    return f"{model_id}:{fingerprint(policy_version)}"


class PublishedAdapterLoader(LoraModelLoader):
    """LLMServer's LoRA model loader for the adapter versions this replica holds on its own disk (`adapters`:
    model name -> directory, kept by PolicyLLMServer.load_adapter). Ray's own loader downloads from cloud storage
    (lora_config.dynamic_lora_loading_path), which takes no local directory."""

    def __init__(self, adapters: dict[str, str], **options: Any) -> None:
        super().__init__(**options)
        self.adapters = adapters

    async def load_model_from_config(self, lora_model_id: str, llm_config: LLMConfig) -> DiskMultiplexConfig:
        path = self.adapters.get(lora_model_id)
        if path is None:
            raise HTTPException(404, f"no LoRA version {lora_model_id!r} is published on this service")
        return DiskMultiplexConfig(
            model_id=lora_model_id, max_total_tokens=None, local_path=path, lora_assigned_int_id=global_id_manager.next()
        )


class PolicyLLMServer(LLMServer):
    async def __init__(self, llm_config: LLMConfig, *, weight_sync_timeout_s: float) -> None:
        self.gate = WeightGate(weight_sync_timeout_s, llm_config.engine_kwargs.get("tensor_parallel_size", 1))
        self.adapters: dict[str, str] = {}  # LoRA versions served: model name -> adapter directory
        self.adapter_root = Path(tempfile.mkdtemp(prefix="terrarium-served-lora-")) if llm_config.lora_config else None
        await super().__init__(llm_config, model_downloader=functools.partial(PublishedAdapterLoader, self.adapters))
        self._stamp()

    @property
    def _async_llm(self) -> Any:
        # Ray's VLLMEngine keeps vLLM's AsyncLLM here; generate and the reload need the engine itself.
        return self.engine._engine_client

    def _stamp(self) -> None:
        """vLLM's OpenAI serving objects read their fingerprint per response; none is in flight now."""
        for serving in (self.engine._oai_serving_chat, self.engine._oai_serving_completion):
            if serving is not None:
                serving.system_fingerprint = fingerprint(self.gate.policy_version)

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        return self._admitted(super().chat, request, raw_request_info)

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        return self._admitted(super().completions, request, raw_request_info)

    async def _admitted(self, method: Callable, request: Any, raw_request_info: Any) -> AsyncGenerator[Any, None]:
        """The request's answer stream, admitted under one version: a reload waits until it has finished.
        Admission happens on the first read, so a stream never read holds nothing. A request for model_id runs
        with the current version's adapter, if it is one (its answer names that version's model)."""
        await self.gate.admit()
        if self.gate.lora_request is not None and request.model == self._llm_config.model_id:
            request.model = self.gate.lora_request.lora_name  # no await since admit: the admitted version's
        try:
            async for item in await method(request, raw_request_info):
                yield item
        finally:
            self.gate.done()

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingConfig, stop_token_ids: list[int], seed: int | None = None,
        reply_grammar: str | None = None,
    ) -> Generation:
        """Token ids in, token ids and logprobs out, with the version that wrote them (/predict-delta);
        `reply_grammar`: the reply is sampled under it (vLLM structured outputs)."""
        return await self.gate.generate(self._async_llm, prompt_ids, sampling, stop_token_ids, seed, reply_grammar)

    async def load_weights(self, payload: bytes, policy_version: int) -> int:
        """Hot reload: a torch.save'd state dict onto every worker, served from now on as `policy_version`.
        The adapter versions, trained on the base these weights replace, are withdrawn."""
        try:
            version = await self.gate.reload(self._async_llm, payload, policy_version)
        finally:
            self._stamp()
        for name in list(self.adapters):
            await self._withdraw(name)
        return version

    async def load_adapter(self, adapter: LoraAdapter, policy_version: int) -> int:
        """Hot reload of a LoRA version (serve.lora set): vLLM loads `adapter` on the frozen base as model
        adapter_model_id(model_id, policy_version), listed and multiplexed from now on, and the current version
        becomes it. A refused adapter (a rank over serve.lora.max_rank, modules the model lacks) raises and the
        previous version keeps serving."""
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        if self.adapter_root is None:
            raise ValueError("this service serves no adapters (serve.lora is unset): send the merged weights")
        name = adapter_model_id(self._llm_config.model_id, policy_version)
        path = self.adapter_root / f"{fingerprint(policy_version)}-{uuid.uuid4().hex[:8]}"  # new path, new prefix cache
        write_adapter(path, adapter.config, adapter.weights)
        # vLLM checks module kinds and the rank, not layer names or sizes: the weight receiver checks those first
        checked = await self.gate.on_every_rank(self._async_llm, "check_policy_adapter", str(path))
        if any(reply["error"] for reply in checked):
            shutil.rmtree(path, ignore_errors=True)
            raise ValueError(f"LoRA version {policy_version} refused: {rank_errors(checked)}")
        models = self.engine._oai_models  # Ray's VLLMEngine: vLLM's registry of served models, its resolve_lora's
        answer = await self.gate.bounded(
            models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path), load_inplace=True)),
            f"loading LoRA version {policy_version}",
        )
        if not isinstance(answer, str):  # vLLM's ErrorResponse
            shutil.rmtree(path, ignore_errors=True)
            raise ValueError(f"LoRA version {policy_version} refused: {answer.error.message}")
        previous = self.adapters.pop(name, None)  # the same version published again: its new files replace these
        self.adapters[name] = str(path)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)

        async def serve_it() -> None:
            self.gate.lora_request = models.lora_requests[name]

        try:
            version = await self.gate.swap(self._async_llm, serve_it, policy_version)
        finally:
            self._stamp()
        while len(self.adapters) > self._llm_config.lora_config.max_num_adapters_per_replica:  # serve.lora.max_adapters
            await self._withdraw(next(iter(self.adapters)))  # the oldest; no request runs it as current any more
        return version

    def list_adapters(self) -> list[str]:
        """The LoRA versions' model names, oldest first."""
        return list(self.adapters)

    async def _withdraw(self, name: str) -> None:
        """Stop serving LoRA version `name`: it is no longer listed or answered, and its files go."""
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        path = self.adapters.pop(name)
        await self.engine._oai_models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        shutil.rmtree(path, ignore_errors=True)

    async def __del__(self) -> None:
        if self.adapter_root is not None:
            shutil.rmtree(self.adapter_root, ignore_errors=True)
        await super().__del__()

    def get_policy_version(self) -> int:
        return self.gate.policy_version


def llm_config(
    model_id: str,
    model_path: str,
    engine: EngineConfig,
    tool_call_parser: str | None,
    use_gpu: bool,
    lora: ServeLoraSettings | None = None,
) -> LLMConfig:
    """The LLMServer's config: our engine settings (rollout.engine.vllm_engine_kwargs), one replica (the
    PolicyTrainer pushes every version into one engine), tool calls parsed by `tool_call_parser`, and with
    `lora` vLLM's LoRA support plus Ray Serve LLM's LoRA multiplexing (lora_config; no cloud path: the adapters
    are this replica's own, see PublishedAdapterLoader). Without GPUs, the placement group asks for one CPU per
    vLLM worker (Ray would otherwise ask for a GPU)."""
    tools = {"enable_auto_tool_choice": True, "tool_call_parser": tool_call_parser} if tool_call_parser else {}
    adapters = {"max_loras": lora.max_adapters} if lora else {}
    cpu_bundles = None if use_gpu else {"bundles": [{"CPU": 1.0}] * engine.tensor_parallel_size}
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_path},
        engine_kwargs={
            **vllm_engine_kwargs(engine, lora.max_rank if lora else None),
            **adapters,
            **tools,
            "structured_outputs_config": COMPACT_JSON,
        },
        lora_config={"max_num_adapters_per_replica": lora.max_adapters} if lora else None,
        placement_group_config=cpu_bundles,
        deployment_config={
            "num_replicas": 1,
            "max_ongoing_requests": MAX_ONGOING_REQUESTS,
            "ray_actor_options": {"num_cpus": 0},
        },
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(engine.cpu_kv_cache_gib)}},
        log_engine_metrics=False,
    )


def llm_deployment(config: LLMConfig, weight_sync_timeout_s: float, version: str) -> Application:
    """The PolicyLLM deployment, as ray.serve.llm.build_llm_deployment makes it, with Serve's code version
    pinned to `version`: redeploying the app with a new user_config (serve.app.publish) leaves the engine
    running (`version` is only accepted as an internal option)."""
    options = PolicyLLMServer.get_deployment_options(config) | {"name": DEPLOYMENT_NAME}
    deployment = serve.deployment(PolicyLLMServer, **options).options(version=version, _internal=True)
    return deployment.bind(config, weight_sync_timeout_s=weight_sync_timeout_s)


class ServedEngine:
    """The PolicyLLM deployment of a running app, as the PolicyTrainer uses an engine: blocking calls, each
    with a deadline. `serves_adapters` (serve.lora set): LoRA versions go in as adapters (load_adapter).
    Picklable (it holds names; the handle is made where it is used)."""

    def __init__(self, app_name: str, timeout_s: float, serves_adapters: bool = False) -> None:
        self.app_name = app_name
        self.timeout_s = timeout_s
        self.serves_adapters = serves_adapters

    def _handle(self) -> Any:
        return serve.get_deployment_handle(DEPLOYMENT_NAME, self.app_name)

    def get_policy_version(self) -> int:
        return self._handle().get_policy_version.remote().result(timeout_s=self.timeout_s)

    def load_weights(self, payload: bytes, policy_version: int) -> int:
        return self._handle().load_weights.remote(payload, policy_version).result(timeout_s=self.timeout_s)

    def load_adapter(self, adapter: LoraAdapter, policy_version: int) -> int:
        return self._handle().load_adapter.remote(adapter, policy_version).result(timeout_s=self.timeout_s)
