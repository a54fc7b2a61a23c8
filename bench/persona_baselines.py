"""Issue #8's table: persona policies on held-out personas, through the same evaluation as `terrarium eval`.

Rows: RustyWorm's refine_profile heuristic, PersonaExpert, and (given --rllib) the PPO checkpoint of
`terrarium baseline`. Columns: converged rate (convergence >= 0.90 within max_observations), mean observations
to converge (over converged personas; the product goal is <= 4), mean final convergence, and the training wall
time per 100 trajectories (RustyWorm's EvolutionTrajectory: one applied delta), read from the baseline run's
baseline_report.json; the heuristic and the expert are not trained. Held-out persona i is played with seed
i, so every policy faces the same personas (0..5 are RustyWorm's built-in profiles).

    python bench/persona_baselines.py [--rllib runs/persona-baseline/checkpoint] [--personas 200]

The GRPO-trained LLM has no row here yet: rollout.evaluation plays synchronous policies, and the LLM plays
through vLLM engines and the rollout workers (cluster.train's evaluation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learner.rllib_baseline import REPORT_FILE
from rollout.evaluation import EvalReport, evaluate


def training_seconds_per_100(checkpoint: str) -> float:
    """The baseline run's training wall time per 100 trajectories, from run_dir/baseline_report.json."""
    report_path = Path(checkpoint).resolve().parent / REPORT_FILE
    if not report_path.is_file():
        raise SystemExit(
            f"error: --rllib {checkpoint}: no {REPORT_FILE} beside it ({report_path}); "
            "give the run_dir/checkpoint that `terrarium baseline` wrote"
        )
    return float(json.loads(report_path.read_text())["seconds_per_100_trajectories"])


def row(name: str, report: EvalReport, seconds_per_100: float | None) -> str:
    observations = report.metrics.get("mean_steps_success")
    return (
        f"| {name} | {report.success_rate:.3f} | {'-' if observations is None else f'{observations:.2f}'} | "
        f"{report.metrics['mean_convergence']:.3f} | {'-' if seconds_per_100 is None else f'{seconds_per_100:.2f} s'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rllib", metavar="CHECKPOINT", help="the run_dir/checkpoint of `terrarium baseline`")
    parser.add_argument("--personas", type=int, default=200, help="held-out personas (seeds 0..N-1)")
    parser.add_argument("--max-observations", type=int, default=10)
    args = parser.parse_args()

    policies: list[tuple[str, str, float | None]] = [
        ("RustyWorm heuristic", "heuristic", None), ("PersonaExpert", "expert", None),
    ]
    if args.rllib:
        policies.append(("RLlib PPO", f"rllib:{args.rllib}", training_seconds_per_100(args.rllib)))
    harness_kwargs = {"split": "heldout", "max_observations": args.max_observations}

    print(f"{args.personas} held-out personas (seeds 0..{args.personas - 1}), max {args.max_observations} observations")
    print(
        "| policy | converged@0.90 | mean observations to converge | mean final convergence "
        "| training time / 100 trajectories |"
    )
    print("|---|---|---|---|---|")
    for name, policy, seconds_per_100 in policies:
        report = evaluate("persona", policy, args.personas, harness_kwargs=harness_kwargs)
        print(row(name, report, seconds_per_100), flush=True)


if __name__ == "__main__":
    main()
