"""`ray job submit --working-dir . -- terrarium train ...` against its own `ray start --head`, as a user runs it:
a run whose driver is killed midway, then resumed by submitting the same command again.

The head is a separate Ray cluster (own ports, own temp dir) so the session's Ray is not touched. It runs with
--block in a new process group that the fixture started, and is stopped by signalling that group: `ray stop`
would stop every Ray on the machine. The job installs nothing (no pip in its runtime_env): it inherits the
head's Python, whose bin directory is first on the head's PATH.

Ray 2.60 turns token authentication on for a new cluster (token in ~/.ray/auth_token, generated on first
start); the job server then answers 401 to a client that does not send it, and the job CLI only sends it
with RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from cluster.metrics import read_metrics
from cluster.status import read_status
from rollout.models.checkpoints import latest_checkpoint, read_checkpoint_state
from rollout.data.store import ParquetTrajectoryStore

REPO = Path(__file__).parent.parent
JOB_TIMEOUT_S = 1200  # engine start, a short SFT, one step and three small evaluations on 2 shared cores
HEAD_START_TIMEOUT_S = 180


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def head_env() -> dict[str, str]:
    """This interpreter's bin directory first on PATH (`ray`, `terrarium`), token authentication on, and no
    RAY_ADDRESS of another cluster."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    return env


def job_cli(address: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ray", "job", *args], cwd=REPO, env={**head_env(), "RAY_ADDRESS": address},
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def ray_head():
    """A Ray head with a dashboard (the job server); yields its dashboard address."""
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env_agent, metrics, node_manager, object_manager = (
        free_ports(9)
    )
    temp_dir = tempfile.mkdtemp(prefix="ray-job-test-", dir="/tmp")  # short: Ray's socket paths have a limit
    command = [
        "ray", "start", "--head", "--block", "--disable-usage-stats", "--num-cpus", "4", "--num-gpus", "0",
        "--object-store-memory", str(300 * 2**20), "--temp-dir", temp_dir,
        "--port", str(gcs), "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1",
        "--include-dashboard", "true", "--ray-client-server-port", str(client),
        "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env_agent), "--metrics-export-port", str(metrics),
        "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
    ]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(command, env=head_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # Ready when a job runs: the job server answers `ray job list` before the head's job agent has
        # registered, and a submit then fails with "No available agent to submit job" (seen under load).
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while (ready := job_cli(address, "submit", "--", "true", timeout=120)).returncode != 0:
            assert head.poll() is None, f"ray start exited: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"no job agent at {address}: {ready.stdout + ready.stderr}"
            time.sleep(2)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the group holds only the processes this head started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(2)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything that outlived the raylet
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray  # starts its own Ray head (ray start) and submits a job to it
def test_job_submit_trains_and_a_killed_driver_resumes(ray_head, tiny_model_dir, tmp_path):
    """A job killed (`ray job stop`: SIGTERM, then SIGKILL) once its first checkpoint landed; the same command
    submitted again resumes from the newest checkpoint and finishes, on the bundles the killed driver held."""
    steps = 60  # GRPO steps this small take about half a second: the kill lands somewhere in the run
    entrypoint = [
        "terrarium", "train", "configs/local.yaml", f"output_dir={tmp_path}", f"model.path={tiny_model_dir}",
        "run_name=job", f"train.steps={steps}", "train.checkpoint_every=2", "train.eval_episodes=2",
        "train.sft.episodes=4", "train.sft.epochs=1", "rollout.groups_per_step=2", "rollout.group_size=2",
        "rollout.agent.max_turns=2", "sampling.max_tokens=16", "train.async.max_staleness=0",
    ]
    run_dir = tmp_path / "job"
    first, second = (f"terrarium-test-{uuid.uuid4().hex[:8]}" for _ in range(2))

    submit = job_cli(ray_head, "submit", "--no-wait", "--submission-id", first, "--working-dir", ".", "--",
                     *entrypoint, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while latest_checkpoint(run_dir) is None:
        assert time.monotonic() < deadline, job_cli(ray_head, "logs", first, timeout=60).stdout[-6000:]
        time.sleep(0.5)
    stop = job_cli(ray_head, "stop", first, timeout=120)
    assert stop.returncode == 0 and f"Job '{first}' was stopped" in stop.stdout + stop.stderr
    killed_at = read_checkpoint_state(latest_checkpoint(run_dir)).policy_version
    assert killed_at < steps, "the first job finished before it was stopped"

    # Without --no-wait the CLI tails the job's logs until it ends and exits 1 if it failed.
    resumed = job_cli(ray_head, "submit", "--submission-id", second, "--working-dir", ".", "--", *entrypoint,
                      timeout=JOB_TIMEOUT_S)
    logs = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0 and f"Job '{second}' succeeded" in logs, logs[-6000:]
    # The job's driver joined the head's cluster (RAY_ADDRESS from the job supervisor), not a local one.
    assert "Connecting to existing Ray cluster" in logs and "Started a local Ray instance" not in logs
    resumed_at = int(re.search(r"resuming job at step (\d+)", logs).group(1))
    assert killed_at <= resumed_at < steps

    records = read_metrics(run_dir / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["phase"] == "train"]
    assert train_steps[-(steps - resumed_at):] == list(range(resumed_at + 1, steps + 1))  # the resumed run
    assert [r.get("label") for r in records].count("before") == 1  # no second warm start on resume
    assert records[-1]["label"] == "after"
    assert read_status(run_dir).finished
    store = ParquetTrajectoryStore(run_dir / "trajectories")
    assert store.steps("job") == list(range(steps))
    assert len(store.read("job")) == steps * 4  # a step replayed after the kill was not stored twice
