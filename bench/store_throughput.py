"""Trajectories per second through the Parquet trajectory store: durable writes, reads back as Trajectory
records, and a whole-run read as an Arrow table.

Usage (from the repository root):
  PYTHONPATH=. python bench/store_throughput.py [--trajectories 1000] [--tokens 500] [--per-step 100]
                                                [--batch-size 100] [--root DIR]
Each step's trajectories are written in calls of --batch-size (each call one fsynced, renamed file), so
--batch-size 1 is the worst case: a worker that writes every episode on its own.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rollout.data.store import ParquetTrajectoryStore
from rollout.data.trajectory import Trajectory


def make_trajectories(count: int, tokens: int, per_step: int, rng: random.Random) -> list[Trajectory]:
    prompt_length = tokens // 5
    trajectories = []
    for index in range(count):
        step = index // per_step
        trajectories.append(
            Trajectory(
                episode_id=f"bench-s{step}-e{index}",
                run_id="bench",
                step=step,
                group_id=f"g{index // 8}",
                harness="number_guess",
                seed=index // 8,
                policy_version=step,
                token_ids=[rng.randrange(150_000) for _ in range(tokens)],
                loss_mask=[0] * prompt_length + [1] * (tokens - prompt_length),
                logprobs=[0.0] * prompt_length + [-rng.expovariate(2.0) for _ in range(tokens - prompt_length)],
                prompt_length=prompt_length,
                turn_rewards=[rng.random() for _ in range(4)],
                total_reward=rng.random(),
                status="completed",
                num_turns=4,
                timings={"generate": rng.random(), "harness": rng.random(), "total": rng.random()},
                metadata={"target": rng.randrange(100)},
            )
        )
    return trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=500, help="tokens per trajectory")
    parser.add_argument("--per-step", type=int, default=100, help="trajectories per training step")
    parser.add_argument("--batch-size", type=int, default=100, help="trajectories per write call")
    parser.add_argument("--root", type=Path, default=None, help="store directory (default: a temp directory)")
    args = parser.parse_args()

    if args.batch_size > args.per_step or args.per_step % args.batch_size:
        parser.error("--batch-size must divide --per-step (a write call holds one step's trajectories)")
    trajectories = make_trajectories(args.trajectories, args.tokens, args.per_step, random.Random(0))
    batches = [trajectories[i : i + args.batch_size] for i in range(0, len(trajectories), args.batch_size)]
    with tempfile.TemporaryDirectory() as temp_dir:
        store = ParquetTrajectoryStore(args.root or Path(temp_dir))

        start = time.perf_counter()
        for batch in batches:
            store.write("bench", batch[0].step, batch)
        write_s = time.perf_counter() - start

        start = time.perf_counter()
        store.write("bench", 0, batches[0])  # a replay: every episode id is already stored
        replay_s = time.perf_counter() - start

        start = time.perf_counter()
        read_back = store.read("bench")
        read_s = time.perf_counter() - start

        start = time.perf_counter()
        table = store.dataset("bench").to_table()
        table_s = time.perf_counter() - start

        disk_bytes = sum(p.stat().st_size for p in store.root.rglob("*.parquet"))
        store.close()

    assert len(read_back) == table.num_rows == len(trajectories)
    n = len(trajectories)
    print(f"{n} trajectories x {args.tokens} tokens, {args.per_step} per step, "
          f"{len(batches)} writes of {args.batch_size}")
    print(f"write (durable):       {n / write_s:10.0f} trajectories/s  ({write_s:.3f} s)")
    print(f"replayed batch write:  {replay_s * 1000:10.1f} ms for {len(batches[0])} duplicates (nothing written)")
    print(f"read -> Trajectory:    {n / read_s:10.0f} trajectories/s  ({read_s:.3f} s)")
    print(f"read -> Arrow table:   {n / table_s:10.0f} trajectories/s  ({table_s:.3f} s)")
    print(f"on disk: {disk_bytes / 1e6:.2f} MB ({disk_bytes / n / 1e3:.1f} kB per trajectory)")


if __name__ == "__main__":
    main()
