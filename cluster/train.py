"""`terrarium train`: the GRPO training job, top to bottom.

    connect Ray -> model -> placement groups -> learner group (resume from the newest checkpoint)
    -> engines (+ weights)
    -> rollout workers -> evaluate (engines) beside [SFT warm start (learner)] -> [weight sync -> evaluate]
    -> for each step: rollouts -> store (durable) -> [submit the next K steps' rollouts] -> learner update
       -> weight sync -> metrics -> checkpoint
    -> evaluate -> curves

Resume is exact: the seeds of step k are a pure function of (config.seed, k), episode ids are stable and the
store skips ids it already has, so a run killed after its checkpoint at step k continues at step k with the
same state and neither repeats nor skips a step. In async mode the rollouts in flight at the kill belong to
steps after the checkpoint and are played again; groups carried over past the checkpoint are listed in its
data_position ("carried_groups") and played again too.
"""

from __future__ import annotations

import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import ray
from tqdm import tqdm
from transformers import AutoTokenizer

from cluster.config import TerrariumConfig
from cluster.metrics import MetricsLog, held_out_statistics, plot_curves
from cluster.placement import Placement, connect_ray, reserve
from learner.group import LearnerGroup
from rollout.chat import ChatRenderer
from rollout.demonstrations import expert_demonstrations
from rollout.engine import engine_cpus, start_engines
from rollout.models.checkpoints import latest_checkpoint
from rollout.models.source import resolve_model_path
from rollout.data.store import StoreConfig, TrajectoryStore, open_store
from rollout.data.trajectory import Trajectory
from rollout.evaluation import episode_summary
from rollout.worker import RolloutCoordinator, evaluation_requests, group_requests
from serve.app import publish
from serve.config import ServeConfig

HELDOUT_SEED_OFFSET = 1_000_000_000  # evaluation seeds never collide with training seeds (< 1e9)
RAY_JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor in a submitted job's entrypoint


def step_seeds(config: TerrariumConfig, step: int) -> list[int]:
    rng = random.Random(f"{config.seed}:{step}")
    return [rng.randrange(HELDOUT_SEED_OFFSET) for _ in range(config.rollout.groups_per_step)]


def evaluate(
    config: TerrariumConfig, coordinator: RolloutCoordinator, label: str, samples: int | None = None
) -> dict[str, float]:
    """The current policy on held-out seeds, `samples` (default train.eval_samples) episodes each: success
    (pass@1) and reward with 95% intervals over seeds, pass@k; eval_s is its wall time. The run's seed names
    the episodes too, so another seed samples other evaluation episodes, as it samples other training ones."""
    start = time.perf_counter()
    samples = samples or config.train.eval_samples
    seeds = [HELDOUT_SEED_OFFSET + i for i in range(config.train.eval_episodes) for _ in range(samples)]
    requests = evaluation_requests(
        config.run_name, f"{label}-seed{config.seed}", config.rollout.harness, seeds,
        {**config.rollout.harness_kwargs, **config.train.eval_harness_kwargs},
    )
    trajectories = coordinator.run(requests, config.train.rollout_timeout_s)
    eval_s = time.perf_counter() - start
    summary = episode_summary(trajectories)
    summary.update(held_out_statistics(
        seeds, [t.status == "completed" for t in trajectories], [t.total_reward for t in trajectories]
    ))
    summary["tokens_per_s"] = generated_tokens(trajectories) / eval_s
    return {**{f"eval_{key}": value for key, value in summary.items()}, "eval_s": eval_s}


def generated_tokens(trajectories: list[Trajectory]) -> int:
    return sum(len(t.token_ids) - t.prompt_length for t in trajectories)


def describe_evaluation(label: str, result: dict[str, float]) -> str:
    """One console line: the figures of the README's table."""
    passes = ", ".join(f"pass@{key.rsplit('_', 1)[1]} {value:.3f}" for key, value in result.items() if "pass_at" in key)
    return (
        f"{label}: success {result['eval_success_rate']:.3f} +- {result['eval_success_rate_ci95']:.3f}, "
        f"mean reward {result['eval_mean_reward']:.2f} +- {result['eval_mean_reward_ci95']:.2f} (95% CI), "
        f"{passes}, parse failures/turn {result['eval_parse_failure_rate']:.3f}; "
        f"{result['eval_seeds']:.0f} held-out seeds x {result['eval_samples_per_seed']:.0f}, "
        f"{result['eval_tokens_per_s']:.0f} tokens/s, {result['eval_s']:.0f} s"
    )


def describe_step(record: dict[str, Any]) -> str:
    """One console line per GRPO step: progress and the diagnostics that say whether the update can learn."""

    def get(key: str) -> float:  # the loss figures are absent when every group was flat
        return record.get(key, math.nan)

    return (
        f"step {record['step']}: reward {get('mean_reward'):.2f}, success {get('success_rate'):.3f}, "
        f"flat groups {get('learner_flat_group_fraction'):.2f}, entropy {get('learner_entropy'):.3f}, "
        f"clip {get('learner_clip_fraction'):.3f}, |logp train - engine| {get('learner_engine_logprob_abs_diff'):.1e}, "
        f"KL(engine||train) {get('learner_engine_kl_k3'):.1e}, {get('tokens_per_s'):.0f} tokens/s, "
        f"rollout {get('rollout_s'):.0f} s, update {get('learner_update_time_s'):.0f} s, sync {get('sync_s'):.1f} s; "
        f"staleness {record.get('staleness_hist', {})}, dropped stale groups {record.get('groups_dropped_stale', 0)}, "
        f"carried {record.get('groups_carried', 0)}, idle: learner {get('learner_idle_fraction'):.2f} "
        f"engines {get('engine_idle_fraction'):.2f}"
    )


@dataclass
class GroupInFlight:
    """A group's rollouts, submitted and not yet collected."""

    step: int  # the step whose rollouts it belongs to (its episode ids and seeds)
    call: ray.ObjectRef


def staleness(trajectory: Trajectory, learner_version: int) -> int:
    """How many versions behind the learner the oldest weights that sampled one of its turns are (0 for an
    episode that played no turn: nothing of it is trained on)."""
    return learner_version - trajectory.policy_version if trajectory.policy_version >= 0 else 0


def grpo(
    config: TerrariumConfig,
    run_dir: Path,
    learner: LearnerGroup,
    engines: list[Any],
    coordinator: RolloutCoordinator,
    store: TrajectoryStore,
    log: MetricsLog,
    start_step: int,
    carried: dict[str, int],
) -> None:
    """GRPO steps start_step .. train.steps - 1. The learner trains step k at policy version k. With
    train.async.max_staleness K > 0 the rollouts of steps k+1 .. k+K are submitted (at version k) before the
    learner updates on step k, so engines and learner work at the same time; K = 0 is the synchronous loop.
    A step goes ahead once train.min_groups_fraction of its groups are done (stale_data=drop); the rest are
    carried over and trained with a later step if they arrive within K versions, else dropped, all counted.
    `carried`: the groups carried over at the checkpoint resumed from (group id -> step), played again."""
    K = config.train.async_.max_staleness
    wait_for_all = config.train.async_.stale_data == "wait"
    timeout_s = config.train.rollout_timeout_s
    in_flight: dict[str, GroupInFlight] = {}  # in submission order

    def submit(step: int, only: set[str] | None = None) -> None:
        requests = group_requests(config.run_name, step, step_seeds(config, step), config.rollout)
        requests = [r for r in requests if only is None or r.group_id in only]
        for group_id, call in coordinator.submit(requests).items():
            in_flight[group_id] = GroupInFlight(step, call)

    for step in sorted(set(carried.values())):
        submit(step, set(carried))
    next_submit = start_step  # the first step whose rollouts are not submitted yet
    progress = tqdm(range(start_step, config.train.steps), initial=start_step, total=config.train.steps, desc="GRPO")
    for step in progress:
        t0 = time.perf_counter()
        busy_before = coordinator.busy_seconds()  # approximate: a worker with an episode playing counts as engine time
        if next_submit == step:
            submit(step)
            next_submit += 1
        own = {gid: g.call for gid, g in in_flight.items() if g.step == step}
        need = len(own) if wait_for_all else min(len(own), math.ceil(config.train.min_groups_fraction * len(own)))
        done = coordinator.collect(own, need, timeout_s)
        late = {gid: g.call for gid, g in in_flight.items() if g.step < step}  # carried over from earlier steps
        done.update(coordinator.collect(late, 0, timeout_s))
        rollout_s = time.perf_counter() - t0  # the learner waited for rollouts this long
        # Whole groups, oldest first; a group with an episode staler than K is never trained on.
        order = [gid for gid in in_flight if gid in done]
        for gid in order:
            del in_flight[gid]
        kept = [gid for gid in order if max(staleness(t, step) for t in done[gid]) <= K]
        dropped = [gid for gid in order if gid not in kept]
        trajectories = [t for gid in kept for t in done[gid]]
        for trajectory_step in sorted({t.step for t in trajectories}):  # durable before the learner sees them
            store.write(config.run_name, trajectory_step, [t for t in trajectories if t.step == trajectory_step])

        while next_submit <= min(step + K, config.train.steps - 1):  # runs while the learner updates
            submit(next_submit)
            next_submit += 1
        # An episode that ended before its first prompt (a harness reset that failed or ran past the episode
        # timeout) has nothing to train on; it is stored and counted (error_episodes, timeout_episodes).
        trainable = [t for t in trajectories if t.token_ids]
        update = learner.update(trainable) if trainable else {}
        sync_s = learner.sync_weights(engines, step + 1, config.engine)

        carried = {gid: g.step for gid, g in in_flight.items() if g.step <= step}
        ages = [staleness(t, step) for t in trajectories]
        record = {
            "phase": "train",
            "step": step + 1,
            "policy_version": step + 1,
            "episodes": len(trajectories),
            **(episode_summary(trajectories) if trajectories else {}),
            **{f"learner_{k}": v for k, v in update.items()},
            "rollout_s": rollout_s,
            "sync_s": sync_s,
            "staleness_hist": {str(age): ages.count(age) for age in sorted(set(ages))},
            "staleness_mean": fmean(ages) if ages else 0.0,
            "staleness_max": max(ages, default=0),
            "trained_groups": kept,
            "groups_trained": len(kept),
            "groups_carried": len(carried),
            "groups_dropped_stale": len(dropped),
            "episodes_dropped_stale": sum(len(done[gid]) for gid in dropped),
        }
        if (step + 1) % config.train.checkpoint_every == 0 or step + 1 == config.train.steps:
            position = {"train_step": step + 1, **({"carried_groups": carried} if carried else {})}
            checkpoint = learner.save_checkpoint(run_dir, step + 1, position)
            if config.train.publish_to:  # running replicas reload it in place, no request dropped
                publish(ServeConfig(app_name=config.train.publish_to), checkpoint, step + 1)
        record["step_s"] = step_s = time.perf_counter() - t0  # the training cost of the step: evaluations excluded
        busy = coordinator.busy_seconds()
        rollout_time = rollout_s if K == 0 else step_s  # async: the rollouts ran during the whole step
        record["episodes_per_s"] = len(trajectories) / rollout_time
        record["tokens_per_s"] = generated_tokens(trajectories) / rollout_time
        record["learner_idle_fraction"] = rollout_s / step_s
        record["engine_idle_fraction"] = min(1.0, max(0.0, 1.0 - (busy - busy_before) / step_s))
        progress.write(describe_step(record))
        if config.train.eval_every and (step + 1) % config.train.eval_every == 0 and step + 1 < config.train.steps:
            record.update(evaluate(config, coordinator, f"step{step + 1}"))
            progress.write(describe_evaluation(f"after {step + 1} GRPO steps", record))
        log.write(record)
        progress.set_postfix(
            reward=f"{record.get('mean_reward', math.nan):.2f}", success=f"{record.get('success_rate', math.nan):.2f}",
            staleness=f"{record['staleness_mean']:.2f}", sync_s=f"{sync_s:.2f}",
        )
    if in_flight:  # carried groups the run ended before training
        print(f"GRPO: {len(in_flight)} carried-over groups unfinished at the end of training, cancelled")
        coordinator.cancel({gid: g.call for gid, g in in_flight.items()})


def warm_start(config: TerrariumConfig, learner: LearnerGroup, model_path: Path, log: MetricsLog) -> None:
    sft = config.train.sft
    t0 = time.perf_counter()  # an epoch's sft_s: its updates; the first epoch's also the demonstrations
    renderer = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
    demos = expert_demonstrations(
        renderer, config.rollout.harness, list(range(sft.episodes)), config.run_name, config.rollout.harness_kwargs,
        sft.policy,
    )
    batches = [demos[i : i + sft.batch_size] for i in range(0, len(demos), sft.batch_size)]
    for epoch in range(sft.epochs):
        losses = [learner.sft_update(batch)["loss"] for batch in batches]
        sft_s = time.perf_counter() - t0
        log.write({"phase": "sft", "epoch": epoch, "sft_loss": fmean(losses), "sft_s": sft_s})
        t0 = time.perf_counter()
        print(f"SFT epoch {epoch + 1}/{sft.epochs}: loss {fmean(losses):.4f} on {len(demos)} {sft.policy} episodes, {sft_s:.0f} s")


def resolve_run_dir(config: TerrariumConfig) -> Path:
    """The run directory as an absolute path. In a Ray job the current directory is a temporary copy of
    the submitted working directory that Ray deletes later, so a relative output_dir is refused there."""
    if not Path(config.output_dir).is_absolute() and RAY_JOB_ENV_VAR in os.environ:
        raise ValueError(
            f"output_dir {config.output_dir!r} is relative, and in a Ray job it would land in a temporary copy "
            "of the working directory: pass an absolute one, e.g. `ray job submit --working-dir . -- "
            "terrarium train configs/local.yaml output_dir=$PWD/runs` (expanded at submit time)"
        )
    return config.run_dir.resolve()


def train(config: TerrariumConfig) -> dict[str, float]:
    run_dir = resolve_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2, by_alias=True))
    connect_ray(  # a local Ray has no GPUs: CPU engines
        config.engine.num_engines * engine_cpus(config.engine, use_gpu=False)
        + config.rollout.num_workers
        + config.train.num_learner_ranks * config.learner.num_cpus
    )
    model_path = resolve_model_path(config.model)
    placement = reserve(
        config.engine, config.train.num_learner_ranks, config.learner.num_cpus, config.train.placement_timeout_s,
        config.run_name,
    )
    try:
        return train_in_placement(config, run_dir, model_path, placement)
    finally:
        placement.remove()  # also ends any engine or learner rank left running by an error


def train_in_placement(
    config: TerrariumConfig, run_dir: Path, model_path: Path, placement: Placement
) -> dict[str, float]:
    store = open_store(config.store or StoreConfig(backend="parquet", root=run_dir / "trajectories"))
    log = MetricsLog(run_dir / "metrics.jsonl", config.run_name)

    learner = LearnerGroup(
        config.train.num_learner_ranks,
        model_path,
        config.learner,
        use_gpu=placement.use_gpu,
        placement_group=placement.learner_group,
    )
    checkpoint = latest_checkpoint(run_dir)
    start_step, carried = 0, {}
    if checkpoint is not None:
        position = learner.load_checkpoint(checkpoint).data_position
        start_step, carried = position["train_step"], position.get("carried_groups", {})
        print(f"resuming {config.run_name} at step {start_step} from {checkpoint}")
    engines = start_engines(
        str(model_path), config.engine, start_step, placement.engine_groups, lora_rank=config.engine_lora_rank
    )
    if checkpoint is not None:
        learner.sync_weights(engines, start_step, config.engine)
    coordinator = RolloutCoordinator(str(model_path), engines, config.sampling, config.rollout)

    if start_step == 0:
        # The engines evaluate the untrained weights while the learner runs SFT on its own copy: neither
        # waits for the other, and the learner's weights reach the engines only once both are done.
        with ThreadPoolExecutor(1, thread_name_prefix="eval-before") as pool:
            before_call = pool.submit(evaluate, config, coordinator, "before", config.train.before_eval_samples)
            if config.train.sft.episodes:
                warm_start(config, learner, model_path, log)
            before = before_call.result()
        log.write({"phase": "eval", "step": 0, "label": "before", **before})
        print(describe_evaluation("before training", before))
        if config.train.sft.episodes:
            learner.reset_optimizer()  # GRPO starts with its own Adam moments, not SFT's
            learner.sync_weights(engines, 0, config.engine)
            after_sft = evaluate(config, coordinator, "after-sft")
            log.write({"phase": "eval", "step": 0, "label": "after-sft", **after_sft})
            print(describe_evaluation("after SFT", after_sft))

    grpo_start = time.perf_counter()
    grpo(config, run_dir, learner, engines, coordinator, store, log, start_step, carried)
    print(f"GRPO: {config.train.steps - start_step} steps in {time.perf_counter() - grpo_start:.0f} s")
    after = evaluate(config, coordinator, "after")
    log.write({"phase": "eval", "step": config.train.steps, "label": "after", **after})
    print(describe_evaluation("after training", after))
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    print(f"metrics: {run_dir / 'metrics.jsonl'}  curves: {run_dir / 'curves.png'}")
    coordinator.shutdown()
    learner.shutdown()
    for engine in engines:
        ray.kill(engine)
    store.close()
    return after
