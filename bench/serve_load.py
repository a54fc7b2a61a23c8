"""Sustained load on /predict-delta: N concurrent clients for D seconds; prints requests/s, p50, p99, errors.

Starts a local Ray and the service as `terrarium serve` starts it (policy llm, its PolicyLLM engine on the
tiny model or --model-path, configs/serve.yaml's limits: max_ongoing_requests, max_queued_requests,
request_timeout_s), then each client sends RustyWorm-shaped /predict-delta requests (a simulated observation
of a held-out persona, a different one per request) back to back until the time is up. An error is any
answer other than 200 or a failed connection; the target is 0.

Usage (from the repository root):
  python bench/serve_load.py [--clients 32] [--seconds 60] [--max-tokens 32] [--model-path DIR]
The untrained tiny model writes no valid delta, so every answer also runs the expert fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import statistics
import time

import httpx
import ray
from ray import serve

from cluster.serve_command import ServeCommandConfig, start_service
from rollout.engine import EngineConfig, SamplingConfig
from rollout.harnesses.persona.profiles import heldout_persona, neutral_profile
from rollout.harnesses.persona.simulator import observe
from rollout.models.source import ModelConfig, resolve_model_path
from serve_latency import free_port  # bench/ is the script's directory, first on sys.path


def service_config(
    app_name: str, model_path: str, engine: EngineConfig, policy: str, max_tokens: int, **extra: object
) -> ServeCommandConfig:
    """The persona service the HTTP benches (this one and fuzz_api.py) run: greedy, half-CPU replicas."""
    return ServeCommandConfig(
        app_name=app_name,
        port=free_port(),
        model=ModelConfig(path=model_path),
        engine=engine,
        sampling=SamplingConfig(temperature=0.0, max_tokens=max_tokens),
        replica_num_cpus=0.5,
        policy=policy,
        openai_api=policy == "llm",  # the expert needs no engine
        trainer={"num_cpus": 0.5},
        **extra,
    )


def request_bodies(count: int) -> list[dict]:
    profile = neutral_profile()
    bodies = []
    for index in range(count):
        observation = observe(heldout_persona(index), profile, random.Random(index))
        bodies.append({"profile": profile.model_dump(mode="json"), "observation": observation.model_dump(mode="json")})
    return bodies


async def load(url: str, clients: int, seconds: float, bodies: list[dict]) -> None:
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for body in bodies[:3]:  # warm up
            (await http.post("/predict-delta", json=body)).raise_for_status()
        deadline = time.perf_counter() + seconds

        async def client(index: int) -> None:
            sent = 0
            while time.perf_counter() < deadline:
                body = bodies[(index + sent * clients) % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await http.post("/predict-delta", json=body)
                    outcomes[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - start
    total = sum(outcomes.values())
    errors = total - outcomes["200"]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    print(f"clients {clients}, {wall:.1f} s: {total} requests, {len(latencies) / wall:.1f} requests/s (200s)")
    print(f"latency p50 {1000 * cuts[49]:.0f} ms, p99 {1000 * cuts[98]:.0f} ms")
    print(f"errors: {errors}  (answers: {dict(outcomes)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens the model may write per request")
    parser.add_argument("--model-path", default=None, help="a local HF model directory (default: the tiny model)")
    parser.add_argument(
        "--policy", choices=["llm", "expert"], default="llm", help="expert: no engine (a quick run of the HTTP layer)"
    )
    args = parser.parse_args()

    model_path = str(resolve_model_path(ModelConfig(path=args.model_path)))
    engine_config = EngineConfig(dtype="float32", max_num_seqs=64)
    config = service_config("load-persona", model_path, engine_config, args.policy, args.max_tokens, store=None)
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        url = start_service(config).rstrip("/")
        print(
            f"max_ongoing_requests {config.max_ongoing_requests}, max_queued_requests {config.max_queued_requests}, "
            f"request_timeout_s {config.request_timeout_s}, max_tokens {args.max_tokens}"
        )
        asyncio.run(load(url, args.clients, args.seconds, request_bodies(64)))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
