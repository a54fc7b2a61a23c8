"""A classic RL baseline for the persona task: PPO (RLlib's new API stack) with a small MLP on the numeric
persona environment, to compare the GRPO-trained LLM against.

The environment is rollout.harnesses.gym_env.HarnessEnv over a PersonaHarness of the train split: the flat
observation and action of PersonaHarness.numeric_spaces (RustyWorm's keyword features, marker rates, the
agent's profile, convergence and the share of observations used; one number in [-1, 1] per axis, applied as
amount 2a at confidence 1). Training runs in the driver process (num_env_runners=0 and a local learner by
default): the MLP is tiny and the machine has few cores, so remote actors would only add overhead.

`run_baseline` (the `terrarium baseline CONFIG` command) trains, saves the RLlib checkpoint in
`{output_dir}/{run_name}/checkpoint`, and evaluates the greedy policy on held-out personas through
rollout.evaluation with the policy "rllib:{checkpoint}". RLlibDeltaPolicy loads that checkpoint for both
evaluation (reset/act, the rollout policy interface) and /predict-delta (predict(profile, observation)).

A "trajectory" in the training-time figure is RustyWorm's EvolutionTrajectory: one delta applied to the
profile, i.e. one environment step.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rollout.evaluation import EvalReport, evaluate
from rollout.harnesses.base import Observation
from rollout.harnesses.gym_env import HarnessEnv
from rollout.harnesses.persona.harness import PersonaHarness
from rollout.harnesses.tools import Action
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta
from rollout.harnesses.persona.profiles import AXES

ENV_NAME = "terrarium-persona"
CHECKPOINT_DIR = "checkpoint"
METADATA_FILE = "terrarium_baseline.json"  # written into the checkpoint: what RLlibDeltaPolicy needs besides weights
REPORT_FILE = "baseline_report.json"


class BaselineConfig(BaseModel):
    """The `baseline:` section of configs/persona-baseline.yaml."""

    model_config = ConfigDict(extra="forbid")

    run_name: str = Field("persona-baseline", pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str = "runs"
    seed: int = 0
    iterations: int = Field(30, ge=1, description="PPO iterations, each samples train_batch_size env steps")
    max_observations: int = Field(10, ge=1, description="observations per persona episode (harness rule)")
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field([64, 64], min_length=1, description="MLP layers of policy and value nets")
    train_batch_size: int = Field(2000, ge=1, description="env steps (deltas) per iteration")
    minibatch_size: int = Field(250, ge=1)
    num_epochs: int = Field(6, ge=1, description="passes over each iteration's batch")
    lr: float = Field(1e-3, gt=0)
    gamma: float = Field(0.95, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    entropy_coeff: float = Field(0.0, ge=0)
    initial_action_std: float = Field(0.1, gt=0, le=1, description="the policy's std at the start (RLlib's: 1)")
    num_env_runners: int = Field(0, ge=0, description="0: sample in the driver process")
    num_envs_per_env_runner: int = Field(8, ge=1)
    ray_num_cpus: int = Field(2, ge=1, description="CPUs of the local Ray started when none is running")
    eval_personas: int = Field(200, ge=1, description="held-out personas for the final evaluation")
    eval_seed: int = Field(0, ge=0, description="held-out persona i is played with seed eval_seed + i")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name


class BaselineFile(BaseModel):
    """A `terrarium baseline` YAML file: one `baseline:` section (loaded by cluster.config.load_config)."""

    model_config = ConfigDict(extra="forbid")

    baseline: BaselineConfig = BaselineConfig()


def make_persona_env(env_config: dict[str, Any]) -> HarnessEnv:
    """RLlib's env creator: the numeric persona environment on train personas."""
    return HarnessEnv(PersonaHarness(split="train", max_observations=env_config["max_observations"]))


def ppo_config(config: BaselineConfig) -> Any:
    """The RLlib PPOConfig (new API stack) for this baseline."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_persona_env)
    return (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(ENV_NAME, env_config={"max_observations": config.max_observations})
        .env_runners(num_env_runners=config.num_env_runners, num_envs_per_env_runner=config.num_envs_per_env_runner)
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=config.train_batch_size,
            minibatch_size=min(config.minibatch_size, config.train_batch_size),
            num_epochs=config.num_epochs,
            lr=config.lr,
            gamma=config.gamma,
            lambda_=config.gae_lambda,
            entropy_coeff=config.entropy_coeff,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(config.hidden_sizes), vf_share_layers=False))
        .debugging(seed=config.seed)
    )


@dataclass
class TrainingResult:
    checkpoint: str
    iterations: int
    env_steps: int  # deltas applied = RustyWorm trajectories
    episodes: int
    train_seconds: float  # the PPO iterations (sampling + updates), not Ray start-up or algorithm build
    final_return_mean: float

    @property
    def seconds_per_100_trajectories(self) -> float:
        return 100.0 * self.train_seconds / max(1, self.env_steps)

    @property
    def seconds_per_100_episodes(self) -> float:
        return 100.0 * self.train_seconds / max(1, self.episodes)


def train_baseline(config: BaselineConfig, log: Any = print) -> TrainingResult:
    """PPO for config.iterations iterations on a running Ray; the checkpoint goes to run_dir/checkpoint."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS, EPISODE_LEN_MEAN, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED, NUM_EPISODES,
    )

    algorithm = ppo_config(config).build_algo()
    _start_cautious(algorithm, config.initial_action_std)
    env_steps = episodes = 0
    return_mean = float("nan")
    started = time.perf_counter()
    try:
        for iteration in range(1, config.iterations + 1):
            sampled = algorithm.train()[ENV_RUNNER_RESULTS]
            env_steps += int(sampled[NUM_ENV_STEPS_SAMPLED])
            episodes += int(sampled.get(NUM_EPISODES, 0))
            return_mean = float(sampled.get(EPISODE_RETURN_MEAN, float("nan")))
            log(
                f"iteration {iteration}/{config.iterations}: {env_steps} deltas, {episodes} episodes, "
                f"return {return_mean:+.3f}, episode length {float(sampled.get(EPISODE_LEN_MEAN, float('nan'))):.2f}, "
                f"{time.perf_counter() - started:.1f}s"
            )
        train_seconds = time.perf_counter() - started
        checkpoint = (config.run_dir / CHECKPOINT_DIR).resolve()
        algorithm.save_to_path(str(checkpoint))
    finally:
        algorithm.stop()
    metadata = {"max_observations": config.max_observations, "axes": list(AXES), "config": config.model_dump()}
    (checkpoint / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return TrainingResult(str(checkpoint), config.iterations, env_steps, episodes, train_seconds, return_mean)


def _start_cautious(algorithm: Any, initial_std: float) -> None:
    """PPO's usual policy-head init (CleanRL's 0.01 gain): mean actions near 0, the do-nothing delta, and a
    std of `initial_std`. RLlib starts at std 1, which on [-1, 1] actions (amounts of +-2) scrambles the
    profile at every step, and a few thousand episodes are not enough to unlearn that."""
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID

    def initialise(learner: Any) -> None:
        head = learner.module[DEFAULT_MODULE_ID].pi.net.mlp[-1]  # outputs [means, log stds] per axis
        with torch.no_grad():
            head.weight.mul_(0.01)
            head.bias[: len(AXES)].zero_()
            head.bias[len(AXES):].fill_(math.log(initial_std))

    algorithm.learner_group.foreach_learner(initialise)
    algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group, inference_only=True)


class RLlibDeltaPolicy:
    """The trained MLP as a persona policy: greedy (the Gaussian's mean), deterministic.

    Two interfaces: reset/act (rollout's policy protocol, for `terrarium eval --policy rllib:PATH`) and
    predict (a /predict-delta answer in RustyWorm's shapes).
    """

    def __init__(self, module: Any, max_observations: int) -> None:
        self.module = module
        self.max_observations = max_observations
        self._reader = PersonaHarness(max_observations=max_observations)
        self.observation_size = self._reader.numeric_spaces()[0].shape[0]

    @classmethod
    def load(cls, checkpoint_dir: str | Path) -> RLlibDeltaPolicy:
        """From the algorithm checkpoint that train_baseline writes (run_dir/checkpoint)."""
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
        from ray.rllib.core.rl_module.rl_module import RLModule

        checkpoint = Path(checkpoint_dir).resolve()  # RLlib reads a relative path as a URI without a scheme
        metadata_path = checkpoint / METADATA_FILE
        module_path = checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
        if not metadata_path.is_file() or not module_path.is_dir():
            raise ValueError(
                f"{checkpoint} is not a persona baseline checkpoint (expected {METADATA_FILE} and {module_path.relative_to(checkpoint)}); "
                "train one with `terrarium baseline CONFIG`"
            )
        metadata = json.loads(metadata_path.read_text())
        if metadata["axes"] != list(AXES):
            raise ValueError(f"{checkpoint} was trained on the axes {metadata['axes']}, this code has {list(AXES)}")
        policy = cls(RLModule.from_checkpoint(module_path), metadata["max_observations"])
        expected = policy.module.observation_space.shape
        if expected != (policy.observation_size,):
            raise ValueError(f"{checkpoint} expects observations of shape {expected}, the persona harness gives {policy.observation_size}")
        return policy

    def features(self, profile: AiProfile, observation: BehaviorObservation, observations_used: int) -> np.ndarray:
        """The harness's numeric observation for this state (read by the harness itself, so train and serve
        see the same numbers); similarity_to_target stands for the convergence."""
        reader = self._reader
        reader.profile, reader.behaviour = profile, observation
        reader.convergence = observation.similarity_to_target
        reader.current_step = min(max(0, observations_used), self.max_observations)
        return reader.numeric_observation()

    def action(self, features: np.ndarray) -> np.ndarray:
        """One number in [-1, 1] per axis: the mean of the policy's action distribution."""
        import torch
        from ray.rllib.core import Columns

        with torch.no_grad():
            output = self.module.forward_inference({Columns.OBS: torch.as_tensor(features, dtype=torch.float32)[None]})
        inputs = output[Columns.ACTION_DIST_INPUTS][0].numpy()
        return np.clip(inputs[: len(AXES)], -1.0, 1.0)  # [means, log stds] of a diagonal Gaussian

    def _apply_delta(self, profile: AiProfile, observation: BehaviorObservation, observations_used: int) -> Action:
        return self._reader.numeric_action(self.action(self.features(profile, observation, observations_used)))

    def predict(self, profile: AiProfile, observation: BehaviorObservation, observations_used: int = 0) -> PersonalityDelta:
        """The delta for one /predict-delta request. Confidence 1, so an axis the profile lacks is added with
        the same value an existing neutral axis would get. `observations_used`: how many observations of this
        target came before (RustyWorm's request does not say; 0 treats each request as the first)."""
        action = self._apply_delta(profile, observation, observations_used)
        return PersonalityDelta(
            adjustments=list(action.arguments["adjustments"].items()), confidence=action.arguments["confidence"], source="Observation"
        )

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, observation: Observation) -> Action:
        facts = observation.metadata
        if "observation" not in facts or "profile" not in facts:
            raise ValueError(f"RLlibDeltaPolicy reads a persona harness observation; got metadata keys {sorted(facts)}")
        behaviour = BehaviorObservation.model_validate(facts["observation"])
        behaviour = behaviour.model_copy(update={"similarity_to_target": facts["convergence"]})
        return self._apply_delta(AiProfile.model_validate(facts["profile"]), behaviour, facts["observations_used"])


@dataclass
class BaselineReport:
    """The held-out table row: converged rate at 0.90, observations to converge, final convergence, and the
    training cost."""

    checkpoint: str
    personas: int
    converged_rate: float
    mean_observations_to_converge: float | None  # over converged personas
    mean_final_convergence: float
    training: TrainingResult

    def row(self) -> str:
        observations = f"{self.mean_observations_to_converge:.2f}" if self.mean_observations_to_converge is not None else "-"
        return (
            f"| RLlib PPO (MLP {self.training.iterations} it.) | {self.converged_rate:.3f} | {observations} | "
            f"{self.mean_final_convergence:.3f} | {self.training.seconds_per_100_trajectories:.2f} s |"
        )


def evaluate_baseline(checkpoint: str | Path, personas: int, seed: int = 0, max_observations: int = 10) -> EvalReport:
    """The checkpoint's policy on held-out personas seed .. seed + personas - 1, through `terrarium eval`."""
    return evaluate(
        "persona", f"rllib:{checkpoint}", personas, seed=seed,
        harness_kwargs={"split": "heldout", "max_observations": max_observations},
        agent=RLlibDeltaPolicy.load(checkpoint),
    )


def run_baseline(config: BaselineConfig, log: Any = print) -> BaselineReport:
    """`terrarium baseline CONFIG`: train, checkpoint, evaluate; prints progress and the table row and writes
    run_dir/baseline_report.json. Starts a local Ray unless one is running (or RAY_ADDRESS names one)."""
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=config.ray_num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        log(f"PPO on the persona environment: {config.iterations} iterations x {config.train_batch_size} deltas")
        training = train_baseline(config, log)
    finally:
        if started_ray:
            ray.shutdown()
    log(f"checkpoint: {training.checkpoint}")
    log(f"evaluating on {config.eval_personas} held-out personas")
    evaluation = evaluate_baseline(training.checkpoint, config.eval_personas, config.eval_seed, config.max_observations)
    report = BaselineReport(
        checkpoint=training.checkpoint,
        personas=evaluation.episodes,
        converged_rate=evaluation.success_rate,
        mean_observations_to_converge=evaluation.metrics.get("mean_steps_success"),
        mean_final_convergence=evaluation.metrics["mean_convergence"],
        training=training,
    )
    (config.run_dir / REPORT_FILE).write_text(json.dumps(asdict(report) | {
        "seconds_per_100_trajectories": training.seconds_per_100_trajectories,
        "seconds_per_100_episodes": training.seconds_per_100_episodes,
    }, indent=2))
    log(
        f"trained {training.env_steps} deltas ({training.episodes} episodes) in {training.train_seconds:.1f}s: "
        f"{training.seconds_per_100_trajectories:.2f}s per 100 trajectories (deltas), "
        f"{training.seconds_per_100_episodes:.2f}s per 100 episodes"
    )
    log("| policy | converged@0.90 | mean observations to converge | mean final convergence | training time / 100 trajectories |")
    log("|---|---|---|---|---|")
    log(report.row())
    return report
