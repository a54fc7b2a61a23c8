"""The policy service over real HTTP: Ray Serve on the session's Ray, its own PolicyLLM deployment (Ray Serve
LLM's LLMServer, vLLM on the untrained tiny model) behind both the OpenAI API and RustyWorm's endpoints.

The services start as `terrarium serve` starts them (configs/serve.yaml plus overrides, cluster.serve_command),
on 127.0.0.1 and a free port; one test runs the command itself. Requests are written in RustyWorm's exact
serde JSON. The tiny model's replies are never a valid apply_delta
call, so /predict-delta exercises the fallback to the persona expert; the parsing of valid replies is tested
on text. /train really updates the served engine's weights (hot reloads), which the module's app owns. The
OpenAI API is exercised with the official openai client.
Policy rllib serves a PPO checkpoint trained here for one tiny iteration (no engine).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
from ray.exceptions import RayTaskError
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.config import ConfigError
from cluster.serve_command import ServeCommandConfig, load_serve_config, start_service
from learner.checkpoint import CheckpointState, capture_rng_state, save_checkpoint
from learner.batch import token_logprobs
from learner.lora import LoraConfig, apply_lora, lora_adapter
from learner.advantages import weighted_advantages
from learner.online_trainer import normalise_importance_weights
from learner.rllib_baseline import BaselineConfig, RLlibDeltaPolicy, train_baseline
from rollout.chat import ChatRenderer, system_prompt
from rollout.engine import SamplingConfig, serialize_state_dict
from serve.llm_server import DEPLOYMENT_NAME, fingerprint
from rollout.harnesses.persona.harness import PersonaHarness, first_observation_text
from rollout.harnesses.tools import ActionParseError, format_action
from rollout.harnesses.persona.client import EvidenceClientPolicy, play_episode
from rollout.harnesses.persona.estimator import predict_delta
from rollout.harnesses.persona.generators import GENERATORS, family_persona
from rollout.harnesses.persona.evidence_policy import EvidencePolicy
from rollout.harnesses.persona.similarity_guard import SimilarityGuard
from rollout.harnesses.persona.models import (
    AiProfile,
    BehaviorObservation,
    EvolutionTrajectory,
    PersonalityDelta,
    apply_correction,
)
from rollout.data.store import open_store
from serve.app import EVOLUTION_KIND, build_app, publish
from serve.config import ServeConfig, ServeLoraSettings
from rollout.harnesses.persona.policy_format import PersonaPolicyFormat, delta_action, parse_delta, reply_grammar
from serve.schemas import PredictDeltaResponse, TrainResponse
from tests.test_lora import adapter_with, rank_over_the_limit, wrong_shape

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = REPO_ROOT / "configs" / "serve.yaml"
API_KEY_ENV = "TERRARIUM_TEST_SERVE_KEY"
API_KEY = "test-key-5f1d"

# A RustyWorm profile as serde writes it: a Hybrid reasoning style, an axis outside the harness's list
# ("sarcasm"), and no "formality" axis, which the formal response below makes the expert add.
PROFILE_JSON = """{
  "id": "llama3-mimic",
  "display_name": "Llama 3 (mimic)",
  "version": "1.0",
  "provider": "meta",
  "description": "Evolving toward llama3",
  "reasoning_style": {"Hybrid": ["ChainOfThought", "DirectWithDepth"]},
  "personality": [
    {"name": "confidence", "value": 0.5, "negative_pole": "uncertain", "positive_pole": "confident"},
    {"name": "verbosity", "value": 0.4, "negative_pole": "terse", "positive_pole": "verbose"},
    {"name": "sarcasm", "value": -0.2, "negative_pole": "earnest", "positive_pole": "sarcastic"}
  ],
  "response_style": {
    "verbosity": 0.4, "formality": 0.5, "uses_markdown": true, "uses_code_blocks": true, "uses_emojis": false,
    "preferred_list_style": "Bullets", "max_response_length": null, "paragraph_style": "Adaptive"
  },
  "safety": {
    "refuses_harmful": true, "refuses_illegal": true, "hedges_uncertainty": true, "adds_disclaimers": false,
    "caution_level": 0.7, "custom_constraints": []
  },
  "supported_modalities": ["text"],
  "max_context_window": 8192,
  "supports_function_calling": false,
  "supports_streaming": true,
  "signature_phrases": ["Here's"],
  "avoids_phrases": [],
  "knowledge_cutoff": "2023-12",
  "uncertainty_behavior": "HedgeWithCaveats",
  "metadata": {"source": "rustyworm"}
}"""

OBSERVATION_JSON = """{
  "query": "How should I structure a database migration?",
  "response": "Therefore the migration must commence with a backup. Additionally, ensure the schema is adequate \
prior to deployment. Furthermore, the rollback plan is essential.",
  "patterns": ["Tone: neutral", "Structure: prose"],
  "similarity_to_target": 0.667,
  "confidence": 0.8
}"""

PREDICT_JSON = '{"profile": ' + PROFILE_JSON + ', "observation": ' + OBSERVATION_JSON + "}"

TRAJECTORY_JSON = (
    '{"id": "6f1c2e8a-3b7d-4c59-9a2e-1d4b5c6e7f80", "state": ' + PROFILE_JSON + ", "
    '"action": {"adjustments": [["confidence", 0.1], ["formality", 0.3]], "confidence": 0.8, "source": "Observation"}, '
    '"observation": ' + OBSERVATION_JSON + ', "reward": 0.25, "next_state": ' + PROFILE_JSON + ", "
    '"timestamp": "2025-01-31T12:00:00.123456789Z", "used_in_training": false, "importance_weight": 1.0}'
)


@dataclass
class Service:
    url: str
    config: ServeCommandConfig
    secure_url: str
    secure_config: ServeCommandConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_port(ray_session):
    """One Serve HTTP proxy for the module's apps (a running Serve keeps its port), on a free port."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def service(ray_session, serve_port, tiny_model_dir, tmp_path_factory):
    from ray import serve

    port = serve_port
    config = load_serve_config(
        SERVE_CONFIG,
        [
            "app_name=test-persona", "policy=llm", f"port={port}", f"model.path={tiny_model_dir}", "sampling.max_tokens=24",
            "max_body_bytes=65536", "replica_num_cpus=0.1", "num_replicas=2", f"store.root={tmp_path_factory.mktemp('serve-store')}",
            "trainer.lr=1e-3", "trainer.num_cpus=0.1", "lora.max_rank=4", "lora.max_adapters=2",
        ],
    )
    secure = load_serve_config(
        SERVE_CONFIG,
        [
            "app_name=test-secure", f"port={port}", "route_prefix=/secure", "policy=expert", "openai_api=false",
            f"api_key_env={API_KEY_ENV}", "replica_num_cpus=0.1",
            f"store.root={tmp_path_factory.mktemp('secure-store')}",
        ],
    )
    os.environ[API_KEY_ENV] = API_KEY
    try:
        url = start_service(config)  # with its PolicyLLM deployment: the module's one engine
        secure_url = start_service(secure)
        assert url == f"http://127.0.0.1:{port}/" and secure_url == f"http://127.0.0.1:{port}/secure"
        yield Service(url.rstrip("/"), config, secure_url, secure)
    finally:
        if config.app_name in serve.status().applications:
            ray_session.kill(serve.get_app_handle(config.app_name).get_build.remote().result().trainer)
        for app_name in (config.app_name, secure.app_name):
            if app_name in serve.status().applications:
                serve.delete(app_name)
        os.environ.pop(API_KEY_ENV, None)


@pytest.fixture(scope="module")
def llm(service):
    """The app's PolicyLLM deployment, called as the ingress and the trainer call it."""
    from ray import serve

    return serve.get_deployment_handle(DEPLOYMENT_NAME, service.config.app_name)


def _version(llm) -> int:
    return llm.get_policy_version.remote().result(timeout_s=60)


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=120) as http:
        yield http


def _post_json(client: httpx.Client, path: str, text: str) -> httpx.Response:
    return client.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def _trajectories(rewards: list[float], first_index: int = 0) -> list[dict]:
    first = json.loads(TRAJECTORY_JSON)
    records = []
    for index, reward in enumerate(rewards):
        record = copy.deepcopy(first)
        record["id"] = f"6f1c2e8a-3b7d-4c59-9a2e-1d4b5c6e{first_index + index:04d}"
        record["reward"] = reward
        record["action"]["adjustments"][0][1] = 0.1 * (index + 1)
        records.append(record)
    return records


# ---- pieces, no Ray -------------------------------------------------------------------------------------


def test_importance_weights_average_one_and_unusable_ones_are_dropped():
    weights = normalise_importance_weights([2.0, 0.0, float("nan"), 4.0, -1.0, None, float("inf")])
    assert weights == pytest.approx([2 / 3, 0.0, 0.0, 4 / 3, 0.0, 0.0, 0.0])
    assert normalise_importance_weights([0.0, -2.0]) == [0.0, 0.0]


def test_weighted_advantages_are_a_zero_sum_baseline():
    rewards, weights = [0.5, -0.2, 0.3], [0.5, 1.0, 1.5]
    advantages = weighted_advantages(rewards, weights)
    assert sum(w * a for w, a in zip(weights, advantages)) == pytest.approx(0.0, abs=1e-9)
    assert advantages[0] > 0 > advantages[1]
    assert weighted_advantages([0.2, 0.2], [1.0, 1.0]) is None


def test_valid_reply_becomes_a_clamped_delta():
    profile = AiProfile.model_validate_json(PROFILE_JSON)
    arguments = {"adjustments": {"confidence": 3.5, "formality": 0.6}, "confidence": 0.5}
    reply = json.dumps({"name": "apply_delta", "arguments": arguments})
    delta = parse_delta(reply, profile)
    # confidence is clamped to the action space's 2.0; formality is missing, so its amount is scaled by the
    # confidence, because RustyWorm adds a missing axis unscaled.
    assert delta.adjustments == [("confidence", 2.0), ("formality", 0.3)]
    assert delta.confidence == 0.5 and delta.source == "Observation"
    updated = apply_correction(profile, delta)
    assert updated.personality_value("confidence") == 1.0
    assert updated.personality_value("formality") == pytest.approx(0.3)


@pytest.mark.parametrize(
    "reply",
    [
        "the weather is nice",
        # an axis neither the harness nor the profile has ("sarcasm", the profile's own, is allowed)
        '<tool_call>{"name": "apply_delta", "arguments": {"adjustments": {"zest": 0.5}, "confidence": 1}}'
        "</tool_call>",
        '{"name": "apply_delta", "arguments": {"adjustments": {"humor": "lots"}, "confidence": 1}}',
        '{"name": "apply_delta", "arguments": {"adjustments": [["humor", 0.1]], "confidence": 1}}',
        '{"name": "apply_delta", "arguments": {"adjustments": {}}}',
        "apply_delta humor 0.5",
        # absurd numbers: a 309-digit integer overflowed float() (a 500); past 4,300 digits int() itself failed
        '{"name": "apply_delta", "arguments": {"adjustments": {"humor": 1' + "0" * 308 + '}, "confidence": 1}}',
        '{"name": "apply_delta", "arguments": {"adjustments": {"humor": 1}, "confidence": ' + "9" * 5000 + "}}",
        '{"name": "apply_delta", "arguments": {"adjustments": {"humor": 1e400}, "confidence": 1}}',
    ],
)
def test_unusable_replies_are_refused(reply):
    with pytest.raises(ActionParseError):
        parse_delta(reply, AiProfile.model_validate_json(PROFILE_JSON))


def test_training_text_reads_back_as_the_action():
    profile = AiProfile.model_validate_json(PROFILE_JSON)
    action = PersonalityDelta(
        adjustments=[("confidence", 0.1), ("formality", 0.3), ("sarcasm", 0.4), ("zest", 0.2)], confidence=0.8)
    written = delta_action(action, profile)
    back = parse_delta(format_action(written), profile)
    # "sarcasm" is the profile's own axis, so the model can write it too; "zest" neither it nor the harness has.
    assert back.confidence == 0.8
    assert dict(back.adjustments) == pytest.approx({"confidence": 0.1, "formality": 0.3, "sarcasm": 0.4})


def test_served_prompt_is_the_harness_training_prompt(tiny_model_dir):
    renderer = ChatRenderer(AutoTokenizer.from_pretrained(tiny_model_dir))
    policy_format = PersonaPolicyFormat(renderer)
    for seed in range(20):
        harness = PersonaHarness()
        first = asyncio.run(harness.reset(seed=seed))
        profile = AiProfile.model_validate(first.metadata["profile"])
        observation = BehaviorObservation.model_validate(first.metadata["observation"])
        # RustyWorm sends the convergence rounded (similarity_to_target); the harness shows its exact value.
        text = first.content.replace(f"{harness.convergence:.3f}", f"{observation.similarity_to_target:.3f}")
        assert first_observation_text(profile, observation) == text
        training_prompt = renderer.first_prompt(system_prompt(harness, harness.get_action_space()), text)
        assert policy_format.prompt_ids(profile, observation) == training_prompt


def test_lora_serving_is_turned_on_by_its_keys_and_needs_the_model():
    assert load_serve_config(SERVE_CONFIG).lora is None
    assert load_serve_config(SERVE_CONFIG, ["lora.max_rank=16"]).lora == ServeLoraSettings(max_rank=16, max_adapters=4)
    with pytest.raises(ConfigError, match="lora serves adapters on the served model: it needs openai_api: true"):
        load_serve_config(SERVE_CONFIG, ["lora.max_rank=16", "openai_api=false"])
    with pytest.raises(ConfigError, match="lora.max_adapters"):
        load_serve_config(SERVE_CONFIG, ["lora.max_adapters=0"])


def test_build_app_needs_a_trainer_exactly_when_the_model_is_served(tmp_path):
    with pytest.raises(ValueError, match="a served model \\(openai_api: true\\) needs a PolicyTrainer actor"):
        build_app(ServeConfig(policy="llm"))
    with pytest.raises(ValueError, match="a served model \\(openai_api: true\\) needs a PolicyTrainer actor"):
        build_app(ServeConfig(policy="evidence"))  # the default serves the model beside the evidence policy
    with pytest.raises(ValueError, match="got openai_api False"):
        build_app(ServeConfig(policy="expert", openai_api=False), trainer=object())
    with pytest.raises(ValueError, match="got openai_api False"):
        build_app(ServeConfig(policy="rllib", checkpoint=str(tmp_path), openai_api=False), trainer=object())


def test_the_llm_policy_and_model_weights_need_the_served_model(tmp_path):
    with pytest.raises(ValueError, match="policy 'llm' answers /predict-delta with the served model"):
        ServeConfig(policy="llm", openai_api=False)
    with pytest.raises(ValueError, match="openai_api is false \\(no model\\): set openai_api: true"):
        ServeConfig(policy="evidence", openai_api=False, run_dir=str(tmp_path))
    assert ServeConfig(policy="evidence", run_dir=str(tmp_path)).initial_weights == str(tmp_path)
    assert ServeConfig(policy="rllib", checkpoint=str(tmp_path)).initial_weights is None  # the PPO policy's


def test_rllib_policy_needs_exactly_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="policy 'rllib' serves one RLlib checkpoint"):
        ServeConfig(policy="rllib")
    with pytest.raises(ValueError, match="policy 'rllib' serves one RLlib checkpoint"):
        ServeConfig(policy="rllib", run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not a persona baseline checkpoint"):
        start_service(ServeCommandConfig(policy="rllib", checkpoint=str(tmp_path)))  # loaded before any Ray


# ---- the service over HTTP ------------------------------------------------------------------------------


def test_health_and_version(client, service, tiny_model_dir):
    assert client.get("/health").status_code == 200
    version = client.get("/version").json()
    assert version["policy_kind"] == "llm"
    assert isinstance(version["policy_version"], int)
    assert version["model_path"] == str(tiny_model_dir)


def test_predict_delta_in_rust_form_falls_back_to_the_expert(client):
    response = _post_json(client, "/predict-delta", PREDICT_JSON)
    assert response.status_code == 200, response.text
    body = response.json()
    PredictDeltaResponse.model_validate(body)
    delta = PersonalityDelta.model_validate(body["delta"])
    assert delta.model_dump(mode="json") == body["delta"]  # the exact serde shape comes back
    assert body["reasoning"].startswith("Fallback to the persona expert because the policy's reply")
    assert body["policy_version"] is None
    # Every fallback is counted by the replica that answered it; the service runs 2 replicas, and /version
    # reports the one it reaches, so ask until the counting replica answers.
    versions = [client.get("/version").json() for _ in range(20)]
    counted = [v for v in versions if v["fallbacks"] >= 1]
    assert counted, versions
    assert all(v["fallback_rate"] == v["fallbacks"] / v["answers"] > 0 for v in counted)

    profile = AiProfile.model_validate_json(PROFILE_JSON)
    expected, _, _ = predict_delta(profile, BehaviorObservation.model_validate_json(OBSERVATION_JSON))
    _moves_as(profile, delta, expected)
    assert body["confidence"] == delta.confidence
    assert "formality" in dict(delta.adjustments)  # an axis the profile lacks
    updated = apply_correction(profile, delta)
    assert updated.personality_value("formality") is not None
    assert updated.personality_value("sarcasm") == -0.2


def test_a_prompt_longer_than_the_models_context_falls_back_to_the_expert_and_is_counted(client, service):
    """A response too long for the prompt to fit the engine's context (max_model_len) is not sent to the engine:
    the expert answers, the reasoning says why, and the answering replica counts the fallback."""
    body = json.loads(PREDICT_JSON)
    body["profile"]["id"] = "too-long"
    body["observation"]["response"] = "Perhaps it is Paris, I think, but I am not sure. " * 600  # ~30 kB
    response = client.post("/predict-delta", json=body)
    assert response.status_code == 200, response.text
    reasoning = response.json()["reasoning"]
    context = service.config.engine.max_model_len
    assert re.match(rf"Fallback to the persona expert because the prompt \((\d+) tokens\) does not fit the "
                    rf"model's context of {context}", reasoning), reasoning
    assert int(re.search(r"\((\d+) tokens\)", reasoning).group(1)) > context
    assert any(v["fallbacks"] >= 1 for v in (client.get("/version").json() for _ in range(20)))


def _moves_as(profile: AiProfile, sent: PersonalityDelta, policy_delta: PersonalityDelta) -> None:
    """The similarity guard's delta (confidence 1, relative to the request's profile) moves the profile as the
    policy's own delta does, to the 4 decimals sent (a first request: nothing to judge)."""
    assert sent.confidence == 1.0
    expected = apply_correction(profile, policy_delta).personality_values()
    assert apply_correction(profile, sent).personality_values() == pytest.approx(expected, abs=5e-5)


def _validation_message(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return response.json()["message"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda b: b["profile"]["personality"][0].update(value=1.5), "body.profile.personality.0.value"),
        (lambda b: b["profile"].update(reasoning_style={"Hybrid": ["Bogus"]}), "body.profile.reasoning_style"),
        (lambda b: b.pop("observation"), "body.observation"),
        (lambda b: b["profile"].update(mood="sunny"), "body.profile.mood"),
        (lambda b: b["observation"].update(confidence="0.8"), "body.observation.confidence"),
    ],
)
def test_bad_predict_fields_are_422_naming_the_field(client, edit, field):
    body = json.loads(PREDICT_JSON)
    edit(body)
    assert field in _validation_message(client.post("/predict-delta", json=body))


def test_bad_train_and_chat_fields_are_422_naming_the_field(client):
    trajectories = _trajectories([0.1, 0.2])
    request = {"trajectories": trajectories, "importance_weights": [1.0], "loss_type": "GRPO"}
    mismatched = client.post("/train", json=request)
    assert "body.importance_weights" in _validation_message(mismatched)
    assert "has 1 entries but trajectories has 2" in mismatched.json()["message"]
    wrong_loss = client.post("/train", json=request | {"importance_weights": [1, 1], "loss_type": "PPO"})
    assert "body.loss_type" in _validation_message(wrong_loss)
    trajectories[1]["timestamp"] = "yesterday"
    assert "body.trajectories.1.timestamp" in _validation_message(
        client.post("/train", json={"trajectories": trajectories, "importance_weights": [1, 1], "loss_type": "GRPO"})
    )
    bad_n = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": "two"})
    assert "body.n" in _validation_message(bad_n)  # the OpenAI routes answer a malformed body the same way
    assert "body" in _validation_message(_post_json(client, "/predict-delta", PREDICT_JSON[:-5]))


def test_oversized_bodies_are_413(client, service):
    body = json.loads(PREDICT_JSON)
    body["observation"]["response"] = "x" * (service.config.max_body_bytes + 1)
    assert client.post("/predict-delta", json=body).status_code == 413
    text = json.dumps(body).encode()
    chunks = (text[i : i + 8192] for i in range(0, len(text), 8192))  # chunked: no Content-Length to check
    chunked = client.post("/predict-delta", content=chunks, headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    chat = {"messages": [{"role": "user", "content": "x" * (service.config.max_body_bytes + 1)}], "max_tokens": 4}
    assert client.post("/v1/chat/completions", json=chat).status_code == 413


def test_api_key_is_required_when_configured(service):
    with httpx.Client(base_url=service.secure_url, timeout=60) as http:
        assert http.get("/health").status_code == 200  # open for the Rust client
        assert _post_json(http, "/predict-delta", PREDICT_JSON).status_code == 401
        wrong = http.post("/predict-delta", content=PREDICT_JSON, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert http.get("/version").status_code == 401
        for path in ("/docs", "/openapi.json", "/redoc", "/v1/models"):  # the API's description is not public either
            assert http.get(path).status_code == 401, path
        chat = {"messages": [{"role": "user", "content": "Hi"}]}
        assert http.post("/v1/chat/completions", json=chat).status_code == 401
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        assert http.get("/openapi.json", headers=headers).json()["paths"]["/train"]
        allowed = http.post("/predict-delta", content=PREDICT_JSON, headers=headers)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["reasoning"].startswith("Trait estimates")  # the expert policy, no fallback
        assert http.get("/version", headers=headers).json()["policy_kind"] == "expert"
        refused = http.post("/v1/chat/completions", json=chat, headers=headers)  # this service runs no model
        assert refused.status_code == 409 and "runs no language model (openai_api: false)" in refused.text
        # The expert has no model to train: the records are kept, and the answer says nothing was trained.
        trajectories = _trajectories([0.1, 0.2])
        request = {"trajectories": trajectories, "importance_weights": [1, 1], "loss_type": "GRPO"}
        kept = http.post("/train", json=request, headers=headers)  # RustyWorm's client needs a 200 answer
        assert kept.status_code == 200, kept.text
        assert kept.json()["num_trajectories_used"] == 0 and kept.json()["policy_version"] is None
    with open_store(service.secure_config.store) as store:
        assert [doc["id"] for doc in store.get_documents(EVOLUTION_KIND)] == [t["id"] for t in trajectories]


def test_a_step_after_which_the_similarity_fell_is_undone_by_the_guard(service):
    """Policy expert answers through the similarity guard: its delta applied, the client's similarity falls, and
    the next answer undoes that step (the expert proposes the same moves again: they are dropped)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = json.loads(PREDICT_JSON)
    body["profile"]["id"] = "guard-undo"
    start = AiProfile.model_validate(body["profile"])
    with httpx.Client(base_url=service.secure_url, timeout=60, headers=headers) as http:
        first = PredictDeltaResponse.model_validate(http.post("/predict-delta", json=body).json())
        after = apply_correction(start, first.delta)
        assert after.personality_values() != start.personality_values()
        body["profile"] = after.model_dump(mode="json")
        body["observation"]["similarity_to_target"] = 0.5  # it was 0.667
        second = PredictDeltaResponse.model_validate(http.post("/predict-delta", json=body).json())
    guard = SimilarityGuard()  # the same steps on a guard of our own: the note ends the expert's reasoning
    for profile, similarity in ((start, 0.667), (after, 0.5)):
        observation = BehaviorObservation.model_validate(body["observation"] | {"similarity_to_target": similarity})
        prepared = guard.prepare(profile, observation)
        delta, note = guard.finish(prepared, predict_delta(prepared.profile, observation)[0])
    assert second.delta == delta and note.startswith("Similarity guard: similarity fell 0.6670 -> 0.5000")
    assert second.reasoning.startswith("Trait estimates") and second.reasoning.endswith(f". {note}")
    before, moved = start.personality_values(), after.personality_values()
    added = {axis: 0.0 for axis in moved.keys() - before.keys()}  # an undone new axis: 0, as if missing
    assert apply_correction(after, second.delta).personality_values() == pytest.approx(before | added, abs=5e-5)


def test_under_a_similarity_that_never_changes_the_guard_holds_the_policy_and_does_not_ask_it(service):
    """A client that sends the same similarity whatever the profile (RustyWorm's default 0.0): after the first
    move it judges nothing, so the profile goes back to where the service found it and the policy is not asked
    (with policy llm that saves an engine call per request)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = json.loads(PREDICT_JSON)
    body["profile"]["id"] = "guard-deaf"
    body["observation"]["similarity_to_target"] = 0.0
    start = AiProfile.model_validate(body["profile"])
    with httpx.Client(base_url=service.secure_url, timeout=60, headers=headers) as http:
        first = PredictDeltaResponse.model_validate(http.post("/predict-delta", json=body).json())
        after = apply_correction(start, first.delta)
        body["profile"] = after.model_dump(mode="json")
        second = PredictDeltaResponse.model_validate(http.post("/predict-delta", json=body).json())
    assert after.personality_values() != start.personality_values()
    assert second.reasoning.startswith("expert policy not asked.") and "never changed" in second.reasoning
    before, moved = start.personality_values(), after.personality_values()
    added = {axis: 0.0 for axis in moved.keys() - before.keys()}
    assert apply_correction(after, second.delta).personality_values() == pytest.approx(before | added, abs=5e-5)


class _HttpDeltaPolicy:
    """/predict-delta as client.play_episode asks a policy: the RustyWorm client's side of the wire."""

    def __init__(self, http: httpx.Client) -> None:
        self.http, self.reasonings = http, []

    def new_episode(self) -> None:
        return None

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        body = {"profile": profile.model_dump(mode="json"), "observation": observation.model_dump(mode="json")}
        response = self.http.post("/predict-delta", json=body)
        assert response.status_code == 200, response.text
        answer = PredictDeltaResponse.model_validate(response.json())
        self.reasonings.append(answer.reasoning)
        return answer.delta


def test_scaled_out_replicas_share_one_session_memory(ray_session, serve_port):
    """The default policy behind 2 ingress replicas: Serve routes a client's requests to either, and the
    episodes come out exactly as with one in-process policy (each step judged, the similarity calibrated),
    because the per-profile memory is one PersonaSessions deployment. With a memory per replica, the
    observation count in `reasoning` restarts whenever a request meets the other replica."""
    from ray import serve

    config = load_serve_config(
        SERVE_CONFIG,
        ["app_name=test-scale", "policy=evidence", "openai_api=false", "num_replicas=2", f"port={serve_port}",
         "route_prefix=/scale", "replica_num_cpus=0.1", "store=null"],
    )
    generator = GENERATORS["plainspoken"]
    personas = [family_persona("serve-test", generator.name, i) for i in range(3)]
    local = [play_episode(EvidenceClientPolicy(), p, generator, random.Random(f"scale-{i}")) for i, p in enumerate(personas)]
    assert sum(result.observations for result in local) >= 12  # enough requests that both replicas answer some
    try:
        url = start_service(config)
        with httpx.Client(base_url=url.rstrip("/"), timeout=60) as http:
            for i, (persona, expected) in enumerate(zip(personas, local)):
                policy = _HttpDeltaPolicy(http)
                assert play_episode(policy, persona, generator, random.Random(f"scale-{i}")) == expected
                counts = [int(re.search(r"observation (\d+) of this profile", r).group(1)) for r in policy.reasonings]
                assert counts == list(range(1, expected.observations + 1))
            replicas = serve.status().applications["test-scale"].deployments["PolicyService"].replica_states
            assert replicas.get("RUNNING") == 2
            # The memory's replica killed: every answer is still a 200 (while none answers in time, a counted
            # fallback: the expert through the guard, or no move at all) until Serve's new replica answers.
            name = next(actor["name"] for actor in ray_session.util.list_named_actors(all_namespaces=True)
                        if "test-scale#PersonaSessions" in actor["name"])
            ray_session.kill(ray_session.get_actor(name, namespace="serve"), no_restart=True)
            policy, deadline = _HttpDeltaPolicy(http), time.monotonic() + 120
            while not policy.reasonings or not policy.reasonings[-1].startswith("evidence policy"):
                assert time.monotonic() < deadline, policy.reasonings
                delta = policy.predict(personas[0].start, generator.observe(personas[0].target, personas[0].start,
                                                                            random.Random(0)))
                assert policy.reasonings[-1].startswith(("evidence policy", "Fallback")), policy.reasonings
                assert delta.adjustments == [] or not policy.reasonings[-1].startswith("Fallback: no move")
    finally:
        serve.delete("test-scale")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_service_refuses_to_start_when_its_key_variable_is_unset_or_empty(service, value, monkeypatch):
    from ray import serve

    variable = "TERRARIUM_TEST_UNSET_KEY"
    monkeypatch.delenv(variable, raising=False)
    if value is not None:
        monkeypatch.setenv(variable, value)
    config = load_serve_config(
        SERVE_CONFIG,
        [f"api_key_env={variable}", "policy=expert", "openai_api=false", "app_name=test-nokey", f"port={service.config.port}",
         "route_prefix=/nokey", "replica_num_cpus=0.1", "store=null"],
    )
    state = "unset" if value is None else "empty"
    with pytest.raises(ValueError, match=f"api_key_env names \\${variable}, which is {state}"):
        start_service(config)
    assert "test-nokey" not in serve.status().applications


def test_terrarium_serve_without_its_key_variable_exits_before_starting():
    env = {k: v for k, v in os.environ.items() if k != "TERRARIUM_TEST_UNSET_KEY"}
    command = [sys.executable, "-m", "cluster.cli", "serve", str(SERVE_CONFIG), "api_key_env=TERRARIUM_TEST_UNSET_KEY"]
    finished = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2, finished.stderr
    assert "TERRARIUM_TEST_UNSET_KEY, which is unset" in finished.stderr


def test_a_network_host_needs_a_key_or_an_explicit_opt_out():
    with pytest.raises(ValueError, match="host '0.0.0.0' is reachable from other machines but no api_key_env"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", allow_unauthenticated=True).host == "0.0.0.0"
    assert ServeConfig(host="0.0.0.0", api_key_env="SOME_KEY").api_key_env == "SOME_KEY"
    assert ServeConfig(host="::1").host == "::1" and ServeConfig(host="localhost").host == "localhost"


def test_a_full_queue_is_503_with_retry_after(ray_session, serve_port):
    """One request in progress and one queued per caller: a burst beyond that is refused at once, and told
    when to come back, instead of piling up without bound."""
    from ray import serve

    config = load_serve_config(
        SERVE_CONFIG,
        ["policy=expert", "openai_api=false", "app_name=test-queue", f"port={serve_port}", "route_prefix=/queue", "replica_num_cpus=0.1",
         "store=null", "max_ongoing_requests=1", "max_queued_requests=1", "retry_after_s=2"],
    )
    url = start_service(config)
    body = json.loads(PREDICT_JSON)
    body["observation"]["response"] = "Therefore, furthermore, the schema. " * 20_000  # slow to analyse
    try:
        barrier = threading.Barrier(16)

        def send(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=120) as http:
                barrier.wait()
                return http.post("/predict-delta", json=body)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(send, range(16)))
    finally:
        serve.delete(config.app_name)
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    assert all(r.headers.get("retry-after") == "2" for r in responses if r.status_code == 503)


def _greedy(llm, tokenizer) -> tuple[list[int], list[float], int]:
    prompt = tokenizer.encode("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    sampling = SamplingConfig(temperature=0.0, max_tokens=8)
    generation = llm.generate.remote(prompt, sampling, [tokenizer.eos_token_id], None).result(timeout_s=60)
    return generation.token_ids, generation.logprobs, generation.policy_version


def test_the_served_model_writes_under_the_apply_delta_grammar(llm, tiny_model_dir):
    """/predict-delta's generation (serve.constrain_replies): the served engine samples the reply under the
    profile's apply_delta grammar, so even the untrained tiny model, whose free text is never a call, writes one
    (cut off by max_tokens at worst, when it keeps writing digits)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    profile = AiProfile.model_validate_json(PROFILE_JSON)
    prompt = PersonaPolicyFormat(ChatRenderer(tokenizer)).prompt_ids(profile, BehaviorObservation.model_validate_json(OBSERVATION_JSON))
    sampling = SamplingConfig(temperature=0.0, max_tokens=160)
    stop = [tokenizer.eos_token_id]
    free = llm.generate.remote(prompt, sampling, stop, 0).result(timeout_s=120)
    with pytest.raises(ActionParseError):
        parse_delta(tokenizer.decode(free.token_ids, skip_special_tokens=True), profile)
    constrained = llm.generate.remote(prompt, sampling, stop, 0, reply_grammar(profile)).result(timeout_s=120)
    text = tokenizer.decode(constrained.token_ids)
    assert text.startswith('<tool_call>{"name": "apply_delta", "arguments": {"adjustments": {'), text
    if constrained.finish_reason == "stop":
        parse_delta(tokenizer.decode(constrained.token_ids, skip_special_tokens=True), profile)


def test_train_stores_trajectories_then_updates_the_engine(client, service, llm, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens_before, logprobs_before, version_before = _greedy(llm, tokenizer)
    trajectories = _trajectories([0.5, -0.2, 0.1, 0.3])
    request = {"trajectories": trajectories, "importance_weights": [1.0, 0.5, 0.0, 2.0], "loss_type": "GRPO"}

    response = client.post("/train", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    TrainResponse.model_validate(body)
    assert body["num_trajectories_used"] == 3  # the zero weight is dropped
    assert body["loss_type"] == "GRPO" and math.isfinite(body["loss"]) and body["training_time_ms"] >= 0
    assert body["policy_version"] == version_before + 1

    with open_store(service.config.store) as store:
        stored = {doc["id"]: doc for doc in store.get_documents(EVOLUTION_KIND)}
    for sent in trajectories:
        assert EvolutionTrajectory.model_validate(stored[sent["id"]]) == EvolutionTrajectory.model_validate(sent)

    tokens_after, logprobs_after, version_after = _greedy(llm, tokenizer)
    assert version_after == version_before + 1
    assert tokens_after != tokens_before or max(abs(a - b) for a, b in zip(logprobs_after, logprobs_before)) > 1e-4

    again = client.post("/train", json=request)  # a client retry: the earlier answer, no second step
    assert again.status_code == 200 and again.json() == body
    assert _version(llm) == version_before + 1
    with open_store(service.config.store) as store:
        assert len(store.get_documents(EVOLUTION_KIND)) == len(stored)  # stored once

    # Old records with one new one: only the new one is trained on (alone it gives no learning signal).
    partial = {"trajectories": [*trajectories, _trajectories([0.9], first_index=7)[0]],
               "importance_weights": [1.0] * 5, "loss_type": "GRPO"}
    answer = client.post("/train", json=partial).json()
    assert answer["num_trajectories_used"] == 0 and answer["policy_version"] == version_before + 1


def test_one_train_request_sent_to_both_replicas_at_once_trains_once(service, llm):
    """RustyWorm retries a /train that timed out while the first is still running; Serve may route the copies
    to different replicas. Every copy gets the same answer, the engine takes one step, each record is stored
    once."""
    version_before = _version(llm)
    trajectories = _trajectories([0.9, -0.6, 0.2], first_index=20)
    request = {"trajectories": trajectories, "importance_weights": [1.0, 1.0, 1.0], "loss_type": "GRPO"}
    copies = 6
    barrier = threading.Barrier(copies)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            barrier.wait()
            return http.post("/train", json=request)

    with ThreadPoolExecutor(copies) as pool:
        responses = list(pool.map(send, range(copies)))

    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    answers = [response.json() for response in responses]
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["num_trajectories_used"] == 3 and answers[0]["policy_version"] == version_before + 1
    assert _version(llm) == version_before + 1
    with open_store(service.config.store) as store:
        ids = [doc["id"] for doc in store.get_documents(EVOLUTION_KIND, [t["id"] for t in trajectories])]
    assert ids == sorted(t["id"] for t in trajectories)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda t: t[0].update(id=""), "body.trajectories.0.id", "at least 1 character"),
        (lambda t: t[1].update(id="x" * 129), "body.trajectories.1.id", "at most 128 characters"),
        (lambda t: t[0].update(reward=1e200), "body.trajectories.0.reward", "less than or equal to 1"),
        (lambda t: t[1].update(reward=-1e308), "body.trajectories.1.reward", "greater than or equal to -1"),
        (lambda t: t[0].update(reward=1.5), "body.trajectories.0.reward", "less than or equal to 1"),
        (lambda t: t[0].update(reward=float("nan")), "body.trajectories.0.reward", "finite number"),
        (lambda t: t[0].update(reward=10**400), "body.trajectories.0.reward", "valid number"),
        (lambda t: t[0]["action"].update(confidence=float("inf")), "body.trajectories.0.action.confidence", "finite"),
    ],
)
def test_client_mistakes_in_train_are_422_naming_the_field(client, llm, edit, field, message):
    """Found by a user: an empty id was a 503, rewards 1e200 and 0.0 a 500 (overflow in the advantages)."""
    version = _version(llm)
    trajectories = _trajectories([0.1, 0.0], first_index=40)
    edit(trajectories)
    body = {"trajectories": trajectories, "importance_weights": [1.0, 1.0], "loss_type": "GRPO"}
    text = json.dumps(body)  # allow_nan: NaN and Infinity go out as Python's json writes them
    reply = _validation_message(_post_json(client, "/train", text))
    assert field in reply and message in reply
    assert _version(llm) == version


def test_train_without_a_learning_signal_changes_nothing(client, llm):
    version = _version(llm)
    request = {"trajectories": _trajectories([0.3, 0.3], 50), "importance_weights": [1, 1], "loss_type": "GRPO"}
    flat = client.post("/train", json=request)
    assert flat.status_code == 200 and flat.json()["num_trajectories_used"] == 0
    request = {"trajectories": _trajectories([0.1, 0.9], 60), "importance_weights": [0.0, None], "loss_type": "GRPO"}
    unusable = client.post("/train", json=request)
    assert unusable.status_code == 200 and unusable.json()["num_trajectories_used"] == 0
    assert _version(llm) == version


GO_TOOL = {
    "type": "function",
    "function": {
        "name": "go",
        "description": "Move to a neighbouring room.",
        "strict": True,  # OpenAI's structured outputs: the arguments follow the schema
        "parameters": {
            "type": "object",
            "properties": {"direction": {"type": "string", "enum": ["north", "south", "east", "west"]}},
            "required": ["direction"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def openai_client(service):
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", timeout=120, max_retries=0) as client:
        yield client


def test_openai_client_models_streaming_n_and_tools(openai_client, service, llm):
    """What a new user tries first with the official client: all from Ray Serve LLM, on the served engine."""
    model = service.config.model_id
    assert [m.id for m in openai_client.models.list().data] == [model]
    assert openai_client.models.retrieve(model).id == model
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    stamp = fingerprint(_version(llm))

    chunks = list(openai_client.chat.completions.create(model=model, messages=messages, max_tokens=12, stream=True))
    assert len(chunks) >= 2 and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].system_fingerprint == stamp  # vLLM stamps the last chunk with the weights' version

    two = openai_client.chat.completions.create(model=model, messages=messages, max_tokens=12, n=2, temperature=1.0,
                                                seed=3)
    assert [choice.index for choice in two.choices] == [0, 1] and two.system_fingerprint == stamp
    assert all(choice.message.role == "assistant" and choice.message.content for choice in two.choices)
    assert 2 <= two.usage.completion_tokens <= 24

    forced = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Where now?"}], max_tokens=128, tools=[GO_TOOL],
        tool_choice={"type": "function", "function": {"name": "go"}},
    )
    assert forced.choices[0].message.tool_calls, forced.choices[0]  # the envelope is ~30 tokens of the tiny vocabulary
    (call,) = forced.choices[0].message.tool_calls
    assert call.function.name == "go"
    assert json.loads(call.function.arguments)["direction"] in ("north", "south", "east", "west")

    completion = openai_client.completions.create(model=model, prompt="Hello", max_tokens=5)
    assert isinstance(completion.choices[0].text, str) and completion.usage.completion_tokens >= 1

    with pytest.raises(openai.BadRequestError, match="max_tokens|context"):  # vLLM's check, a 400 that says why
        openai_client.chat.completions.create(model=model, messages=messages, max_tokens=100_000)
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=4)


def test_a_failed_reload_raises_and_the_old_weights_keep_serving(llm, openai_client, service, tiny_model_dir):
    version = _version(llm)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens_before, _, _ = _greedy(llm, tokenizer)
    wrong = serialize_state_dict({"model.embed_tokens.weight": torch.zeros(3, 3)})
    with pytest.raises(RayTaskError, match="do not fit the served model"):  # the weight receiver refused them
        llm.load_weights.remote(wrong, version + 1).result(timeout_s=120)
    tokens_after, _, version_after = _greedy(llm, tokenizer)
    assert _version(llm) == version and (tokens_after, version_after) == (tokens_before, version)
    answer = openai_client.chat.completions.create(model=service.config.model_id, max_tokens=4,
                                                   messages=[{"role": "user", "content": "Hi"}])
    assert answer.system_fingerprint == fingerprint(version)


def test_publish_under_concurrent_requests_loses_none(service, llm, tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    new_version = _version(llm) + 10
    save_checkpoint(
        tmp_path, CheckpointState(step=7, policy_version=new_version), model,
        torch.optim.AdamW(model.parameters()), [capture_rng_state()], tiny_model_dir,
    )
    statuses: list[int | str] = []
    stamps: set[str] = set()
    stop = threading.Event()
    started = threading.Barrier(9)

    def client_loop(index: int) -> None:
        """Odd clients call /predict-delta as RustyWorm does, even ones chat through the openai client."""
        with httpx.Client(base_url=service.url, timeout=120) as http, \
                openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", timeout=120, max_retries=0) as chat:
            first = True
            while first or not stop.is_set():
                if index % 2:
                    statuses.append(_post_json(http, "/predict-delta", PREDICT_JSON).status_code)
                else:
                    try:
                        answer = chat.chat.completions.create(model=service.config.model_id, max_tokens=8,
                                                              messages=[{"role": "user", "content": "Hi"}])
                    except openai.APIError as exc:
                        statuses.append(repr(exc))
                    else:
                        stamps.add(answer.system_fingerprint)
                        statuses.append(200)
                if first:
                    first = False
                    started.wait()

    with ThreadPoolExecutor(max_workers=8) as pool:
        workers = [pool.submit(client_loop, index) for index in range(8)]
        started.wait()  # every client has finished one request on the old weights
        release = publish(service.config, tmp_path)  # a run directory: its latest checkpoint
        stop.set()
        for worker in workers:
            worker.result()

    assert statuses and all(status == 200 for status in statuses), statuses
    assert fingerprint(new_version) in stamps and len(stamps) >= 2  # answers on both sides of the swap
    assert release.policy_version == new_version
    version = httpx.get(f"{service.url}/version").json()
    assert version["policy_version"] == new_version
    assert version["checkpoint"] == release.checkpoint and version["checkpoint_step"] == 7

    with pytest.raises(ValueError, match="not a model directory"):
        publish(service.config, tmp_path / "missing")
    assert httpx.get(f"{service.url}/version").json()["policy_version"] == new_version


def _lora_checkpoint(tiny_model_dir: Path, run_dir: Path, policy_version: int, seed: int = 0) -> torch.nn.Module:
    """What `train.publish_to` sends with learner.lora: a checkpoint of adapters (rank 4, random B) and a pointer
    to the base, written under run_dir; returns the adapted model."""
    adapted = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                         LoraConfig(rank=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # B = 0 would be the base itself
    save_checkpoint(
        run_dir, CheckpointState(step=3, policy_version=policy_version), adapted,
        torch.optim.AdamW(p for p in adapted.parameters() if p.requires_grad), [capture_rng_state()], tiny_model_dir,
    )
    return adapted.eval()


def test_a_published_lora_checkpoint_is_served_as_base_plus_adapters(service, llm, tiny_model_dir, tmp_path):
    """A LoRA checkpoint published: /predict-delta's `generate` runs the adapted model (the module's service has
    serve.lora, so the adapters on the base; without it, the merged weights), not the base."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    new_version = _version(llm) + 1
    adapted = _lora_checkpoint(tiny_model_dir, tmp_path, new_version)
    release = publish(service.config, tmp_path)
    assert release.policy_version == new_version and _version(llm) == new_version

    prompt = AutoTokenizer.from_pretrained(tiny_model_dir)("I guess 50").input_ids
    greedy = SamplingConfig(temperature=0.0, max_tokens=6)
    generation = llm.generate.remote(prompt, greedy, [], None).result(timeout_s=60)
    assert generation.policy_version == new_version
    tokens = torch.tensor([prompt + list(generation.token_ids)])
    with torch.no_grad():
        expected = token_logprobs(adapted, tokens, torch.ones_like(tokens))[0, len(prompt):]
        unadapted = token_logprobs(base.eval(), tokens, torch.ones_like(tokens))[0, len(prompt):]
    served = torch.tensor(generation.logprobs)
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-3)
    assert (served - unadapted).abs().max() > 1e-2  # the adapters changed what is served


def _echo_logprobs(chat: openai.OpenAI, model: str, prompt: list[int]) -> tuple[str, torch.Tensor]:
    """The served model's logprob of each prompt token after the first (vLLM's prompt logprobs), and the name
    of the model that answered."""
    answer = chat.completions.create(model=model, prompt=prompt, max_tokens=1, echo=True, logprobs=0, temperature=0)
    return answer.model, torch.tensor(answer.choices[0].logprobs.token_logprobs[1 : len(prompt)])


def test_published_lora_versions_are_multiplexed_models(service, llm, openai_client, tiny_model_dir, tmp_path):
    """With serve.lora, each published LoRA checkpoint is a model of its own, "terrarium:policy-vN": listed, and
    answered with its adapter on the base (Serve multiplexing, our local LoRA loader), while "terrarium" serves
    the newest version. Only the newest lora.max_adapters versions stay; refused adapters change nothing; full
    weights published after them withdraw them."""
    chat, url = openai_client, service.url
    prompt = AutoTokenizer.from_pretrained(tiny_model_dir)("I guess 50, then 25 and 12").input_ids
    tokens = torch.tensor([prompt])

    def expected(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return token_logprobs(model, tokens, torch.ones_like(tokens))[0, 1 : len(prompt)]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    first = _version(llm) + 1
    last = first + 2
    adapted = {version: _lora_checkpoint(tiny_model_dir, tmp_path / f"run{version}", version, seed=version)
               for version in range(first, last + 1)}
    names = {version: f"terrarium:policy-v{version}" for version in adapted}
    for version in adapted:
        assert publish(service.config, tmp_path / f"run{version}").policy_version == version
    assert httpx.get(f"{url}/version").json()["policy_version"] == last

    listed = [m.id for m in chat.models.list().data]
    assert listed == ["terrarium", names[last - 1], names[last]]  # lora.max_adapters=2: the oldest is withdrawn
    with pytest.raises(openai.NotFoundError):
        chat.completions.create(model=names[first], prompt="Hi", max_tokens=2)
    assert chat.models.retrieve(names[last - 1]).id == names[last - 1]
    for version in (last - 1, last):
        answered, served = _echo_logprobs(chat, names[version], prompt)
        assert answered == names[version]
        torch.testing.assert_close(served, expected(adapted[version]), rtol=0, atol=1e-3)
        assert (served - expected(base)).abs().max() > 1e-2  # the adapter, not the base
    answered, served = _echo_logprobs(chat, "terrarium", prompt)  # the base id: the newest version
    assert answered == names[last]
    torch.testing.assert_close(served, expected(adapted[last]), rtol=0, atol=1e-3)

    adapter = lora_adapter(adapted[last])
    for change, error in (
        (wrong_shape, r"q_proj: lora_A \(4, \d+\) and lora_B .* do not fit its weight"),  # the weight receiver's
        (lambda *files: rank_over_the_limit(*rank_over_the_limit(*files)), "greater than max_lora_rank 8"),  # vLLM's
    ):
        with pytest.raises(RayTaskError, match=error):
            llm.load_adapter.remote(adapter_with(adapter, change), last + 9).result(timeout_s=120)
    assert httpx.get(f"{url}/version").json()["policy_version"] == last
    assert [m.id for m in chat.models.list().data] == listed

    streamed = chat.chat.completions.create(model=names[last - 1], max_tokens=6, stream=True,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices).strip()
    with pytest.raises(openai.NotFoundError, match=f"policy-v{last + 9}"):
        chat.chat.completions.create(model=f"terrarium:policy-v{last + 9}", max_tokens=4,
                                     messages=[{"role": "user", "content": "Hi"}])

    full = tmp_path / "full"  # the base model's full weights, as the next version
    save_checkpoint(full, CheckpointState(step=5, policy_version=last + 1), base,
                    torch.optim.AdamW(base.parameters()), [capture_rng_state()], tiny_model_dir)
    assert publish(service.config, full).policy_version == last + 1
    assert [m.id for m in chat.models.list().data] == ["terrarium"]
    with pytest.raises(openai.NotFoundError):
        chat.completions.create(model=names[last], prompt="Hi", max_tokens=2)
    answered, served = _echo_logprobs(chat, "terrarium", prompt)
    assert answered == "terrarium"
    torch.testing.assert_close(served, expected(base), rtol=0, atol=1e-3)


def test_publish_without_a_running_llm_app_is_a_logged_no_op(service, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="serve.app"):
        assert publish(ServeConfig(app_name="not-running"), tmp_path) is None
        assert publish(service.secure_config, tmp_path) is None
    assert "no Serve application 'not-running' is running" in caplog.text
    assert "'test-secure' serves no model (openai_api: false)" in caplog.text


def test_terrarium_serve_command_serves_until_ctrl_c(service, ray_session, tiny_model_dir):
    """The real command in a subprocess, on the session's Ray (RAY_ADDRESS) and Serve's port, with the config's
    defaults: the evidence policy answers /predict-delta, with no fallback, and the model beside it answers the
    official openai client (models, streaming, n=2). Ctrl-C stops it and deletes the app."""
    from ray import serve

    port = service.config.port
    command = [
        sys.executable, "-m", "cluster.cli", "serve", str(SERVE_CONFIG), "app_name=test-cli",
        f"port={port}", "route_prefix=/cli", "replica_num_cpus=0.1", "store=null", f"model.path={tiny_model_dir}",
        "trainer.num_cpus=0.1",
    ]
    env = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    # Started with SIGINT ignored, as a non-interactive shell starts anything it runs in the background (CI, nohup
    # ... &): Python then installs no KeyboardInterrupt handler, and only the command's own handler stops it.
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    output: list[str] = []
    try:
        while not any(line.startswith("Serving") for line in output):
            output.append(lines.get(timeout=420))  # queue.Empty: the command never came up (its engine starts first)
        url = f"http://127.0.0.1:{port}/cli"
        assert f"Serving 'test-cli' (evidence policy; OpenAI API on model 'terrarium') at {url}" in "".join(output)
        assert httpx.get(f"{url}/health", timeout=60).status_code == 200
        response = httpx.post(f"{url}/predict-delta", content=PREDICT_JSON,
                              headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 200, response.text
        expected, _, _ = EvidencePolicy().predict(
            AiProfile.model_validate_json(PROFILE_JSON), BehaviorObservation.model_validate_json(OBSERVATION_JSON)
        )
        answer = PredictDeltaResponse.model_validate(response.json())
        assert answer.delta == expected and answer.reasoning.startswith("evidence policy")
        version = httpx.get(f"{url}/version", timeout=60).json()
        assert (version["policy_kind"], version["answers"], version["fallback_rate"]) == ("evidence", 1, 0.0)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0) as chat:
            assert [m.id for m in chat.models.list().data] == ["terrarium"]
            messages = [{"role": "user", "content": "Guess a number."}]
            chunks = list(chat.chat.completions.create(model="terrarium", messages=messages, max_tokens=6, stream=True))
            assert len(chunks) >= 2 and chunks[-1].system_fingerprint == "policy-v0"
            two = chat.chat.completions.create(model="terrarium", messages=messages, max_tokens=6, n=2)
            assert [choice.index for choice in two.choices] == [0, 1]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=300)  # serve.delete stops the engine replica: minutes under CI load
        except subprocess.TimeoutExpired:
            process.kill()  # fail with what the command printed on its way out, not a bare timeout
            code = process.wait(timeout=60)
            output.append(f"\n[test] still running 300 s after Ctrl-C: killed (exit code {code})\n")
    while not lines.empty():
        output.append(lines.get())
    assert code == 0, "".join(output)
    assert "stopping 'test-cli' (SIGINT)" in "".join(output)
    assert "test-cli" not in serve.status().applications


# ---- policy rllib: a PPO checkpoint of `terrarium baseline` ----------------------------------------------


@dataclass
class RLlibService:
    url: str
    checkpoint: str


@pytest.fixture(scope="module")
def rllib_service(ray_session, serve_port, tmp_path_factory):
    """One tiny PPO iteration (the weights are barely trained; the test is about serving them), served as
    `terrarium serve configs/serve.yaml policy=rllib checkpoint=...` would."""
    from ray import serve

    baseline = BaselineConfig(
        output_dir=str(tmp_path_factory.mktemp("baseline")), iterations=1, train_batch_size=64, minibatch_size=32,
        num_epochs=1, hidden_sizes=[16], max_observations=4,
    )
    checkpoint = train_baseline(baseline, log=lambda line: None).checkpoint
    config = load_serve_config(
        SERVE_CONFIG,
        [
            "app_name=test-rllib", "policy=rllib", "openai_api=false", f"checkpoint={checkpoint}", f"port={serve_port}",
            "route_prefix=/rllib", "replica_num_cpus=0.1", "store=null",
        ],
    )
    url = start_service(config)
    assert url == f"http://127.0.0.1:{serve_port}/rllib"
    yield RLlibService(url, checkpoint)
    serve.delete(config.app_name)


def test_rllib_policy_answers_predict_delta_in_rust_form(rllib_service):
    with httpx.Client(base_url=rllib_service.url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        version = http.get("/version").json()
        assert version["policy_kind"] == "rllib" and version["checkpoint"] == rllib_service.checkpoint
        assert version["policy_version"] is None and version["model_path"] is None

        response = _post_json(http, "/predict-delta", PREDICT_JSON)  # Hybrid reasoning style, no formality axis
        assert response.status_code == 200, response.text
        body = response.json()
        answer = PredictDeltaResponse.model_validate(body)
        assert answer.delta.model_dump(mode="json") == body["delta"]  # the exact serde shape comes back
        assert answer.reasoning.startswith("rllib PPO policy") and answer.policy_version is None

        profile = AiProfile.model_validate_json(PROFILE_JSON)
        observation = BehaviorObservation.model_validate_json(OBSERVATION_JSON)
        expected = RLlibDeltaPolicy.load(rllib_service.checkpoint).predict(profile, observation, observations_used=0)
        _moves_as(profile, answer.delta, expected)
        assert answer.confidence == answer.delta.confidence
        assert "formality" in dict(answer.delta.adjustments)  # an axis the profile lacks
        updated = apply_correction(profile, answer.delta)
        assert updated.personality_value("formality") is not None
        assert updated.personality_value("sarcasm") == -0.2  # RustyWorm's own axis is kept

        assert "body.observation" in _validation_message(http.post("/predict-delta", json={"profile": {}}))


def test_rllib_policy_is_not_trainable_over_http(rllib_service):
    with httpx.Client(base_url=rllib_service.url, timeout=60) as http:
        request = {"trajectories": _trajectories([0.1, 0.2]), "importance_weights": [1, 1], "loss_type": "GRPO"}
        refused = http.post("/train", json=request)
        assert refused.status_code == 409 and "policy 'rllib' is not trainable over HTTP" in refused.json()["detail"]
        chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 409
