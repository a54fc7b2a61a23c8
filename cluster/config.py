"""Experiment configuration: YAML files in configs/, dotted overrides on the command line, validated on load.

Each package owns the model of its own section (rollout.engine.EngineConfig, ...); this module composes them.
Anything unknown or invalid is an error that names the dotted key and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollout.engine import EngineConfig, SamplingConfig
from rollout.model_source import ModelConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class TerrariumConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_name: str = Field("local", pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name


def apply_override(data: dict[str, Any], override: str) -> None:
    """`learner.lr=1e-5` -> data["learner"]["lr"] = 1e-5 (the value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. engine.num_engines=2")
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = yaml.safe_load(raw) if raw else ""


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TerrariumConfig:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    for override in overrides:
        apply_override(data, override)
    try:
        return TerrariumConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "(top level)"
            reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"  {key}: {reason} (got {error.get('input')!r})")
        source = path or "defaults"
        raise ConfigError(f"invalid config ({source}):\n" + "\n".join(problems)) from None
