"""Issue #8's table: persona policies on held-out personas, through the same evaluation as `terrarium eval`.

Rows: RustyWorm's refine_profile heuristic, PersonaExpert, (given --rllib) the PPO checkpoint of
`terrarium baseline`, and (given --llm) the GRPO-trained language model of `terrarium train
configs/persona.yaml`, played through vLLM engines and the rollout workers with --config's engine, sampling
and agent settings. Columns: converged rate (convergence >= 0.90 within max_observations), mean observations
to converge (over converged personas; the product goal is <= 4; for the LLM every reply counts, a reply that
is not a valid delta included), mean final convergence, and the training wall time per 100 trajectories
(RustyWorm's EvolutionTrajectory: one delta), read from the baseline run's baseline_report.json or the LLM
run's metrics.jsonl (GRPO steps; the SFT warm start is printed apart); the heuristic and the expert are not
trained. Held-out persona i is played with seed i, so every policy faces the same personas (0..5 are
RustyWorm's built-in profiles).

    python bench/persona_baselines.py [--rllib runs/persona-baseline/checkpoint] [--llm runs/persona] [--personas 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.config import load_config
from cluster.evaluation import evaluate_policy
from cluster.metrics import read_metrics
from learner.rllib_baseline import REPORT_FILE
from rollout.evaluation import EvalReport

METRICS_FILE = "metrics.jsonl"


def training_seconds_per_100(checkpoint: str) -> float:
    """The baseline run's training wall time per 100 trajectories, from run_dir/baseline_report.json."""
    report_path = Path(checkpoint).resolve().parent / REPORT_FILE
    if not report_path.is_file():
        raise SystemExit(
            f"error: --rllib {checkpoint}: no {REPORT_FILE} beside it ({report_path}); "
            "give the run_dir/checkpoint that `terrarium baseline` wrote"
        )
    return float(json.loads(report_path.read_text())["seconds_per_100_trajectories"])


def grpo_training_time(run_dir: str) -> tuple[float, str]:
    """The GRPO steps' wall time per 100 trajectories (deltas: model replies) of a `terrarium train` run,
    and a line with the per-episode figure and the SFT warm start's time (a one-off cost, not in the first)."""
    records = read_metrics(Path(run_dir) / METRICS_FILE)
    steps = [r for r in records if r.get("phase") == "train" and "step_s" in r]
    if not steps:
        raise SystemExit(f"error: --llm {run_dir}: no timed GRPO steps in {Path(run_dir) / METRICS_FILE}")
    seconds = sum(r["step_s"] for r in steps)
    episodes = sum(r["episodes"] for r in steps)
    replies = sum(r["episodes"] * r["mean_steps"] for r in steps)
    sft_s = sum(r["sft_s"] for r in records if r.get("phase") == "sft")
    note = (
        f"GRPO LLM training: {len(steps)} steps, {episodes} episodes, {replies:.0f} deltas in {seconds:.0f} s "
        f"({100 * seconds / episodes:.1f} s per 100 episodes); SFT warm start {sft_s:.0f} s before it"
    )
    return 100 * seconds / replies, note


def row(name: str, report: EvalReport, seconds_per_100: float | None) -> str:
    observations = report.metrics.get("mean_steps_success")
    return (
        f"| {name} | {report.success_rate:.3f} | {'-' if observations is None else f'{observations:.2f}'} | "
        f"{report.metrics['mean_convergence']:.3f} | {'-' if seconds_per_100 is None else f'{seconds_per_100:.2f} s'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rllib", metavar="CHECKPOINT", help="the run_dir/checkpoint of `terrarium baseline`")
    parser.add_argument("--llm", metavar="RUN_DIR", help="the run directory of `terrarium train`: its newest checkpoint")
    parser.add_argument("--config", default="configs/persona.yaml", help="--llm: its training config")
    parser.add_argument("overrides", nargs="*", help="--llm: dotted config overrides, e.g. sampling.temperature=0")
    parser.add_argument("--personas", type=int, default=200, help="held-out personas (seeds 0..N-1)")
    parser.add_argument("--max-observations", type=int, default=10)
    args = parser.parse_args()

    policies: list[tuple[str, str, float | None]] = [
        ("RustyWorm heuristic", "heuristic", None), ("PersonaExpert", "expert", None),
    ]
    if args.rllib:
        policies.append(("RLlib PPO", f"rllib:{args.rllib}", training_seconds_per_100(args.rllib)))
    notes = []
    if args.llm:
        seconds_per_100, note = grpo_training_time(args.llm)
        policies.append(("GRPO-trained LLM", f"llm:{args.llm}", seconds_per_100))
        notes.append(note)
    # An LLM reply is an observation spent, valid or not: at most max_observations replies per persona.
    max_turns = f"rollout.agent.max_turns={args.max_observations}"
    config = load_config(args.config, [*args.overrides, max_turns]) if args.llm else None
    harness_kwargs = {"split": "heldout", "max_observations": args.max_observations}

    print(f"{args.personas} held-out personas (seeds 0..{args.personas - 1}), max {args.max_observations} observations")
    print(
        "| policy | converged@0.90 | mean observations to converge | mean final convergence "
        "| training time / 100 trajectories |"
    )
    print("|---|---|---|---|---|")
    for name, policy, seconds_per_100 in policies:
        report = evaluate_policy("persona", policy, args.personas, harness_kwargs=harness_kwargs, config=config)
        print(row(name, report, seconds_per_100), flush=True)
        if "parse_failure_rate" in report.metrics:
            notes.append(
                f"{name}: {report.metrics['parse_failure_rate']:.3f} parse failures per turn, "
                f"statuses {', '.join(f'{k[7:]} {v:.3f}' for k, v in report.metrics.items() if k.startswith('status_'))}"
            )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
