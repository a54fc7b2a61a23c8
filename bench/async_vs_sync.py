"""Synchronous GRPO against asynchronous GRPO (train.async.max_staleness 1) on the same config, taking turns.

One engine and one rollout coordinator serve both; each mode has its own learner (both start from the same
SFT warm start, when the config has one) and its own run directory, metrics and store under --out. The modes
take turns: --steps-per-turn steps of sync, then as many of async, --rounds times, so that the machine's load
drifts over both alike. Before its turn a mode's learner syncs its weights into the engine. An async turn
starts with an empty pipeline (its first step does not overlap), which counts against async.

Prints each mode's steps/hour (steps / the sum of their step_s), its learning curve (mean training reward
per step) and, last, `speedup=<async steps/hour / sync steps/hour>`.

Usage: python bench/async_vs_sync.py [configs/number_guess.yaml] [--rounds 3] [--steps-per-turn 4] [--out DIR]
       [override ...]   e.g. rollout.groups_per_step=8 train.sft.episodes=256
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ray

from cluster.config import load_config
from cluster.metrics import MetricsLog, read_metrics
from cluster.placement import connect_ray
from cluster.train import grpo, warm_start
from learner.group import LearnerGroup
from rollout.data.store import ParquetTrajectoryStore
from rollout.engine import engine_cpus, start_engines
from rollout.models.source import resolve_model_path
from rollout.worker import RolloutCoordinator

MODES = {"sync": 0, "async": 1}  # max_staleness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/number_guess.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for `terrarium train`")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-turn", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="run directories (default: a temporary one)")
    args = parser.parse_intermixed_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="async-vs-sync-"))
    total = args.rounds * args.steps_per_turn
    configs = {
        mode: load_config(args.config, [
            *args.overrides, f"output_dir={out}", f"run_name={mode}", f"train.steps={total}",
            f"train.async.max_staleness={k}", f"train.checkpoint_every={total}",
        ])
        for mode, k in MODES.items()
    }
    config = configs["sync"]
    connect_ray(config.engine.num_engines * engine_cpus(config.engine, use_gpu=False) + 2 + config.rollout.num_workers)
    model_path = resolve_model_path(config.model)
    learners = {mode: LearnerGroup(1, model_path, config.learner) for mode in MODES}
    engines = start_engines(str(model_path), config.engine)
    coordinator = RolloutCoordinator(str(model_path), engines, config.sampling, config.rollout)
    logs = {mode: MetricsLog(c.run_dir / "metrics.jsonl", mode) for mode, c in configs.items()}
    for mode, c in configs.items():
        c.run_dir.mkdir(parents=True, exist_ok=True)
    if config.train.sft.episodes:  # one warm start, copied into the other learner
        warm_start(config, learners["sync"], model_path, logs["sync"])
        start = learners["sync"].save_checkpoint(out / "sft", 0, {"train_step": 0})
        learners["async"].load_checkpoint(start)
    for learner in learners.values():
        learner.reset_optimizer()

    for round_ in range(args.rounds):
        first = round_ * args.steps_per_turn
        for mode, c in configs.items():
            turn = c.model_copy(update={"train": c.train.model_copy(update={"steps": first + args.steps_per_turn})})
            learners[mode].sync_weights(engines, first, c.engine)
            store = ParquetTrajectoryStore(c.run_dir / "trajectories")
            grpo(turn, c.run_dir, learners[mode], engines, coordinator, store, logs[mode], first, {})
            print(f"round {round_ + 1}/{args.rounds}: {mode} steps {first + 1}-{first + args.steps_per_turn} done")

    rates = {}
    for mode, c in configs.items():
        records = [r for r in read_metrics(c.run_dir / "metrics.jsonl") if r.get("phase") == "train"]
        seconds = sum(r["step_s"] for r in records)
        rates[mode] = 3600 * len(records) / seconds
        curve = " ".join(f"{r.get('mean_reward', float('nan')):.2f}" for r in records)
        idle = sum(r["learner_idle_fraction"] for r in records) / len(records)
        engine_idle = sum(r["engine_idle_fraction"] for r in records) / len(records)
        print(f"{mode}: {len(records)} steps in {seconds:.0f} s = {rates[mode]:.0f} steps/hour; mean idle: learner "
              f"{idle:.2f}, engines {engine_idle:.2f}; max staleness {max(r['staleness_max'] for r in records)}")
        print(f"{mode} learning curve (mean training reward per step): {curve}")
    coordinator.shutdown()
    for learner in learners.values():
        learner.shutdown()
    for engine in engines:
        ray.kill(engine)
    print(f"speedup={rates['async'] / rates['sync']:.2f}")


if __name__ == "__main__":
    main()
