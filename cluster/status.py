"""`terrarium status`: where a run stands, read from its run directory only (no Ray needed).

The run directory holds everything: config.json (written at start), metrics.jsonl (one record per SFT epoch,
evaluation and GRPO step) and checkpoints/version_*/ (learner.checkpoint). A run is finished when its final
evaluation ("after", at the configured last step) is the last record of its log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cluster.metrics import read_metrics
from rollout.models.checkpoints import (
    CHECKPOINTS_DIR,
    STEP_DIR_PATTERN,
    CorruptCheckpointError,
    read_checkpoint_state,
)


@dataclass
class CheckpointInfo:
    policy_version: int
    optimizer_steps: int
    size_bytes: int
    written_at: datetime  # the time state.json was written: the checkpoint's last file


@dataclass
class RunStatus:
    run_dir: Path
    run_name: str
    total_steps: int | None  # from config.json; None when the run never wrote one
    step: int  # GRPO steps reached (the last train record)
    last_train: dict[str, Any] | None
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> the latest record of that label
    checkpoints: list[CheckpointInfo] = field(default_factory=list)  # oldest first
    finished: bool = False


def find_run_dir(run: str, output_dir: str | Path = "runs") -> Path:
    """`run` is a run directory, or the name of one under `output_dir`."""
    for candidate in (Path(run), Path(output_dir) / run):
        if (candidate / "config.json").is_file() or (candidate / "metrics.jsonl").is_file():
            return candidate.resolve()
    root = Path(output_dir)
    known = sorted(p.name for p in root.iterdir() if (p / "metrics.jsonl").is_file()) if root.is_dir() else []
    hint = f"runs under {root}: {', '.join(known)}" if known else f"no runs under {root}"
    raise ValueError(f"{run!r} is neither a run directory nor a run name ({hint})")


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints only: a writer killed midway leaves a hidden temporary directory, skipped here."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    infos = []
    for entry in root.iterdir():
        if STEP_DIR_PATTERN.match(entry.name) and (entry / "state.json").is_file():
            try:
                state = read_checkpoint_state(entry)
            except CorruptCheckpointError:  # damaged: training resumes from an earlier one, so list that
                continue
            written = datetime.fromtimestamp((entry / "state.json").stat().st_mtime, tz=timezone.utc)
            infos.append(CheckpointInfo(state.policy_version, state.step, directory_size(entry), written))
    return sorted(infos, key=lambda info: info.policy_version)


def read_status(run_dir: str | Path) -> RunStatus:
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    records = read_metrics(run_dir / "metrics.jsonl")
    train_records = [r for r in records if r.get("phase") == "train"]
    evals = {r["label"]: r for r in records if r.get("phase") == "eval"}
    total_steps = config.get("train", {}).get("steps")
    # The final evaluation is the last record a run writes; a rerun with more steps rewrites config.json.
    finished = bool(records) and records[-1].get("label") == "after" and records[-1].get("step") == total_steps
    return RunStatus(
        run_dir=run_dir.resolve(),
        run_name=config.get("run_name", run_dir.name),
        total_steps=total_steps,
        step=train_records[-1]["step"] if train_records else 0,
        last_train=train_records[-1] if train_records else None,
        evals=evals,
        checkpoints=list_checkpoints(run_dir),
        finished=finished,
    )


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format_record(record: dict[str, Any], skip: tuple[str, ...]) -> list[str]:
    return [f"    {key:<32} {_format_value(value)}" for key, value in record.items() if key not in skip]


def format_status(status: RunStatus) -> str:
    total = status.total_steps if status.total_steps is not None else "?"
    state = "finished" if status.finished else "not finished (rerun `terrarium train` to resume)"
    lines = [
        f"run {status.run_name}: {status.run_dir}",
        f"  step {status.step}/{total}, {state}",
    ]
    if status.last_train is not None:
        lines.append(f"  last train step ({status.last_train['step']}):")
        lines += _format_record(status.last_train, skip=("phase", "step"))
    for label, record in status.evals.items():
        lines.append(f"  eval {label} (step {record['step']}):")
        lines += _format_record(record, skip=("phase", "step", "label"))
    if status.checkpoints:
        lines.append("  checkpoints (policy version, optimizer steps, size, written UTC):")
        for info in status.checkpoints:
            lines.append(
                f"    version {info.policy_version:<6} steps {info.optimizer_steps:<6} "
                f"{info.size_bytes / 2**20:9.2f} MiB  {info.written_at:%Y-%m-%d %H:%M:%S}"
            )
    else:
        lines.append("  no checkpoints yet")
    return "\n".join(lines)
