"""Training metrics: one JSON line per record in the run directory, the same figures as Ray metrics (the
dashboard's metrics page and Prometheus/Grafana), the held-out statistics of an evaluation (95% confidence
intervals, pass@k), and a PNG of the curves at the end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from ray.util.metrics import Gauge


GAUGE_PREFIX = "terrarium_"  # Prometheus sees ray_terrarium_<key>: Ray prefixes application metrics with ray_


class MetricsLog:
    """Every numeric field of a record becomes the gauge terrarium_<key>, tagged with the run name so one
    Grafana panel can hold several runs."""

    def __init__(self, path: Path, run_name: str) -> None:
        self.path = path
        self.run_name = run_name
        self._gauges: dict[str, Gauge] = {}

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                if key not in self._gauges:
                    self._gauges[key] = Gauge(
                        GAUGE_PREFIX + key, description=f"Terrarium training: {key}", tag_keys=("run",)
                    )
                self._gauges[key].set(float(value), tags={"run": self.run_name})


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation, 1.96 standard errors)."""
    if len(values) < 2:
        return fmean(values), math.inf
    return fmean(values), 1.96 * stdev(values) / math.sqrt(len(values))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of P(at least one of k samples succeeds) from n samples with c successes
    (Chen et al. 2021): 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def held_out_statistics(seeds: list[int], successes: list[bool], rewards: list[float]) -> dict[str, float]:
    """Per-seed means (every held-out seed played the same number of times, n) -> success and reward with 95%
    intervals over seeds, and pass@k for k = 1, 2, 4, ... <= n."""
    per_seed: dict[int, list[tuple[bool, float]]] = {}
    for seed, success, reward in zip(seeds, successes, rewards):
        per_seed.setdefault(seed, []).append((success, reward))
    n = min(len(played) for played in per_seed.values())
    _, success_ci = mean_ci95([fmean(s for s, _ in played) for played in per_seed.values()])
    _, reward_ci = mean_ci95([fmean(r for _, r in played) for played in per_seed.values()])
    stats = {
        "seeds": float(len(per_seed)),
        "samples_per_seed": float(n),
        "success_rate_ci95": success_ci,
        "mean_reward_ci95": reward_ci,
    }
    k = 1
    while k <= n:
        stats[f"pass_at_{k}"] = fmean(pass_at_k(n, sum(s for s, _ in played[:n]), k) for played in per_seed.values())
        k *= 2
    return stats


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, out_path: Path) -> None:
    """Eight panels over GRPO steps: reward and success (training episodes, and the held-out evaluations with
    their 95% intervals), the share of flat groups and the clip fraction, the policy entropy, the train/engine
    logprob gap, rollout tokens/s, the staleness histogram of the trained episodes (async training), and the
    learner's and engines' idle fractions with the weight-sync time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("phase") == "train"]
    if not train:
        return
    evals = [r for r in records if "eval_success_rate" in r and r.get("label") != "before"]  # from the start of GRPO
    eval_steps = [r["step"] for r in evals]
    steps = [r["step"] for r in train]

    def series(key: str) -> list[float]:
        return [r.get(key, math.nan) for r in train]

    def held_out(ax: Any, key: str) -> None:
        ax.errorbar(eval_steps, [r[f"eval_{key}"] for r in evals], yerr=[r.get(f"eval_{key}_ci95", 0) for r in evals],
                    fmt="o", capsize=3, label="held-out (95% CI)")

    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    ax = axes[0, 0]
    ax.plot(steps, series("mean_reward"), label="training episodes")
    held_out(ax, "mean_reward")
    ax.set(title="mean episode reward", xlabel="GRPO step")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(steps, series("success_rate"), label="success, training episodes")
    held_out(ax, "success_rate")
    ax.plot(steps, series("parse_failure_rate"), label="parse failures / turn")
    ax.set(title="success rate", xlabel="GRPO step", ylim=(0, 1))
    ax.legend()
    ax = axes[0, 2]
    ax.plot(steps, series("learner_flat_group_fraction"), label="groups with equal rewards (no gradient)")
    ax.plot(steps, series("learner_clip_fraction"), label="clip fraction")
    ax.set(title="flat groups, clipping", xlabel="GRPO step", ylim=(0, 1))
    ax.legend()
    ax = axes[1, 0]
    ax.plot(steps, series("learner_entropy"))
    ax.set(title="policy entropy (nats/token, sampled)", xlabel="GRPO step")
    ax = axes[1, 1]
    ax.plot(steps, series("learner_engine_logprob_abs_diff"), label="mean |logp train - logp engine|")
    ax.plot(steps, series("learner_engine_kl_k3"), label="KL(engine || train), k3")
    ax.set(title="train/engine logprob gap", xlabel="GRPO step", yscale="log")
    ax.legend()
    ax = axes[1, 2]
    ax.plot(steps, series("tokens_per_s"), label="rollouts")
    ax.plot(eval_steps, [r.get("eval_tokens_per_s", math.nan) for r in evals], "o", label="evaluations")
    ax.set(title="generated tokens/s", xlabel="GRPO step")
    ax.legend()
    ax = axes[0, 3]
    hists = [r.get("staleness_hist", {}) for r in train]
    bottom = [0] * len(train)
    for age in sorted({int(age) for hist in hists for age in hist}):
        counts = [hist.get(str(age), 0) for hist in hists]
        ax.bar(steps, counts, bottom=bottom, label=f"staleness {age}")
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.plot(steps, series("episodes_dropped_stale"), "k.", label="dropped: staler than K")
    ax.set(title="trained episodes by staleness (versions)", xlabel="GRPO step")
    ax.legend()
    ax = axes[1, 3]
    ax.plot(steps, series("learner_idle_fraction"), label="learner idle (waiting for rollouts)")
    ax.plot(steps, series("engine_idle_fraction"), label="engines idle (no episode playing)")
    ax.set(title="idle fractions of the step; weight sync", xlabel="GRPO step", ylim=(0, 1))
    ax.legend(loc="upper left")
    sync_ax = ax.twinx()
    sync_ax.plot(steps, series("sync_s"), "k:", label="weight sync (s, right)")
    sync_ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
