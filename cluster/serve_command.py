"""`terrarium serve [CONFIG] [KEY=VALUE ...]`: the policy service on Ray Serve until Ctrl-C.

    connect Ray (RAY_ADDRESS or a local one) -> [openai_api: learner's PolicyTrainer actor]
    [policy rllib: the RLlib checkpoint's policy] -> serve.app.run -> print the URL -> wait -> Ctrl-C

The cluster side owns the wiring: serve/ imports nothing from learner, so the trainer actor (which trains
/train requests and loads published checkpoints) is started here, and the RLlib policy loaded here, and both
are handed to the app. The engine is the app's own PolicyLLM deployment (serve.llm_server); the trainer
reaches it by the app's name. The config file is
serve.config.ServeConfig plus a `trainer` section (learner.online_trainer.OnlineTrainerConfig).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import ray
from pydantic import Field
from ray import serve

from cluster.config import load_config
from cluster.evaluation import load_checkpoint_policy
from cluster.placement import connect_ray
from learner.online_trainer import OnlineTrainerConfig, start_policy_trainer
from rollout.models.source import resolve_model_path
from serve.app import api_key
from serve.app import run as run_policy_service
from serve.config import ServeConfig
from serve.llm_server import ServedEngine


class ServeCommandConfig(ServeConfig):
    """configs/serve.yaml: the service's settings plus the /train update's, which belong to the learner."""

    trainer: OnlineTrainerConfig = Field(default_factory=OnlineTrainerConfig)

    def service(self) -> ServeConfig:
        """The service's settings with relative paths made absolute here: the replicas and the trainer actor
        that open them may run in another directory."""
        data = self.model_dump(exclude={"trainer"})
        for key in ("checkpoint", "run_dir"):
            if data[key] is not None:
                data[key] = str(Path(data[key]).resolve())
        if data["store"] is not None and data["store"]["root"] is not None:
            data["store"]["root"] = Path(data["store"]["root"]).resolve()
        return ServeConfig.model_validate(data)


def load_serve_config(path: str | Path | None, overrides: list[str] = ()) -> ServeCommandConfig:
    """The YAML file (or the defaults) with dotted overrides; an unknown key or bad value names the key."""
    return load_config(path, overrides, ServeCommandConfig)


def start_service(config: ServeCommandConfig) -> str:
    """Deploy the service on the connected Ray and return its URL (with openai_api: with the model's engine,
    from config.engine, ready)."""
    service = config.service()
    trainer = delta_policy = None
    if service.policy == "rllib":
        delta_policy = load_checkpoint_policy(f"rllib:{service.checkpoint}")
    if service.openai_api:
        model_path = str(resolve_model_path(service.model))
        engine = ServedEngine(service.app_name, config.trainer.sync_timeout_s, service.lora is not None)
        trainer = start_policy_trainer(model_path, config.trainer, engine)
    return run_policy_service(service, trainer, delta_policy)


def needed_cpus(config: ServeCommandConfig) -> float:
    """The Ray CPUs the service reserves: its replicas, and for a served model the engine (Ray Serve LLM's
    placement group: one CPU per vLLM worker) and the trainer. Logical CPUs: a 2-core laptop gets more
    than 2, or the ingress replicas would find no room next to the engine."""
    replicas = config.autoscaling.max_replicas if config.autoscaling is not None else config.num_replicas
    needed = replicas * config.replica_num_cpus
    if config.openai_api:
        needed += config.engine.tensor_parallel_size + config.trainer.num_cpus
    return needed


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve_forever(config: ServeCommandConfig) -> None:
    """Serve until Ctrl-C or SIGTERM, then delete the app (on a shared cluster, Serve itself keeps running).
    A missing API key (api_key_env names an unset variable) stops it before anything starts.

    Both signals get explicit handlers once the app is up: Python leaves SIGINT ignored when the process
    started with it ignored (anything launched in the background by a non-interactive shell, e.g. under CI
    or nohup ... &), and a library may have replaced the handler while the service started."""
    api_key(config)
    connect_ray(needed_cpus(config))
    try:
        url = start_service(config)
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, _stop)
        model = f"; OpenAI API on model {config.model_id!r}" if config.openai_api else ""
        print(f"Serving {config.app_name!r} ({config.policy} policy{model}) at {url}  (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt as interrupt:
        print(f"stopping {config.app_name!r} ({interrupt or 'SIGINT'})", flush=True)
    finally:
        start = time.monotonic()
        if config.app_name in serve.status().applications:
            serve.delete(config.app_name)  # Serve waits up to 60 s for the replicas, then raises TimeoutError
            print(f"deleted {config.app_name!r} in {time.monotonic() - start:.0f} s", flush=True)
        ray.shutdown()
        print(f"stopped in {time.monotonic() - start:.0f} s", flush=True)


def serve_main(config_path: str | None, overrides: list[str]) -> int:
    """The CLI's entry: CONFIG is optional, so a first argument with '=' that is no file is an override."""
    if config_path is not None and "=" in config_path and not Path(config_path).is_file():
        config_path, overrides = None, [config_path, *overrides]
    serve_forever(load_serve_config(config_path, overrides))
    return 0
