"""Settings of the policy service (serve.app), and the published policy that Serve's user_config carries.

Defaults are the ones RustyWorm's client expects: http://127.0.0.1:8888, no API key, JSON bodies up to 1 MiB.
Authentication fails closed: a host other than loopback needs an API key (or an explicit
allow_unauthenticated: true), and a named key variable that is unset or empty stops the service from
starting (serve.app.api_key) rather than serving without a key.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollout.engine import EngineConfig, SamplingConfig
from rollout.models.source import ModelConfig
from rollout.data.store import StoreConfig

# evidence (default): the evidence policy (rollout.harnesses.persona.evidence_policy), the winner of the
# leave-one-generator-out table (bench/persona_generalization.py); llm: the served model writes the delta;
# expert: the persona expert; rllib: a PPO checkpoint of `terrarium baseline`, loaded by cluster.serve_command
# (cluster.evaluation.load_checkpoint_policy) and handed in.
PolicyKind = Literal["evidence", "llm", "expert", "rllib"]


class AutoscalingSettings(BaseModel):
    """Serve's replica autoscaling: replicas are added while each has more than `target_ongoing_requests`."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(16.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        return self


class ServeLoraSettings(BaseModel):
    """`lora`: the served engine runs vLLM's LoRA support, and a published LoRA checkpoint (learner.lora) is
    served as its adapters on the frozen base: each version a multiplexed model "<model_id>:policy-vN" of its
    own, the newest also behind model_id and /predict-delta (serve.llm_server)."""

    model_config = ConfigDict(extra="forbid")

    max_rank: int = Field(16, ge=1, description="the largest adapter rank served (learner.lora.rank)")
    max_adapters: int = Field(
        4, ge=1, description="the newest adapter versions served (vLLM's max_loras); older ones are withdrawn"
    )


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_name: str = Field("persona", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the Serve application")
    host: str = Field("127.0.0.1", description="Serve's HTTP proxy address; 0.0.0.0 exposes it to the network")
    port: int = Field(8888, ge=1, le=65535)
    route_prefix: str = Field("/", pattern=r"^/", description="the app's routes live under this path")
    num_replicas: int = Field(1, ge=1, description="ignored when autoscaling is set")
    autoscaling: AutoscalingSettings | None = None
    max_ongoing_requests: int = Field(64, ge=1, description="per replica; the engine batches what they send")
    replica_num_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved per replica")
    policy: PolicyKind = Field(
        "evidence",
        description="evidence: the evidence policy (default); llm: the served model writes the delta; expert: the "
        "persona expert; rllib: a PPO checkpoint",
    )
    constrain_replies: bool = Field(
        True,
        description="policy llm: sample each /predict-delta reply under the grammar of one apply_delta call on the "
        "harness's and the profile's axes (vLLM structured outputs), so a reply always parses; false: free text, "
        "an unusable reply falls back to the persona expert",
    )
    openai_api: bool = Field(
        True,
        description="serve the model through the OpenAI API (/v1/...) beside the /predict-delta policy, with its "
        "engine and the trainer that loads published weights into it; false: no model (policy llm needs it)",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="base weights and tokenizer")
    model_id: str = Field(
        "terrarium", min_length=1, description="the model name the OpenAI API lists and clients pass"
    )
    tool_call_parser: str | None = Field(
        "hermes",
        description="vLLM's parser for the tool calls the model writes; hermes reads <tool_call>{json}"
        "</tool_call>, the harness format. vLLM needs one for any tool_choice; null: no tool calls",
    )
    lora: ServeLoraSettings | None = Field(
        None,
        description="serve published LoRA checkpoints as adapters, each version a model of its own; null: as merged "
        "weights (base + adapters) under model_id only",
    )
    checkpoint: str | None = Field(
        None,
        description="the model's weights from the start, a checkpoint or model directory; "
        "policy rllib (required): the RLlib checkpoint directory, runs/NAME/checkpoint",
    )
    run_dir: str | None = Field(None, description="a training run directory: the model serves its newest checkpoint")
    engine: EngineConfig = Field(
        default_factory=EngineConfig, description="the engine `terrarium serve` starts; max_model_len bounds prompts"
    )
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=256))
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies get 413")
    api_key_env: str | None = Field(
        None,
        description="environment variable holding the API key: requests (and /docs) need 'Authorization: Bearer KEY'; "
        "the service refuses to start while it is unset or empty",
    )
    allow_unauthenticated: bool = Field(
        False, description="serve a host other than loopback without an API key (only behind your own gateway)"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Serve's HTTP proxy answers 408 to a request not done by then (set when Serve starts)"
    )
    max_queued_requests: int = Field(
        256, ge=1, description="requests the proxy queues beyond max_ongoing_requests; more get 503 + Retry-After"
    )
    retry_after_s: float = Field(1.0, ge=0, description="the Retry-After of a 503 for a full queue")
    train_retry_wait_s: float = Field(
        30.0, ge=0, description="/train: how long a retried request waits for the first one's answer"
    )
    store: StoreConfig | None = Field(None, description="where /train keeps trajectories; null: /train answers 503")

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if not _is_loopback(self.host) and self.api_key_env is None and not self.allow_unauthenticated:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines but no api_key_env is set: set api_key_env "
                "(a variable holding the key), or allow_unauthenticated: true to serve without authentication"
            )
        if self.engine.num_engines != 1:
            raise ValueError("the replicas share one engine (the PolicyLLM deployment): engine.num_engines must be 1")
        if self.lora is not None and not self.openai_api:
            raise ValueError("lora serves adapters on the served model: it needs openai_api: true")
        if self.checkpoint is not None and self.run_dir is not None:
            raise ValueError("give checkpoint or run_dir, not both")
        if self.policy == "llm" and not self.openai_api:
            raise ValueError(
                "policy 'llm' answers /predict-delta with the served model, which serves the OpenAI API too: "
                "openai_api must be true"
            )
        if not self.openai_api and self.policy != "rllib" and (self.checkpoint is not None or self.run_dir is not None):
            raise ValueError(
                "checkpoint and run_dir give the served model's weights, but openai_api is false (no model): "
                "set openai_api: true"
            )
        if self.policy == "rllib" and (self.checkpoint is None or self.run_dir is not None):
            raise ValueError(
                "policy 'rllib' serves one RLlib checkpoint: set checkpoint (e.g. runs/persona-baseline/checkpoint), "
                "not run_dir"
            )
        return self

    @property
    def initial_weights(self) -> str | None:
        """The checkpoint, model or run directory the model serves from the start; None: the base model.
        Policy rllib's checkpoint is the PPO policy's, not the model's."""
        if self.policy == "rllib":
            return None
        return self.checkpoint if self.checkpoint is not None else self.run_dir


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class PublishedPolicy(BaseModel):
    """The deployment's user_config: which weights the engine serves. Changing it reconfigures the replicas in
    place (serve.app.publish); `checkpoint` None keeps the weights the engine started with. Built from
    rollout.models.checkpoints.describe_checkpoint (the checkpoint layout)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(None, description="a model directory (config.json and weights)")
    policy_version: int = Field(0, ge=0)
    checkpoint_step: int | None = Field(None, description="its learner optimizer step; None: not a checkpoint")
