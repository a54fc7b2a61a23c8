"""Training metrics: one JSON line per record in the run directory, the same figures as Ray metrics (the
dashboard's metrics page and Prometheus/Grafana), and a PNG of the curves at the end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if r.get("phase") == "train"]
    if not records:
        return
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(steps, [r["mean_reward"] for r in records])
    axes[0].set(title="mean episode reward", xlabel="step")
    axes[1].plot(steps, [r["success_rate"] for r in records], label="success")
    axes[1].plot(steps, [r["parse_failure_rate"] for r in records], label="parse failures / turn")
    axes[1].set(title="rates", xlabel="step", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
