"""Rollout throughput: how much of raw vLLM's generation speed survives the Terrarium rollout path.

Three parts, in one run, on the tiny local model (float32, eager, the engine settings the tests use):
1. Raw vLLM (in-process, no Ray): the same prompts a rollout worker renders (first observations of the
   built-in harnesses), generated all at once, fixed length (ignore_eos), final output only.
   Also the InferenceEngine class in-process: the engine's own request settings, still without Ray.
2. The Terrarium path: the Ray engine actor called directly from the driver, then the real rollout path
   (a RolloutWorker actor playing the same prompts as single-turn episodes: harness reset, chat rendering,
   engine call over Ray, decode, action parsing). Ratio = rollout-path tokens/s / raw vLLM tokens/s.
3. Episodes/s of multi-turn number_guess episodes with 1, 8 and 64 concurrent episodes per worker.

The two vLLM engines never run together: the in-process one is shut down before Ray starts.
Single-turn episodes need no special harness: with max_turns=1 every episode is exactly one engine call.

Usage (from the repository root):
  python bench/rollout_throughput.py [--quick] [--prompts 64] [--max-tokens 64] [--repeats 10]
                                     [--episodes 64] [--turns 4] [--concurrency 1 8 64]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
from transformers import AutoTokenizer

from rollout.agent_loop import AgentLoopConfig, EpisodeRequest, sampling_seed
from rollout.chat import ChatRenderer, system_prompt
from rollout.corpus import harness_corpus
from rollout.engine import EngineConfig, InferenceEngine, SamplingConfig, start_engines
from rollout.harnesses.registry import make_harness
from rollout.tiny_model import TinyModelSpec, build_tiny_model
from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests

TARGET_RATIO = 0.8  # the "Parallel rollouts" issue: the rollout path keeps >= 80% of raw vLLM tokens/s
HARNESSES = ["number_guess", "text_adventure", "persona"]  # prompts cycle over the built-in harnesses
# The first run fills the prefix cache and the second is the first to hit it: both are slower than the rest.
WARMUP_RUNS = 2
QUICK = {"prompts": 32, "max_tokens": 32, "repeats": 3, "episodes": 16, "turns": 2}


@dataclass
class Measurement:
    name: str
    tokens: int  # generated tokens in one timed repetition
    tokens_per_s: float  # the median over the timed repetitions
    slowest: float  # min and max over the repetitions: the CPUs are shared, so the spread matters
    fastest: float


@dataclass
class EpisodeMeasurement:
    concurrency: int
    episodes: int
    seconds: float
    turns: int
    tokens: int
    generate_s_per_turn: float  # mean time one engine call took, as the agent loop saw it


def single_turn_requests(tag: str, count: int) -> list[EpisodeRequest]:
    """One request per prompt; the tag makes the episode ids (hence the sampling seeds) differ per repetition."""
    return [
        EpisodeRequest(
            episode_id=f"{tag}/ep{i}",
            run_id="bench",
            step=0,
            group_id=f"{tag}/g{i}",
            harness=HARNESSES[i % len(HARNESSES)],
            seed=i,
        )
        for i in range(count)
    ]


async def render_first_prompt(renderer: ChatRenderer, request: EpisodeRequest) -> list[int]:
    """The prompt play_episode renders for this request: system prompt + first observation, as token ids."""
    harness = make_harness(request.harness, **request.harness_kwargs)
    observation = await harness.reset(request.seed)
    return renderer.first_prompt(system_prompt(harness, harness.get_action_space()), str(observation.content))


async def render_all(renderer: ChatRenderer, requests: list[EpisodeRequest]) -> list[list[int]]:
    return [await render_first_prompt(renderer, r) for r in requests]


def measure(name: str, run: Callable[[str], int], repeats: int) -> Measurement:
    """`run(tag)` generates once and returns the tokens generated; untimed warm-up calls come first."""
    for warmup in range(WARMUP_RUNS):
        run(f"warmup{warmup}")
    rates, tokens = [], 0
    for repeat in range(repeats):
        started = time.perf_counter()
        tokens = run(f"rep{repeat}")
        rates.append(tokens / (time.perf_counter() - started))
    result = Measurement(name, tokens, statistics.median(rates), min(rates), max(rates))
    print(f"  {name:<58} {tokens:>6} tokens  {result.tokens_per_s:>6.0f} tokens/s", flush=True)
    return result


def measure_in_process(
    model_path: str,
    engine_config: EngineConfig,
    sampling: SamplingConfig,
    prompts: list[list[int]],
    end_of_turn: int,
    repeats: int,
) -> list[Measurement]:
    """Phase 1: vLLM without Ray. InferenceEngine is a plain class, so its AsyncLLM has exactly the actor's
    engine settings; `.engine` is that AsyncLLM, called directly for the raw figure."""
    from vllm import SamplingParams, TokensPrompt  # imported once main has set the environment
    from vllm.sampling_params import RequestOutputKind

    engine = InferenceEngine(model_path, engine_config)
    raw_params = SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        ignore_eos=True,  # every prompt generates exactly max_tokens
        logprobs=0,  # the rollout path needs them too
        output_kind=RequestOutputKind.FINAL_ONLY,  # what vllm.LLM.generate uses
    )

    async def raw(tag: str) -> int:
        async def one(index: int, prompt: list[int]) -> int:
            request = TokensPrompt(prompt_token_ids=prompt)
            async for output in engine.engine.generate(request, raw_params, request_id=f"{tag}-{index}"):
                final = output
            return len(final.outputs[0].token_ids)

        return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    async def inference_engine(tag: str) -> int:
        requests = single_turn_requests(tag, len(prompts))
        generations = await asyncio.gather(
            *(
                engine.generate(p, sampling, [end_of_turn], sampling_seed(r.episode_id, 0))
                for p, r in zip(prompts, requests)
            )
        )
        return sum(len(g.token_ids) for g in generations)

    # One loop for every call (vLLM's output handler task lives on it); closing it cancels that task.
    with asyncio.Runner() as runner:
        try:
            results = [
                measure("raw vLLM AsyncLLM, in-process, fixed length", lambda tag: runner.run(raw(tag)), repeats),
                measure(
                    "InferenceEngine.generate, in-process (no Ray)",
                    lambda tag: runner.run(inference_engine(tag)),
                    repeats,
                ),
            ]
        finally:
            engine.shutdown()
    # Something in vLLM keeps this frame referenced until exit; without this the engine lives that long too,
    # and its __del__ fails ("'NoneType' object is not callable") while the interpreter is torn down.
    del engine
    return results


def measure_ray_path(
    model_path: str, engines: list, sampling: SamplingConfig, prompts: list[list[int]], end_of_turn: int, repeats: int
) -> list[Measurement]:
    """Phase 2: the engine actor called straight from the driver, then the real rollout path."""
    (engine,) = engines

    def engine_actor(tag: str) -> int:
        requests = single_turn_requests(tag, len(prompts))
        calls = [
            engine.generate.remote(p, sampling, [end_of_turn], sampling_seed(r.episode_id, 0))
            for p, r in zip(prompts, requests)
        ]
        return sum(len(g.token_ids) for g in ray.get(calls))

    direct = measure("Ray engine actor, driver calls generate.remote", engine_actor, repeats)
    # Created only now: a starting worker actor would compete for the CPUs with the measurement above.
    config = RolloutConfig(num_workers=1, max_concurrent_episodes=len(prompts), agent=AgentLoopConfig(max_turns=1))
    coordinator = RolloutCoordinator(model_path, engines, sampling, config)

    def rollout_worker(tag: str) -> int:
        trajectories = coordinator.run(single_turn_requests(tag, len(prompts)))
        for trajectory, prompt in zip(trajectories, prompts):
            if trajectory.token_ids[: trajectory.prompt_length] != prompt or trajectory.num_turns != 1:
                raise RuntimeError(f"episode {trajectory.episode_id} did not play the benchmark prompt in one turn")
        return sum(t.num_policy_tokens for t in trajectories)

    try:
        return [direct, measure("rollout path: 1 RolloutWorker, single-turn episodes", rollout_worker, repeats)]
    finally:
        coordinator.shutdown()


def measure_episodes(model_path: str, engines: list, args: argparse.Namespace) -> list[EpisodeMeasurement]:
    """Phase 3: the same multi-turn number_guess episodes at several concurrencies, one worker each time."""
    sampling = SamplingConfig(max_tokens=args.episode_max_tokens)
    results = []
    for concurrency in args.concurrency:
        config = RolloutConfig(
            harness="number_guess",
            num_workers=1,
            max_concurrent_episodes=concurrency,
            group_size=8,
            agent={"max_turns": args.turns},
        )
        seeds = list(range(math.ceil(args.episodes / config.group_size)))
        coordinator = RolloutCoordinator(model_path, engines, sampling, config)
        try:
            coordinator.run(group_requests(f"warmup-c{concurrency}", 0, seeds, config)[:concurrency])
            requests = group_requests(f"c{concurrency}", 0, seeds, config)[: args.episodes]
            started = time.perf_counter()
            trajectories = coordinator.run(requests)
            seconds = time.perf_counter() - started
        finally:
            coordinator.shutdown()
        turns = sum(t.num_turns for t in trajectories)
        result = EpisodeMeasurement(
            concurrency=concurrency,
            episodes=len(trajectories),
            seconds=seconds,
            turns=turns,
            tokens=sum(t.num_policy_tokens for t in trajectories),
            generate_s_per_turn=sum(t.timings["generate"] for t in trajectories) / max(turns, 1),
        )
        rate = result.episodes / seconds
        print(f"  concurrency {concurrency:>3}: {rate:7.2f} episodes/s ({seconds:.1f} s)", flush=True)
        results.append(result)
    return results


def print_report(args: argparse.Namespace, throughput: list[Measurement], episodes: list[EpisodeMeasurement]) -> None:
    raw = throughput[0].tokens_per_s
    print(f"\nGenerated tokens/s, {args.prompts} prompts x max {args.max_tokens} tokens, median of {args.repeats}:")
    header = f"{'path':<58} {'tokens/s':>9} {'min-max':>11} {'vs raw':>7}"
    print(header)
    print("-" * len(header))
    for m in throughput:
        spread = f"{m.slowest:.0f}-{m.fastest:.0f}"
        print(f"{m.name:<58} {m.tokens_per_s:>9.0f} {spread:>11} {m.tokens_per_s / raw:>7.2f}")
    rollout = throughput[-1]
    ratio = rollout.tokens_per_s / raw
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(
        f"\nratio rollout path / raw vLLM = {ratio:.2f} by median ({verdict} the {TARGET_RATIO} target), "
        f"{rollout.fastest / throughput[0].fastest:.2f} by fastest repetition"
    )

    print(
        f"\nnumber_guess, {args.episodes} episodes x max {args.turns} turns x max {args.episode_max_tokens} tokens, "
        "1 worker:"
    )
    header = f"{'concurrent':>10} {'episodes/s':>10} {'turns/s':>8} {'tokens/s':>9} {'turns/ep':>8} {'s/generate':>10}"
    print(header)
    print("-" * len(header))
    for e in episodes:
        print(
            f"{e.concurrency:>10} {e.episodes / e.seconds:>10.2f} {e.turns / e.seconds:>8.1f} "
            f"{e.tokens / e.seconds:>9.0f} {e.turns / e.episodes:>8.2f} {e.generate_s_per_turn:>10.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a shorter run: {QUICK} unless given explicitly")
    parser.add_argument("--prompts", type=int, default=64, help="prompts generated at once (parts 1 and 2)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per prompt (parts 1 and 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions after the warm-up (parts 1 and 2)")
    parser.add_argument("--episodes", type=int, default=64, help="number_guess episodes per concurrency (part 3)")
    parser.add_argument("--turns", type=int, default=4, help="max turns per number_guess episode (part 3)")
    parser.add_argument("--episode-max-tokens", type=int, default=16, help="tokens per turn (part 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64], help="episodes in flight per worker")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="the engine's continuous batch")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    counts = [args.prompts, args.max_tokens, args.repeats, args.episodes, args.turns, args.episode_max_tokens]
    if min(counts + args.concurrency + [args.max_num_seqs]) < 1:
        parser.error("every count must be >= 1")

    # Before vLLM is imported or Ray started: both read these then (children inherit them).
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

    started = time.perf_counter()
    engine_config = EngineConfig(dtype="float32", max_model_len=2048, max_num_seqs=args.max_num_seqs)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as workdir:
        model_path = str(build_tiny_model(Path(workdir) / "tiny", TinyModelSpec(), harness_corpus()))
        renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
        end_of_turn = renderer.end_of_turn_id
        prompts = asyncio.run(render_all(renderer, single_turn_requests("prompts", args.prompts)))
        lengths = sorted(map(len, prompts))
        print(f"{args.prompts} prompts of {lengths[0]}-{lengths[-1]} tokens, {os.cpu_count()} CPUs")

        print("phase 1: vLLM in-process", flush=True)
        throughput = measure_in_process(model_path, engine_config, sampling, prompts, end_of_turn, args.repeats)

        print("phase 2: Ray engine actor and rollout worker", flush=True)
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)  # logical CPUs, as in the tests
        try:
            engines = start_engines(model_path, engine_config)
            try:
                throughput += measure_ray_path(model_path, engines, sampling, prompts, end_of_turn, args.repeats)
                print("phase 3: number_guess episodes", flush=True)
                episodes = measure_episodes(model_path, engines, args)
            finally:
                ray.get([engine.shutdown.remote() for engine in engines])
        finally:
            ray.shutdown()
    print_report(args, throughput, episodes)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
