"""/predict-delta latency and throughput through Ray Serve, and for policy llm the OpenAI API's streaming
time-to-first-token and tokens/s, each against calling the engine directly in the same run.

Starts a local Ray and the policy service on a free port with --policy (default: the served default, the
evidence policy, which needs no engine; llm: the app's PolicyLLM deployment, Ray Serve LLM's LLMServer on the
tiny model or --model-path), then for each concurrency level sends the same /predict-delta request (a
simulated observation of a built-in persona) from that many concurrent clients, and for llm the same persona
prompt straight to the engine (the PolicyLLM deployment handle's generate: no HTTP, no ingress, no OpenAI
layer) from as many concurrent callers. Prints p50/p99 latency, requests/s, the Serve/engine ratio and the
fallback rate /version reports.

Streaming (llm): the same prompt token ids as a streamed /v1/completions request through the official openai
client (temperature 0, max_tokens --max-tokens, usage in the last chunk), one request at a time: TTFT is the
time to the first chunk with text, tokens/s is (tokens - 1) / (last chunk - first chunk). Engine: TTFT is a
generate of max_tokens 1, tokens/s is (tokens - 1) / (time of a max_tokens generate - that TTFT).

Usage (from the repository root):
  python bench/serve_latency.py [--policy evidence|llm] [--levels 1 8 32] [--requests-per-client 8]
                                [--max-tokens 32] [--model-path DIR] [--stream-requests 20] [--replicas 1]
The untrained tiny model writes no valid delta, so every llm answer also runs the expert fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import openai
import ray
from ray import serve
from transformers import AutoTokenizer

from cluster.serve_command import ServeCommandConfig, start_service
from rollout.chat import ChatRenderer
from rollout.engine import EngineConfig, SamplingConfig
from rollout.models.source import ModelConfig, resolve_model_path
from rollout.harnesses.persona.profiles import heldout_persona, neutral_profile
from rollout.harnesses.persona.simulator import observe
from rollout.harnesses.persona.policy_format import PersonaPolicyFormat
from serve.llm_server import DEPLOYMENT_NAME


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(call: Callable[[], Awaitable[None]], clients: int, per_client: int) -> tuple[list[float], float]:
    """Latencies (s) of clients x per_client calls, each client calling in a loop; and the wall time."""
    latencies: list[float] = []

    async def client() -> None:
        for _ in range(per_client):
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def bench(args: argparse.Namespace, url: str, engine, prompt: list[int], body: dict, eos: int) -> None:
    sampling = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=256)) as http:

        async def via_serve() -> None:
            response = await http.post("/predict-delta", json=body)
            response.raise_for_status()

        async def via_engine() -> None:
            await engine.generate.remote(prompt, sampling, [eos], None)

        for _ in range(3):  # warm up both paths
            await via_serve()
            if engine is not None:
                await via_engine()
        print(f"policy {args.policy}, {args.replicas} replica(s), {args.requests_per_client} requests per client"
              + (f", prompt {len(prompt)} tokens, max_tokens {args.max_tokens}" if engine is not None else ""))
        columns = f"{'serve p50':>9} {'p99':>7} {'req/s':>6}"
        if engine is not None:
            columns += f" | {'engine p50':>10} {'p99':>7} {'req/s':>6} | p50 ratio"
        print(f"{'clients':>7} | {columns}")
        for clients in args.levels:
            serve_latencies, serve_wall = await measure(via_serve, clients, args.requests_per_client)
            count = clients * args.requests_per_client
            s50, s99 = percentile(serve_latencies, 50), percentile(serve_latencies, 99)
            line = f"{clients:>7} | {1000 * s50:>7.1f}ms {1000 * s99:>5.0f}ms {count / serve_wall:>6.1f}"
            if engine is not None:
                engine_latencies, engine_wall = await measure(via_engine, clients, args.requests_per_client)
                e50, e99 = percentile(engine_latencies, 50), percentile(engine_latencies, 99)
                line += f" | {1000 * e50:>8.0f}ms {1000 * e99:>5.0f}ms {count / engine_wall:>6.1f} | {s50 / e50:.2f}"
            print(line)
        version = (await http.get("/version")).json()
        print(f"/version: {version['answers']} answers, fallback rate {version['fallback_rate']:.3f} (the replica that answered)")
    if engine is not None:
        await bench_streaming(args, url, engine, prompt, eos)


async def bench_streaming(args: argparse.Namespace, url: str, engine, prompt: list[int], eos: int) -> None:
    """Streaming TTFT and decode tokens/s through the OpenAI API vs the engine (module doc)."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=300, max_retries=0)
    model = (await client.models.list()).data[0].id

    async def streamed() -> tuple[float, float]:
        start = time.perf_counter()
        first = last = None
        tokens = 0
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=args.max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                last = time.perf_counter()
                first = first or last
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return first - start, (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")

    async def direct() -> tuple[float, float]:
        start = time.perf_counter()
        await engine.generate.remote(prompt, SamplingConfig(temperature=0.0, max_tokens=1), [eos], None)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        generation = await engine.generate.remote(
            prompt, SamplingConfig(temperature=0.0, max_tokens=args.max_tokens), [eos], None
        )
        total = time.perf_counter() - start
        tokens = len(generation.token_ids)
        return ttft, (tokens - 1) / (total - ttft) if tokens > 1 and total > ttft else float("nan")

    for _ in range(2):  # warm up
        await streamed()
        await direct()
    runs = {"openai stream": [await streamed() for _ in range(args.stream_requests)],
            "engine": [await direct() for _ in range(args.stream_requests)]}
    print(f"streaming, one request at a time, {args.stream_requests} requests, prompt {len(prompt)} tokens, "
          f"max_tokens {args.max_tokens}")
    print(f"{'path':>13} | {'TTFT p50':>8} {'p99':>7} | {'tokens/s p50':>12}")
    for path, results in runs.items():
        ttfts, rates = [r[0] for r in results], [r[1] for r in results]
        print(f"{path:>13} | {1000 * percentile(ttfts, 50):>6.1f}ms {1000 * percentile(ttfts, 99):>5.0f}ms | "
              f"{statistics.median(rates):>12.1f}")
    stream_ttft, engine_ttft = (percentile([r[0] for r in runs[k]], 50) for k in runs)
    print(f"TTFT ratio (openai stream / engine, p50): {stream_ttft / engine_ttft:.2f}")
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", choices=["evidence", "llm"], default="evidence", help="the served policy")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens the model may write per request")
    parser.add_argument("--model-path", default=None, help="a local HF model directory (default: the tiny model)")
    parser.add_argument("--stream-requests", type=int, default=20, help="llm: streamed requests per path")
    parser.add_argument("--replicas", type=int, default=1,
                        help="ingress replicas (more than 1: the per-profile memory is the shared PersonaSessions)")
    args = parser.parse_args()

    model_path = str(resolve_model_path(ModelConfig(path=args.model_path)))
    engine_config = EngineConfig(dtype="float32", max_num_seqs=64)
    config = ServeCommandConfig(
        app_name="bench-persona",
        policy=args.policy,
        openai_api=args.policy == "llm",  # the evidence policy needs no engine
        port=free_port(),
        model=ModelConfig(path=model_path),
        engine=engine_config,
        sampling=SamplingConfig(temperature=0.0, max_tokens=args.max_tokens),
        replica_num_cpus=0.5,
        num_replicas=args.replicas,
        trainer={"num_cpus": 0.5},
    )
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        url = start_service(config).rstrip("/")  # as `terrarium serve` does
        engine = serve.get_deployment_handle(DEPLOYMENT_NAME, config.app_name) if args.policy == "llm" else None

        profile = neutral_profile()
        observation = observe(heldout_persona(0), profile, random.Random(0))
        body = {"profile": profile.model_dump(mode="json"), "observation": observation.model_dump(mode="json")}
        renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
        prompt = PersonaPolicyFormat(renderer).prompt_ids(profile, observation)
        asyncio.run(bench(args, url, engine, prompt, body, renderer.end_of_turn_id))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
