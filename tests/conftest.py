"""Shared test fixtures: one local Ray cluster, one tiny model and one vLLM engine per test session.

Starting vLLM costs tens of seconds on this machine, so tests share the engine; a test that changes the
engine's weights puts the original ones back. Every test that uses Ray (these fixtures, directly or through
another fixture) is marked `ray` here; tests that start Ray or a cluster themselves carry the marker
explicitly. `pytest -m "not ray"` runs the rest, with no Ray started.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


RAY_FIXTURES = {"ray_session", "engine"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from rollout.models.corpus import harness_corpus
    from rollout.models.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", TinyModelSpec(), harness_corpus())


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # Logical CPUs: engines, rollout workers and learner ranks each reserve one; the 2 real cores are shared.
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def engine_config():
    from rollout.engine import EngineConfig

    # Every engine-side wait gives up after 45 s: long enough for a weight swap here, short enough that the
    # test of a hung swap (test_engine) does not wait the default 120 s.
    return EngineConfig(dtype="float32", max_model_len=2048, max_num_seqs=64, weight_sync_timeout_s=45)


@pytest.fixture(scope="session")
def engine(ray_session, tiny_model_dir, engine_config):
    from rollout.engine import start_engines

    (handle,) = start_engines(str(tiny_model_dir), engine_config)
    yield handle
    ray_session.get(handle.shutdown.remote())
