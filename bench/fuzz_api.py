"""Fuzz the policy service through its own OpenAPI description with schemathesis; prints the count of 5xx.

Starts a local Ray and the service as `terrarium serve` starts it (policy llm, its PolicyLLM engine on the
tiny model or --model-path, a Parquet store in a temp directory, an API key), loads /openapi.json with the key,
then for every operation generates valid bodies (positive mode) and invalid ones (negative mode) with
Hypothesis and sends each. A 5xx is the service failing on a request, the figure that must be 0; the other
statuses are counted too. /train cases really train the engine (the weights are thrown away at the end).

Usage (from the repository root; needs the `bench` extra: pip install -e '.[bench]'):
  python bench/fuzz_api.py [--cases 2000] [--max-tokens 8] [--model-path DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

import hypothesis
import ray
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from ray import serve
from schemathesis import GenerationMode

from cluster.serve_command import start_service
from rollout.engine import EngineConfig
from rollout.models.source import ModelConfig, resolve_model_path
from serve_load import service_config  # bench/ is the script's directory, first on sys.path

KEY_ENV = "TERRARIUM_FUZZ_KEY"


def fuzz(url: str, key: str, cases: int, seed: int) -> int:
    """Send `cases` generated requests spread over the operations and both modes; returns the 5xx count."""
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers, timeout=60)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Operations without a body first: Hypothesis runs out of distinct requests for them early, and the
    # cases they do not use go to the operations after them.
    operations.sort(key=lambda operation: operation.method.upper() != "GET")
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    plan = [(operation, mode) for operation in operations for mode in modes]
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    failures: list[str] = []
    session = requests.Session()
    start = time.perf_counter()
    for index, (operation, mode) in enumerate(plan):
        label = f"{operation.method.upper()} {operation.path} {mode.value}"
        target = -(-(cases - sum(statuses.values())) // (len(plan) - index))  # an equal share of what is left
        sent = 0

        def send(case: schemathesis.Case) -> None:
            nonlocal sent
            if sent >= target:
                return
            sent += 1
            response = case.call(base_url=url, session=session, headers=headers, timeout=300)
            statuses[(label, response.status_code)] += 1
            if response.status_code >= 500 and len(failures) < 20:
                body = str(case.body)[:300]
                failures.append(f"{label} -> {response.status_code}: {response.text[:300]}\n  body: {body}")

        for attempt in range(5):  # a new seed when Hypothesis ran out of distinct cases
            if sent >= target:
                break
            run = hypothesis.settings(
                max_examples=target - sent, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(hypothesis.seed(seed + attempt)(given(case=operation.as_strategy(generation_mode=mode))(send)))
            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # e.g. no invalid request exists for GET /health
                break
        print(f"{label:<45} {sent:>5} cases  {time.perf_counter() - start:7.0f} s", flush=True)

    total = sum(statuses.values())
    server_errors = sum(count for (_, status), count in statuses.items() if status >= 500)
    print("\nstatus counts per operation and mode:")
    for (label, status), count in sorted(statuses.items()):
        print(f"  {label:<45} {status}: {count}")
    for failure in failures:
        print("5xx:", failure)
    print(f"\ncases sent: {total}   5xx: {server_errors}   ({time.perf_counter() - start:.0f} s)")
    return server_errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="requests to send in all")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens the model may write per request")
    parser.add_argument("--model-path", default=None, help="a local HF model directory (default: the tiny model)")
    parser.add_argument(
        "--policy", choices=["llm", "expert"], default="llm", help="expert: no engine (a quick run of the HTTP layer)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    key = os.urandom(16).hex()
    os.environ[KEY_ENV] = key
    model_path = str(resolve_model_path(ModelConfig(path=args.model_path)))
    engine_config = EngineConfig(dtype="float32", max_num_seqs=64)
    with tempfile.TemporaryDirectory() as store_root:
        config = service_config(
            "fuzz-persona", model_path, engine_config, args.policy, args.max_tokens,
            api_key_env=KEY_ENV, store={"backend": "parquet", "root": store_root},
        )
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
        try:
            url = start_service(config).rstrip("/")
            server_errors = fuzz(url, key, args.cases, args.seed)
        finally:
            serve.shutdown()
            ray.shutdown()
    return 1 if server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
