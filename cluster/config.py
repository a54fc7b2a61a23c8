"""Experiment configuration: YAML files in configs/, dotted overrides on the command line, validated on load.

Each package owns the pydantic model of its own section (rollout.engine.EngineConfig, learner.group.LearnerConfig
with learner.losses.PolicyLossConfig and learner.advantages.AdvantageConfig, ...); this module composes them
(the verl pattern). Anything unknown or invalid is an error that names the dotted key and the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learner.group import LearnerConfig
from rollout.engine import EngineConfig, SamplingConfig
from rollout.models.source import ModelConfig
from rollout.data.store import StoreConfig
from rollout.worker import RolloutConfig


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-4 as a string; configs are full of learning rates written that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+)$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class SFTConfig(BaseModel):
    """Warm start on expert demonstrations before GRPO, for a model that cannot act in the harness yet."""

    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(0, ge=0, description="expert episodes (train seeds); 0 skips the warm start")
    policy: str = Field("expert", description="the demonstrator: a policy registered for the harness, or module:Factory")
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1, description="episodes per SFT step")


class AsyncConfig(BaseModel):
    """Asynchronous GRPO (README "Asynchronous training"): the rollouts of the next max_staleness steps run
    while the learner updates. The staleness of an episode trained at learner version v is v minus the oldest
    policy version among its turns; a group with an episode staler than max_staleness is never trained on."""

    model_config = ConfigDict(extra="forbid")

    max_staleness: int = Field(0, ge=0, description="K: steps the rollouts may run ahead of the learner; 0: synchronous")
    stale_data: Literal["drop", "wait"] = Field(
        "drop",
        description="a group left behind by min_groups_fraction that may grow staler than K: "
        "drop (trained only if it arrives within K, else dropped and counted) or wait (the step waits for it)",
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: int = Field(10, ge=1, description="GRPO steps; each plays rollout.groups_per_step x group_size episodes")
    num_learner_ranks: int = Field(1, ge=1)
    checkpoint_every: int = Field(5, ge=1)
    eval_every: int = Field(5, ge=0, description="0: evaluate only before and after training")
    eval_episodes: int = Field(32, ge=1, description="held-out seeds per evaluation")
    eval_samples: int = Field(1, ge=1, description="episodes per held-out seed; > 1 adds pass@k for k = 2, 4, ... <= it")
    before_eval_samples: int | None = Field(
        None, ge=1,
        description="episodes per held-out seed at the evaluation before training (null: eval_samples): an "
        "untrained model's pass@1 is the baseline, and its extra samples cost the most (it never ends early)",
    )
    eval_harness_kwargs: dict[str, Any] = Field({}, description='e.g. {"split": "heldout"} for persona')
    placement_timeout_s: float = Field(
        900.0, gt=0, description="deadline for reserving every engine and learner bundle (autoscalers are slow)"
    )
    publish_to: str | None = Field(
        None, description="the Serve app (its app_name) that every checkpoint is published to; null: none"
    )
    sft: SFTConfig = SFTConfig()
    async_: AsyncConfig = Field(AsyncConfig(), alias="async", description="YAML key train.async (a Python keyword)")
    min_groups_fraction: float = Field(
        1.0, gt=0, le=1,
        description="a step goes ahead once this share of its groups is complete; the rest are carried over "
        "to a later step (counted) and trained there unless too stale",
    )
    rollout_timeout_s: float = Field(
        3600.0, gt=0, description="the longest a step waits for its rollouts before the run stops with an error"
    )


class TerrariumConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_name: str = Field("local", pattern=r"^[A-Za-z0-9_.-]+$", description="one directory under output_dir")
    output_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    store: StoreConfig | None = None  # None: Parquet files under the run directory
    train: TrainConfig = TrainConfig()

    @field_validator("run_name")
    @classmethod
    def _run_name_is_one_directory(cls, value: str) -> str:
        if set(value) == {"."}:  # "." or "..": the run directory would be output_dir or its parent
            raise ValueError(f"run_name {value!r} names no directory of its own; use letters, digits, _ . -")
        return value

    @model_validator(mode="after")
    def _merged_lora_weights_travel_through_the_object_store(self) -> TerrariumConfig:
        merged_lora = self.learner.lora is not None and self.engine.lora_sync == "merged"
        if merged_lora and self.engine.weight_transfer == "nccl":
            raise ValueError(
                "learner.lora with engine.lora_sync=merged syncs through engine.weight_transfer=object_store only; "
                "engine.lora_sync=adapter sends the adapters alone"
            )
        return self

    @model_validator(mode="after")
    def _async_training_corrects_for_stale_logprobs(self) -> TerrariumConfig:
        if self.train.async_.max_staleness > 0 and self.learner.policy_loss.tis_cap is None:
            raise ValueError(
                "train.async.max_staleness > 0 trains on episodes sampled by older weights: it needs truncated "
                "importance sampling, learner.policy_loss.tis_cap (null turns it off; the default is 2.0)"
            )
        if self.train.min_groups_fraction < 1 and self.train.async_.stale_data == "wait":
            raise ValueError(
                "train.min_groups_fraction < 1 carries groups over to later steps, where they may be staler "
                "than train.async.max_staleness: that needs train.async.stale_data=drop (wait never drops)"
            )
        return self

    @property
    def engine_lora_rank(self) -> int | None:
        """start_engines' lora_rank: learner.lora's rank when the engines load the adapters themselves."""
        if self.learner.lora is not None and self.engine.lora_sync == "adapter":
            return self.learner.lora.rank
        return None

    @property
    def run_dir(self) -> Path:
        """Relative to the current directory unless output_dir is absolute. A Ray job runs in a temporary
        copy of its working directory, so jobs pass an absolute output_dir (the driver checks)."""
        return Path(self.output_dir) / self.run_name


def apply_override(data: dict[str, Any], override: str) -> None:
    """`learner.lr=1e-5` -> data["learner"]["lr"] = 1e-5 (the value parsed as YAML). An optional section that
    is null (off, e.g. `lora: null`) becomes a section: `lora.max_rank=16` turns it on."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. engine.num_engines=2")
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = _parse_yaml(raw) if raw else ""


Schema = TypeVar("Schema", bound=BaseModel)


def load_config(
    path: str | Path | None, overrides: list[str] = (), schema: type[Schema] = TerrariumConfig
) -> Schema:
    """A YAML file (or the defaults) with dotted overrides, validated by `schema` (a training config unless
    told otherwise: `terrarium serve` and `terrarium baseline` pass theirs). Errors name the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = _parse_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    for override in overrides:
        apply_override(data, override)
    try:
        # Strict, as JSON: 2.5 is no integer, true is no number, "1" is no float, for every section whoever owns
        # it; a YAML list still fills a tuple and a string a path, as in a JSON document.
        return schema.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            if error["loc"]:
                key = ".".join(str(part) for part in error["loc"])
                problems.append(f"  {key}: {reason} (got {error.get('input')!r})")
            else:  # a rule across keys: its message names them
                problems.append(f"  {reason}")
        raise ConfigError(f"invalid config ({path or 'defaults'}):\n" + "\n".join(problems)) from None
