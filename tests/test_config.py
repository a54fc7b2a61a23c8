"""Config loading: YAML + dotted overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


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
