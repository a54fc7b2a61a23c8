"""The served language model: Ray Serve LLM's LLMServer (vLLM's own OpenAI server: streaming, n, tools) with
our weight receiver and a policy version. One deployment, one engine, behind both surfaces of the app
(serve.app): the OpenAI routes call its chat/completions, /predict-delta its `generate`, and the
PolicyTrainer (through ServedEngine) its `load_weights`.

Every request is admitted through a rollout.engine.WeightGate, so it runs on one policy version; a hot
reload holds new requests, lets admitted ones finish, pauses the scheduler, loads the new weights on every
vLLM worker (collective_rpc into rollout.weight_receiver) and resumes. A reload that fails (bad weights, a
timeout) raises and leaves the old weights and version serving. OpenAI answers say which version wrote them
in `system_fingerprint` ("policy-v3"), which vLLM stamps on whole responses and on the last streamed chunk.

On CPU the deployment's placement group asks for one CPU (vLLM's worker) and the replica actor for none, so
the ingress replicas keep room on a small machine.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from ray import serve
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, LLMServer

from rollout.engine import EngineConfig, Generation, SamplingConfig, WeightGate, vllm_engine_kwargs

DEPLOYMENT_NAME = "PolicyLLM"
MAX_ONGOING_REQUESTS = 1000  # the ingress replicas bound what they send; vLLM batches max_num_seqs of them
# Constrained JSON (tool arguments, response_format) without free whitespace: fewer tokens, and a weak model
# cannot pad it until max_tokens cuts it off.
COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}


def fingerprint(policy_version: int) -> str:
    """The system_fingerprint of OpenAI answers written by `policy_version`."""
    return f"policy-v{policy_version}"


class PolicyLLMServer(LLMServer):
    async def __init__(self, llm_config: LLMConfig, *, weight_sync_timeout_s: float) -> None:
        self.gate = WeightGate(weight_sync_timeout_s, llm_config.engine_kwargs.get("tensor_parallel_size", 1))
        await super().__init__(llm_config)
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
        Admission happens on the first read, so a stream never read holds nothing."""
        await self.gate.admit()
        try:
            async for item in await method(request, raw_request_info):
                yield item
        finally:
            self.gate.done()

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingConfig, stop_token_ids: list[int], seed: int | None = None
    ) -> Generation:
        """Token ids in, token ids and logprobs out, with the version that wrote them (/predict-delta)."""
        return await self.gate.generate(self._async_llm, prompt_ids, sampling, stop_token_ids, seed)

    async def load_weights(self, payload: bytes, policy_version: int) -> int:
        """Hot reload: a torch.save'd state dict onto every worker, served from now on as `policy_version`."""
        try:
            return await self.gate.reload(self._async_llm, payload, policy_version)
        finally:
            self._stamp()

    def get_policy_version(self) -> int:
        return self.gate.policy_version


def llm_config(
    model_id: str, model_path: str, engine: EngineConfig, tool_call_parser: str | None, use_gpu: bool
) -> LLMConfig:
    """The LLMServer's config: our engine settings (rollout.engine.vllm_engine_kwargs), one replica (the
    PolicyTrainer pushes every version into one engine), tool calls parsed by `tool_call_parser`. Without
    GPUs, the placement group asks for one CPU per vLLM worker (Ray would otherwise ask for a GPU)."""
    tools = {"enable_auto_tool_choice": True, "tool_call_parser": tool_call_parser} if tool_call_parser else {}
    cpu_bundles = None if use_gpu else {"bundles": [{"CPU": 1.0}] * engine.tensor_parallel_size}
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_path},
        engine_kwargs={**vllm_engine_kwargs(engine), **tools, "structured_outputs_config": COMPACT_JSON},
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
    with a deadline. Picklable (it holds names; the handle is made where it is used)."""

    def __init__(self, app_name: str, timeout_s: float) -> None:
        self.app_name = app_name
        self.timeout_s = timeout_s

    def _handle(self) -> Any:
        return serve.get_deployment_handle(DEPLOYMENT_NAME, self.app_name)

    def get_policy_version(self) -> int:
        return self._handle().get_policy_version.remote().result(timeout_s=self.timeout_s)

    def load_weights(self, payload: bytes, policy_version: int) -> int:
        return self._handle().load_weights.remote(payload, policy_version).result(timeout_s=self.timeout_s)
