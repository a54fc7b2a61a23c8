"""Rollout throughput: how much of raw vLLM's generation speed survives the Terrarium rollout path.

Two parts, in one run, on the tiny local model (float32, eager, the engine settings the tests use):
1. Tokens/s of the same prompts (first observations of the built-in harnesses, rendered as a rollout worker
   renders them) through four paths, with the same sampling settings (temperature, max_tokens, stop at the
   end-of-turn token, the sampled token's logprob, final output only):
   - raw vLLM: an AsyncLLM in this process, no Ray, no Terrarium code (no per-request seeds);
   - the InferenceEngine class in this process: Terrarium's request handling, still without Ray;
   - the Ray engine actor, called directly from the driver;
   - the rollout path: a RolloutWorker actor playing the prompts as single-turn episodes (harness reset,
     chat rendering, engine call over Ray, decode, action parsing).
   The paths take turns within every repetition (raw, in-process, actor, rollout, raw, ...), so a change in
   the machine's load during the run hits all of them alike; ratio = the median over repetitions of
   rollout-path tokens/s / raw tokens/s of the same repetition. An idle engine costs no CPU (checked: 0%
   for EngineCore, ~2% for its worker), so two engines can stay up side by side.
2. Episodes/s of multi-turn number_guess episodes with 1, 8 and 64 concurrent episodes per worker.

Single-turn episodes need no special harness: with max_turns=1 every episode is exactly one engine call.
At exit vLLM may print an ignored TypeError from AsyncLLM.__del__ (it runs again during interpreter
teardown, after the engine was shut down): harmless.

Usage (from the repository root):
  python bench/rollout_throughput.py [--quick] [--prompts 64] [--max-tokens 128] [--repeats 8]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from transformers import AutoTokenizer

from rollout.agent_loop import AgentLoopConfig, EpisodeRequest, sampling_seed
from rollout.chat import ChatRenderer, system_prompt
from rollout.models.corpus import harness_corpus
from rollout.engine import EngineConfig, InferenceEngine, SamplingConfig, start_engines
from rollout.harnesses.registry import make_harness
from rollout.models.tiny_model import TinyModelSpec, build_tiny_model
from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests

TARGET_RATIO = 0.8  # the "Parallel rollouts" issue: the rollout path keeps >= 80% of raw vLLM tokens/s
HARNESSES = ["number_guess", "text_adventure", "persona"]  # prompts cycle over the built-in harnesses
# The first run fills the prefix cache and the second is the first to hit it: both are slower than the rest.
WARMUP_RUNS = 2
QUICK = {"prompts": 32, "max_tokens": 32, "repeats": 3, "episodes": 16, "turns": 2}


@dataclass
class Measurement:
    name: str
    rates: list[float] = field(default_factory=list)  # tokens/s of each timed repetition, in order
    tokens: int = 0  # generated tokens in the last repetition

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


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


def measure_interleaved(paths: dict[str, Callable[[str], int]], repeats: int) -> list[Measurement]:
    """`path(tag)` generates the prompt set once and returns the tokens generated. Untimed warm-up rounds
    first, then `repeats` rounds in which every path runs once, in turn."""
    for warmup in range(WARMUP_RUNS):
        for run in paths.values():
            run(f"warmup{warmup}")
    results = {name: Measurement(name) for name in paths}
    for repeat in range(repeats):
        for name, run in paths.items():
            started = time.perf_counter()
            tokens = run(f"rep{repeat}")
            results[name].rates.append(tokens / (time.perf_counter() - started))
            results[name].tokens = tokens
        rates = ", ".join(f"{m.rates[-1]:.0f}" for m in results.values())
        print(f"  round {repeat + 1}/{repeats}: {rates} tokens/s", flush=True)
    return list(results.values())


def throughput_paths(
    runner: asyncio.Runner,
    local_engine: InferenceEngine,
    actor_engine: Any,
    coordinator: RolloutCoordinator,
    sampling: SamplingConfig,
    prompts: list[list[int]],
    end_of_turn: int,
) -> dict[str, Callable[[str], int]]:
    """The four paths of part 1, each generating the whole prompt set once per call."""
    from vllm import SamplingParams, TokensPrompt  # imported once main has set the environment
    from vllm.sampling_params import RequestOutputKind

    raw_params = SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        stop_token_ids=[end_of_turn],
        logprobs=0,  # the rollout path needs them too
        output_kind=RequestOutputKind.FINAL_ONLY,  # what vllm.LLM.generate uses
        detokenize=False,
    )

    async def raw(tag: str) -> int:
        async def one(index: int, prompt: list[int]) -> int:
            request = TokensPrompt(prompt_token_ids=prompt)
            async for output in local_engine.engine.generate(request, raw_params, request_id=f"{tag}-{index}"):
                final = output
            return len(final.outputs[0].token_ids)

        return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    async def in_process(tag: str) -> int:
        requests = single_turn_requests(tag, len(prompts))
        generations = await asyncio.gather(
            *(
                local_engine.generate(p, sampling, [end_of_turn], sampling_seed(r.episode_id, 0))
                for p, r in zip(prompts, requests)
            )
        )
        return sum(len(g.token_ids) for g in generations)

    def actor(tag: str) -> int:
        requests = single_turn_requests(tag, len(prompts))
        calls = [
            actor_engine.generate.remote(p, sampling, [end_of_turn], sampling_seed(r.episode_id, 0))
            for p, r in zip(prompts, requests)
        ]
        return sum(len(g.token_ids) for g in ray.get(calls))

    def rollout(tag: str) -> int:
        trajectories = coordinator.run(single_turn_requests(tag, len(prompts)))
        for trajectory, prompt in zip(trajectories, prompts):
            if trajectory.token_ids[: trajectory.prompt_length] != prompt or trajectory.num_turns != 1:
                raise RuntimeError(f"episode {trajectory.episode_id} did not play the benchmark prompt in one turn")
        return sum(t.num_policy_tokens for t in trajectories)

    return {
        "raw vLLM AsyncLLM, in-process": lambda tag: runner.run(raw(tag)),
        "InferenceEngine.generate, in-process (no Ray)": lambda tag: runner.run(in_process(tag)),
        "Ray engine actor, driver calls generate.remote": actor,
        "rollout path: 1 RolloutWorker, single-turn episodes": rollout,
    }


def measure_throughput(
    model_path: str,
    engine_config: EngineConfig,
    actor_engine: Any,
    sampling: SamplingConfig,
    prompts: list[list[int]],
    end_of_turn: int,
    repeats: int,
) -> list[Measurement]:
    """Part 1. The in-process engine's output handler task lives on one event loop for all its calls."""
    config = RolloutConfig(num_workers=1, max_concurrent_episodes=len(prompts), agent=AgentLoopConfig(max_turns=1))
    coordinator = RolloutCoordinator(model_path, [actor_engine], sampling, config)
    local_engine = InferenceEngine(model_path, engine_config)
    with asyncio.Runner() as runner:
        paths = throughput_paths(runner, local_engine, actor_engine, coordinator, sampling, prompts, end_of_turn)
        try:
            results = measure_interleaved(paths, repeats)
        finally:
            local_engine.shutdown()
            coordinator.shutdown()
    return results


def measure_episodes(model_path: str, engines: list, args: argparse.Namespace) -> list[EpisodeMeasurement]:
    """Part 2: the same multi-turn number_guess episodes at several concurrencies, one worker each time."""
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
    raw = throughput[0]
    print(f"\nGenerated tokens/s, {args.prompts} prompts x max {args.max_tokens} tokens, {args.repeats} interleaved rounds:")
    header = f"{'path':<52} {'median':>7} {'min-max':>11} {'vs raw':>7}"
    print(header)
    print("-" * len(header))
    for m in throughput:
        ratio = statistics.median(rate / base for rate, base in zip(m.rates, raw.rates))
        spread = f"{min(m.rates):.0f}-{max(m.rates):.0f}"
        print(f"{m.name:<52} {m.median:>7.0f} {spread:>11} {ratio:>7.2f}")
    ratios = [rate / base for rate, base in zip(throughput[-1].rates, raw.rates)]
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(
        f"\nratio rollout path / raw vLLM = {ratio:.2f}, the median of the per-round ratios "
        f"({min(ratios):.2f}-{max(ratios):.2f}; {verdict} the {TARGET_RATIO} target)"
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
    parser.add_argument("--prompts", type=int, default=64, help="prompts generated at once (part 1)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per prompt (part 1)")
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds after the warm-up (part 1)")
    parser.add_argument("--episodes", type=int, default=64, help="number_guess episodes per concurrency (part 2)")
    parser.add_argument("--turns", type=int, default=4, help="max turns per number_guess episode (part 2)")
    parser.add_argument("--episode-max-tokens", type=int, default=16, help="tokens per turn (part 2)")
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

        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)  # logical CPUs, as in the tests
        try:
            engines = start_engines(model_path, engine_config)
            try:
                print("part 1: tokens/s, the four paths in turn", flush=True)
                throughput = measure_throughput(
                    model_path, engine_config, engines[0], sampling, prompts, end_of_turn, args.repeats
                )
                print("part 2: number_guess episodes", flush=True)
                episodes = measure_episodes(model_path, engines, args)
            finally:
                ray.get([engine.shutdown.remote() for engine in engines])
        finally:
            ray.shutdown()
    print_report(args, throughput, episodes)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
