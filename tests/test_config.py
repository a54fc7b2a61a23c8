"""Config loading: YAML + dotted overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError, TerrariumConfig, load_config
from cluster.serve_command import ServeCommandConfig
from learner.rllib_baseline import BaselineFile

CONFIGS = Path(__file__).parent.parent / "configs"
# Every shipped config validates against the schema of the command that reads it; the rest are training configs.
OTHER_SCHEMAS = {"serve.yaml": ServeCommandConfig, "persona-baseline.yaml": BaselineFile}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path, [], OTHER_SCHEMAS.get(path.name, TerrariumConfig))


def test_override_sets_nested_value_with_yaml_types(tmp_path):
    config = load_config(None, ["engine.num_engines=3", "sampling.temperature=0.5", "model.path=/tmp/m"])
    assert config.engine.num_engines == 3
    assert config.sampling.temperature == 0.5
    assert config.model.path == "/tmp/m"


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"engine\.num_engine: unknown key"):
        load_config(None, ["engine.num_engine=2"])


def test_invalid_value_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  num_engines: zero\n")
    with pytest.raises(ConfigError, match=r"engine\.num_engines: .*integer"):
        load_config(bad)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["engine.num_engines"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["seed=1", "seed.x=2"])


def test_cluster_gpu_config_is_the_gpu_layout():
    config = load_config(Path(__file__).parent.parent / "configs" / "cluster-gpu.yaml")
    assert (config.engine.tensor_parallel_size, config.train.num_learner_ranks) == (2, 4)
    assert config.engine.num_engines > 1 and config.learner.bf16
    assert config.store.backend == "mongodb" and config.store.mongodb_uri is None  # URI from the environment
    assert Path(config.output_dir).is_absolute()  # a job's working directory is a temporary copy


def test_ray_up_manifest_validates_and_documents_the_entrypoint():
    """What `ray up` itself checks: defaults filled in, then Ray's cluster schema and node-type rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(__file__).parent.parent / "cluster" / "ray-cluster.yaml"
    validate_config(prepare_config(yaml.safe_load(path.read_text())))
    assert "ray job submit --working-dir . -- terrarium train configs/cluster-gpu.yaml" in path.read_text()
    assert "make setup-gpu" in " ".join(yaml.safe_load(path.read_text())["setup_commands"])


def test_kuberay_rayjob_runs_terrarium_train():
    path = Path(__file__).parent.parent / "cluster" / "kuberay-rayjob.yaml"
    job = yaml.safe_load(path.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"].endswith("terrarium train configs/cluster-gpu.yaml")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        int(group["replicas"]) * int(container["resources"]["limits"]["nvidia.com/gpu"])
        for group in workers
        for container in group["template"]["spec"]["containers"]
    )
    config = load_config(Path(__file__).parent.parent / "configs" / "cluster-gpu.yaml")
    needed = config.engine.num_engines * config.engine.tensor_parallel_size + config.train.num_learner_ranks
    assert gpus >= needed


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.micro_batch_size=2.5", r"learner\.micro_batch_size: .*integer"),
        ("learner.mini_batches=1.5", r"learner\.mini_batches: .*integer"),
        ("learner.policy_loss.clip_high=true", r"learner\.policy_loss\.clip_high: .*number"),
        ("learner.lrr=1e-5", r"learner\.lrr: unknown key"),
        ("learner.advantage.estimator=ppo", r"learner\.advantage\.estimator: "),
        ("learner.betas=[0.9, 1.5]", r"learner\.betas: .*betas must be two numbers"),
        ("sampling.temperature=true", r"sampling\.temperature: .*number"),
        ("run_name=..", r"run_name: .*names no directory"),
        ("run_name=a/b", r"run_name: "),
    ],
)
def test_every_section_is_strict_and_names_the_dotted_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_learner_sections_load_from_yaml_types():
    config = load_config(None, ["learner.betas=[0.8, 0.95]", "learner.lr=3e-5", "learner.policy_loss.dual_clip=null"])
    assert config.learner.betas == (0.8, 0.95) and config.learner.lr == 3e-5
    assert config.learner.policy_loss.dual_clip is None


def test_online_trainer_reuses_the_learner_optimizer_fields():
    from learner.group import LearnerConfig
    from learner.online_trainer import OnlineTrainerConfig
    from learner.optimizer import OptimizerConfig

    assert issubclass(LearnerConfig, OptimizerConfig) and issubclass(OnlineTrainerConfig, OptimizerConfig)
    shared = set(OptimizerConfig.model_fields)
    assert {"lr", "weight_decay", "grad_clip", "micro_batch_size"} <= shared
    for name in shared:
        assert OnlineTrainerConfig.model_fields[name].default == LearnerConfig.model_fields[name].default
    with pytest.raises(ConfigError, match=r"trainer\.micro_batch_size: .*integer"):
        load_config(None, ["trainer.micro_batch_size=2.5"], ServeCommandConfig)
