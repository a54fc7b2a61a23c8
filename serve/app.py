"""The policy service: a Ray Serve application with a FastAPI ingress, the HTTP API RustyWorm's client calls.

    GET  /health                  200 while the replica is up (the client reads only the status code)
    GET  /version                 policy kind, engine policy version, model path, published checkpoint and step
    POST /predict-delta           {profile, observation} -> {delta, confidence, reasoning}
    POST /train                   {trajectories, importance_weights, loss_type} -> {loss, training_time_ms, ...}
    GET  /v1/models, /v1/models/{id}, POST /v1/chat/completions, /v1/completions
                                  the OpenAI API on the served model, from Ray Serve LLM (409 with openai_api false)

The served model (openai_api: true, the default, and always with policy "llm") is a second deployment,
PolicyLLM (serve.llm_server): Ray Serve LLM's LLMServer, that is vLLM's OpenAI server (streaming, n, tool
calls). This ingress is Ray's OpenAiIngress with our routes added, so both surfaces share one engine, one
port, the API key, body limit and timeouts, whichever policy answers /predict-delta.
With policy "llm" the served model reads the persona harness's prompt and writes an apply_delta call
(rollout.harnesses.persona.policy_format), sampled under the grammar of one such call on the harness's and the
profile's axes unless constrain_replies is false; a reply that cannot be used, a prompt that does not fit, or a
failed engine falls back to the persona expert and says so in `reasoning`, never a 500. Policy "evidence" (the default): the evidence policy
(rollout.harnesses.persona.evidence_policy) answers from the response text, patterns and similarity, with a
bounded per-profile memory. Policy "expert": the persona expert answers. Policy
"rllib": the PPO baseline's checkpoint (`terrarium baseline`) answers, loaded by whoever starts the service
(cluster.serve_command) and handed to build_app; it is trained offline, so /train refuses it. RustyWorm's
request does not say how many observations of the target came before, so the PPO policy reads every request
as the target's first observation (observations_used 0, as at the start of a training episode).
Every policy but "evidence" (which judges its own steps) answers through the SimilarityGuard
(rollout.harnesses.persona.similarity_guard), policy llm's expert fallback included, and so does the expert
fallback that answers should the evidence policy itself raise: a step after which the client's similarity fell
is undone and its moves are not repeated, and under a similarity that never changes the profile goes back to
where it was found, so that no policy leaves profiles worse on average than it found them
by the client's own measure. The delta sent is then relative to the request's profile with confidence 1, and
the guard's note, when it has one, ends `reasoning` (a fallback's still starts with "Fallback").
The evidence policy and the guard keep per-profile memories (serve.persona_sessions.PersonaSessions): in the
replica when there is one, else in one PersonaSessions deployment that every ingress replica calls, so that a
client's consecutive requests are judged by one memory however Serve routes them; while that deployment does
not answer, the answer is a counted fallback (the expert through the guard, or, without the guard, no move).

With a served model, every replica of an application shares one PolicyTrainer actor (learner.online_trainer),
which pushes weights into PolicyLLM (serve.llm_server.ServedEngine): /train updates and published
checkpoints reach the one engine in order, each as a hot reload (pause, load on every worker, resume). This
package imports nothing from learner: whoever starts the service (cluster.serve_command, a test) starts that actor and
hands its handle to build_app/run; checkpoint facts are read here (rollout.models.checkpoints). The published
checkpoint is the deployment's user_config; `publish` changes it and Serve reconfigures the running replicas
in place (no restart, requests in flight finish; the engine holds new requests while it swaps weights).
/version reports the engine's policy version; OpenAI answers carry it as system_fingerprint "policy-vN".

/train is idempotent, across replicas and processes: it trains only on the trajectories the store reports as
newly stored (rollout.data.store.put_documents), and the first request with a given set of ids claims that
set and keeps its answer in the store; a retry (even one racing the first on another replica) returns that
earlier answer, with the same policy_version, and takes no second optimizer step.

Errors: a malformed body, or numbers beyond what the service computes with, is 422 with the field's path in
`detail[].loc` and in `message` (OpenAI routes too); a body over max_body_bytes is 413; a missing or wrong API key (when
configured) is 401, except on /health (/docs and /openapi.json need it too); a full queue is 503 with
Retry-After; a request not answered within request_timeout_s is 408.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayError
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ModelCard,
    ModelList,
    OpenAIHTTPException,
    to_model_metadata,
)
from ray.serve import Application
from ray.serve.config import BackpressureConfig
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress
from ray.util.metrics import Counter
from transformers import AutoTokenizer

from rollout.chat import ChatRenderer
from rollout.harnesses.tools import ActionParseError
from rollout.models.checkpoints import describe_checkpoint
from rollout.models.source import resolve_model_path
from rollout.harnesses.persona import estimator
from rollout.harnesses.persona.models import EvolutionTrajectory, PersonalityDelta
from rollout.data.store import open_store
from rollout.data.trajectory import Trajectory
from serve.config import PublishedPolicy, ServeConfig
from serve.guards import GuardSettings, RequestGuard
from serve.llm_server import llm_config, llm_deployment
from serve.persona_sessions import CALL_TIMEOUT_S, PersonaSessions, PersonaSessionsDeployment
from serve.persona_sessions import DEPLOYMENT_NAME as SESSIONS_DEPLOYMENT_NAME
from rollout.harnesses.persona.policy_format import PersonaPolicyFormat, parse_delta, reply_grammar, reply_sampling
from serve.schemas import (
    PredictDeltaRequest,
    PredictDeltaResponse,
    TrainRequest,
    TrainResponse,
    VersionResponse,
)

EVOLUTION_KIND = "evolution_trajectory"  # the store's document kind for /train records
TRAIN_REQUEST_KIND = "train_request"  # one per distinct set of trajectory ids: claimed by the first request
TRAIN_ANSWER_KIND = "train_answer"  # that request's answer, returned to its retries
_ANSWER_POLL_S = 0.25
DEPLOYMENT_NAME = "PolicyService"
FALLBACK = "Fallback"  # how a fallback answer's reasoning starts (counted in /version and the metrics)
_MAX_ERROR_CHARS = 300  # of a model reply or an exception quoted in a response
LOSS_TYPES = {"MINIRL": "minirl", "GRPO": "grpo"}  # RustyWorm's names -> the learner's
logger = logging.getLogger(__name__)

api = FastAPI(title="Terrarium policy service", description=__doc__)
api.add_middleware(RequestGuard)
# Ray's OpenAI handlers, mounted on our app (the embeddings, score, audio and tokenizer routes are not).
OPENAI_ROUTES = {
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
}


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing each wrong field as a path (body.profile.personality.0.value), without echoing inputs."""
    errors = [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()]
    message = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in errors)
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


@api.exception_handler(OverflowError)
async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
    """A number in the request too large to compute with (an int beyond a float, say) is the client's."""
    message = f"body: a number is too large to compute with ({exc})"
    return JSONResponse({"detail": [{"loc": ["body"], "msg": message, "type": "overflow"}], "message": message}, 422)


@api.exception_handler(OpenAIHTTPException)
async def _openai_error(request: Request, exc: OpenAIHTTPException) -> JSONResponse:
    """Errors of the OpenAI routes in OpenAI's shape, with their own status (vLLM's 400s stay 400s)."""
    return JSONResponse({"error": {"message": exc.message, "type": exc.type, "code": exc.status_code}}, exc.status_code)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _last_line(exc: Exception) -> str:
    """The last line of an exception's message (a remote one's cause), shortened; empty for an empty message."""
    lines = str(exc).strip().splitlines()
    return _short(lines[-1] if lines else "")


def _failure(exc: Exception) -> str:
    """An exception as a reasoning quotes it: its type and its message's last line (a timeout: how long)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CALL_TIMEOUT_S:.0f} s"
    return f"{type(exc).__name__}: {_last_line(exc)}"


def _held(why: str) -> PredictDeltaResponse:
    """The fallback that moves nothing: with no session memory no step can be judged or guarded, and a profile
    left where it is is never made worse."""
    return PredictDeltaResponse(delta=PersonalityDelta(), confidence=1.0, reasoning=f"{FALLBACK}: no move, because {why}.")


@dataclass(frozen=True)
class ServiceBuild:
    """What the replicas are built from, apart from the published policy (their user_config). `publish`
    redeploys the running app from its replicas' own build, so only the user_config changes and Serve
    reconfigures them in place; a new build (new build_id) replaces them."""

    config: ServeConfig
    trainer: Any | None  # learner.online_trainer.PolicyTrainer actor; None when no model is served
    model_path: str | None
    api_key: str | None
    delta_policy: Any | None = None  # policy rllib: the loaded checkpoint policy (predict(profile, observation))
    build_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class PolicyService(OpenAiIngress):
    def __init__(
        self, build: ServiceBuild, sessions: Any, llm_deployments: dict[str, Any], model_cards: dict[str, Any]
    ) -> None:
        super().__init__(llm_deployments, model_cards)
        self.build = build
        self.config = build.config
        self.guard = GuardSettings(self.config.max_body_bytes, build.api_key)  # read by serve.guards.RequestGuard
        self.trainer = build.trainer
        self.llm = llm_deployments.get(self.config.model_id)  # PolicyLLM's handle; None without a model
        self.delta_policy = build.delta_policy
        # The evidence policy and the similarity guard: PersonaSessions' handle when the app may run several
        # replicas (their one shared memory), else this replica's own (no hop)
        self.sessions = sessions if sessions is not None else PersonaSessions(self.config.policy == "evidence")
        self.shared_sessions = sessions is not None
        self.answers = self.fallbacks = 0  # /predict-delta answers of this replica, and how many were fallbacks
        self.answer_counter = Counter(
            "terrarium_predict_delta_answers", "/predict-delta answers, by outcome (policy or fallback)", ("outcome",)
        )
        self.published = PublishedPolicy()
        self.store = open_store(self.config.store) if self.config.store is not None else None
        self.store_lock = asyncio.Lock()  # one store write at a time per replica
        if build.model_path is not None:
            self.tokenizer = AutoTokenizer.from_pretrained(build.model_path)
            self.format = PersonaPolicyFormat(ChatRenderer(self.tokenizer))
            self.end_of_turn = self.format.renderer.end_of_turn_id

    async def _process_llm_request(self, body: Any, call_method: str, raw_request: Request | None = None) -> Any:
        if self.llm is None:
            raise HTTPException(409, "this service runs no language model (openai_api: false); the OpenAI API needs "
                                "openai_api: true")
        if body.model not in (None, self.config.model_id) and await self.model(body.model) is None:
            raise OpenAIHTTPException(
                message=f"model {body.model!r} is not served here: GET /v1/models lists the models",
                status_code=404,
                type="NotFoundError",
            )
        return await super()._process_llm_request(body, call_method, raw_request)

    async def model(self, model_id: str) -> ModelCard | None:
        """The card of the served model, or of one of its LoRA versions (serve.llm_server.adapter_model_id)."""
        card = await super().model(model_id)
        if card is None and self.llm is not None and model_id in await self.llm.list_adapters.remote():
            card = self._adapter_card(model_id)
        return card

    async def models(self) -> ModelList:
        """The served model, then its LoRA versions, oldest first (Ray lists adapters from cloud storage only)."""
        listed = await super().models()
        if self.llm is not None:
            listed.data += [self._adapter_card(name) for name in await self.llm.list_adapters.remote()]
        return listed

    def _adapter_card(self, model_id: str) -> ModelCard:
        """A LoRA version's card: the served model's, under the version's name."""
        return self._model_cards[self.config.model_id].model_copy(update={"id": model_id})

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this at start and whenever the user_config changes (publish)."""
        release = PublishedPolicy.model_validate(user_config)
        if release.checkpoint is not None and self.trainer is not None:
            await self.trainer.load_checkpoint.remote(release.checkpoint, release.policy_version)
        self.published = release

    def get_build(self) -> ServiceBuild:
        """What this replica was built from (publish redeploys it with a new user_config)."""
        return self.build

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/version", response_model=VersionResponse)
    async def version(self) -> VersionResponse:
        return VersionResponse(
            policy_kind=self.config.policy,
            policy_version=await self.llm.get_policy_version.remote() if self.llm is not None else None,
            model_path=self.build.model_path,
            checkpoint=self.config.checkpoint if self.delta_policy is not None else self.published.checkpoint,
            checkpoint_step=self.published.checkpoint_step,
            answers=self.answers,
            fallbacks=self.fallbacks,
            fallback_rate=self.fallbacks / self.answers if self.answers else 0.0,
        )

    @api.post("/predict-delta", response_model=PredictDeltaResponse)
    async def predict_delta(self, request: PredictDeltaRequest) -> PredictDeltaResponse:
        answer = await self._predict_delta(request)
        fallback = answer.reasoning.startswith(FALLBACK)
        self.answers += 1
        self.fallbacks += fallback
        self.answer_counter.inc(tags={"outcome": "fallback" if fallback else "policy"})
        return answer

    async def _predict_delta(self, request: PredictDeltaRequest) -> PredictDeltaResponse:
        failure = None
        if self.config.policy == "evidence":
            try:
                delta, confidence, reasoning = await self._session_call("predict", request.profile, request.observation)
                return PredictDeltaResponse(delta=delta, confidence=confidence, reasoning=reasoning)
            except Exception as exc:  # a defect of the policy must not cost the client its answer: counted, guarded
                failure = f"the evidence policy failed ({_failure(exc)})"
        try:
            prepared = await self._session_call("prepare", request.profile, request.observation)
        except Exception as exc:  # no memory to judge the last step by, nor to guard this one: no move
            return _held(f"the session memory failed ({_failure(exc)})")
        guarded = request.model_copy(update={"profile": prepared.profile})
        if failure is not None:  # the expert, which unguarded leaves most profiles worse, through the guard too
            answer = self._fallback(guarded, failure)
        elif prepared.passes:
            answer = await self._policy_answer(guarded)
        else:  # a deaf similarity: the guard holds every move, so the policy (an engine call, maybe) is not asked
            answer = PredictDeltaResponse(delta=PersonalityDelta(), confidence=1.0,
                                          reasoning=f"{self.config.policy} policy not asked.")
        try:
            delta, note = await self._session_call("finish", prepared, answer.delta)
        except Exception as exc:
            return _held(f"the session memory failed ({_failure(exc)})")
        reasoning = f"{answer.reasoning} {note}" if note else answer.reasoning  # after: a fallback still starts it
        return answer.model_copy(update={"delta": delta, "confidence": delta.confidence, "reasoning": reasoning})

    async def _session_call(self, method: str, *args: Any) -> Any:
        """PersonaSessions.`method`(*args): in this replica, or on the shared deployment, waited for at most
        CALL_TIMEOUT_S."""
        if not self.shared_sessions:
            return getattr(self.sessions, method)(*args)
        return await asyncio.wait_for(getattr(self.sessions, method).remote(*args), CALL_TIMEOUT_S)

    async def _policy_answer(self, request: PredictDeltaRequest) -> PredictDeltaResponse:
        """The answer of a policy other than the evidence one (or its expert fallback), before the guard."""
        if self.delta_policy is not None:
            delta = self.delta_policy.predict(request.profile, request.observation, observations_used=0)
            reasoning = (
                f"rllib PPO policy ({self.config.checkpoint}): the greedy delta of the trained MLP for this "
                "observation, read as the target's first observation"
            )
            return PredictDeltaResponse(delta=delta, confidence=delta.confidence, reasoning=reasoning)
        if self.config.policy == "expert":
            delta, confidence, reasoning = estimator.predict_delta(request.profile, request.observation)
            return PredictDeltaResponse(delta=delta, confidence=confidence, reasoning=reasoning)
        prompt = self.format.prompt_ids(request.profile, request.observation)
        context = self.config.engine.max_model_len
        sampling = reply_sampling(self.config.sampling, len(prompt), context)
        if sampling is None:
            why = f"the prompt ({len(prompt)} tokens) does not fit the model's context of {context}"
            return self._fallback(request, why)
        try:
            grammar = reply_grammar(request.profile) if self.config.constrain_replies else None
            generation = await self.llm.generate.remote(prompt, sampling, [self.end_of_turn], None, grammar)
        except Exception as exc:  # the engine failed, or Serve could not reach it: a counted fallback, never a 500
            return self._fallback(request, f"the policy engine failed ({_last_line(exc)})")
        reply = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
        try:
            delta = parse_delta(reply, request.profile)
        except ActionParseError as exc:
            why = f"the policy's reply (version {generation.policy_version}) is not a usable apply_delta call: {exc}"
            return self._fallback(request, _short(why))
        return PredictDeltaResponse(
            delta=delta,
            confidence=delta.confidence,
            reasoning=f"Written by the policy model (version {generation.policy_version}): {_short(reply.strip())}",
            policy_version=generation.policy_version,
        )

    def _fallback(self, request: PredictDeltaRequest, why: str) -> PredictDeltaResponse:
        delta, confidence, reasoning = estimator.predict_delta(request.profile, request.observation)
        return PredictDeltaResponse(
            delta=delta, confidence=confidence, reasoning=f"{FALLBACK} to the persona expert because {why}. {reasoning}"
        )

    @api.post("/train", response_model=TrainResponse)
    async def train(self, request: TrainRequest) -> TrainResponse:
        if self.delta_policy is not None:
            detail = (
                "policy 'rllib' is not trainable over HTTP: the PPO checkpoint trains offline on the persona "
                "simulator (`terrarium baseline CONFIG`); nothing was stored"
            )
            raise HTTPException(409, detail)
        if self.store is None:
            raise HTTPException(503, "no trajectory store is configured: /train keeps trajectories before training")
        documents = [trajectory.model_dump(mode="json") for trajectory in request.trajectories]
        start = time.perf_counter()
        if self.config.policy != "llm":  # the model does not answer /predict-delta: keep the data, as RustyWorm expects
            await self._put(EVOLUTION_KIND, documents)
            return TrainResponse(
                loss=0.0,
                training_time_ms=round(1000 * (time.perf_counter() - start)),
                num_trajectories_used=0,
                loss_type=request.loss_type,
                policy_version=None,
            )

        key = hashlib.sha256("\n".join(sorted({t.id for t in request.trajectories})).encode()).hexdigest()
        if key not in await self._put(TRAIN_REQUEST_KIND, [{"id": key}]):  # a retry: answer as the first did
            earlier = await self._earlier_answer(key)
            if earlier is not None:
                return earlier
        new_ids = await self._put(EVOLUTION_KIND, documents)
        group_id = f"train-{uuid.uuid4().hex}"
        records: list[Trajectory] = []
        weights: list[float | None] = []
        for trajectory, weight in zip(request.trajectories, request.importance_weights):
            if trajectory.id not in new_ids:  # stored before: trained on then (or by a racing replica)
                continue
            new_ids.discard(trajectory.id)  # an id repeated in the request is trained once
            record = self._training_record(trajectory, group_id)
            if len(record.token_ids) <= self.config.engine.max_model_len:  # longer: the model never reads it
                records.append(record)
                weights.append(weight)
        try:
            metrics = await self.trainer.update.remote(records, weights, LOSS_TYPES[request.loss_type])
        except RayError as exc:
            detail = _last_line(exc)
            raise HTTPException(503, f"the policy update failed (the trajectories are stored): {detail}") from exc
        if metrics.get("nonfinite_grad_steps"):  # the learner's rule: the step was skipped
            detail = "the gradient was not finite: no step was taken, the weights and version are unchanged"
            raise HTTPException(500, f"the policy update failed (the trajectories are stored): {detail}")
        answer = TrainResponse(
            loss=metrics["loss"],
            training_time_ms=round(1000 * (time.perf_counter() - start)),
            num_trajectories_used=int(metrics["num_trajectories_used"]),
            loss_type=request.loss_type,
            policy_version=int(metrics["policy_version"]),
        )
        await self._put(TRAIN_ANSWER_KIND, [answer.model_dump() | {"id": key}])
        return answer

    async def _put(self, kind: str, documents: list[dict[str, Any]]) -> set[str]:
        """Store documents (one store write at a time per replica); the ids this call stored first."""
        try:
            async with self.store_lock:
                return await asyncio.to_thread(self.store.put_documents, kind, documents)
        except Exception as exc:  # disk or database failure: say so, train nothing
            detail = f"storing the trajectories failed, nothing was trained: {_short(str(exc))}"
            raise HTTPException(503, detail) from exc

    async def _earlier_answer(self, key: str) -> TrainResponse | None:
        """The answer of the first request with these ids, waiting up to train_retry_wait_s while it is still
        training (on this or another replica); None if none comes (it failed, or its replica died)."""
        deadline = time.monotonic() + self.config.train_retry_wait_s
        while True:
            found = await asyncio.to_thread(self.store.get_documents, TRAIN_ANSWER_KIND, [key])
            if found:
                return TrainResponse.model_validate({k: v for k, v in found[0].items() if k != "id"})
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(_ANSWER_POLL_S)

    def _training_record(self, trajectory: EvolutionTrajectory, group_id: str) -> Trajectory:
        """The step as one token sequence: the prompt /predict-delta would show, then the action as the tool
        call the model would write (the only policy tokens)."""
        prompt = self.format.prompt_ids(trajectory.state, trajectory.observation)
        reply = self.format.reply_ids(trajectory.action, trajectory.state)
        tokens = prompt + reply
        return Trajectory.from_episode(
            episode_id=trajectory.id,
            run_id=self.config.app_name,
            step=0,
            group_id=group_id,
            harness="persona",
            seed=0,
            policy_version=-1,  # RustyWorm chose the action, not this model
            token_ids=tokens,
            loss_mask=[0] * len(prompt) + [1] * len(reply),
            prompt_length=len(prompt),
            turn_rewards=[trajectory.reward],
            status="completed",
        )


PolicyDeployment = serve.deployment(make_fastapi_ingress(PolicyService, endpoint_map=OPENAI_ROUTES, app=api))


# ---- building, running and publishing --------------------------------------------------------------------


def api_key(config: ServeConfig) -> str | None:
    """The key requests must carry; None when no api_key_env is configured. Fails closed: a named variable
    that is unset or empty is a ValueError, so the service does not start without the authentication its
    config asks for."""
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env, "")
    if not key.strip():
        state = "unset" if config.api_key_env not in os.environ else "empty"
        raise ValueError(
            f"api_key_env names ${config.api_key_env}, which is {state}: set it to the API key, or set api_key_env "
            "to null to serve without one (loopback only)"
        )
    return key


def _application(build: ServiceBuild, release: PublishedPolicy) -> Application:
    config = build.config
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=config.retry_after_s),
        "ray_actor_options": {"num_cpus": config.replica_num_cpus},
        "user_config": release.model_dump(mode="json"),
        # Serve's imperative API gives every serve.run a new random code version, which restarts the replicas.
        # Pinning it to the build id makes a user_config-only change (publish) an in-place reconfigure, as a
        # declarative `serve deploy` would; `version` is only accepted as an internal option.
        "version": build.build_id,
        "_internal": True,
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = config.autoscaling.model_dump()
    else:
        options["num_replicas"] = config.num_replicas
    llm_deployments, model_cards = {}, {}
    if build.model_path is not None:  # the served model: PolicyLLM, the same build version (publish keeps it running)
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        served = llm_config(
            config.model_id, build.model_path, config.engine, config.tool_call_parser, use_gpu, config.lora
        )
        llm_deployments[config.model_id] = llm_deployment(served, config.engine.weight_sync_timeout_s, build.build_id)
        model_cards[config.model_id] = to_model_metadata(config.model_id, served)
    sessions = None  # one replica: it keeps the per-profile memory itself
    if config.autoscaling is not None or config.num_replicas > 1:  # the one memory every replica shares
        sessions = PersonaSessionsDeployment.options(
            name=SESSIONS_DEPLOYMENT_NAME,
            num_replicas=1,
            max_ongoing_requests=1024,  # sub-millisecond calls: the ingress replicas' requests, never queued long
            ray_actor_options={"num_cpus": 0},
            version=build.build_id,  # publish keeps it (and its memory) running
            _internal=True,
        ).bind(config.policy == "evidence")
    return PolicyDeployment.options(**options).bind(build, sessions, llm_deployments, model_cards)


def _describe_checkpoint(checkpoint: str | Path, policy_version: int | None) -> PublishedPolicy:
    """The user_config serving `checkpoint` (a checkpoint, model or run directory); ValueError when there is
    nothing to load."""
    try:
        return PublishedPolicy.model_validate(describe_checkpoint(checkpoint, policy_version))
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None


def build_app(config: ServeConfig, trainer: Any | None = None, delta_policy: Any | None = None) -> Application:
    """The application for `config`. `trainer`: the learner's PolicyTrainer actor handle (it pushes weights
    into the app's PolicyLLM deployment), required exactly when the model is served (config.openai_api). The
    model serves config.initial_weights from the start, else its own weights. `delta_policy`: for policy
    rllib, config.checkpoint's policy as the caller loaded it (predict(profile, observation,
    observations_used)), handed to the replicas. Needs a connected Ray."""
    if config.openai_api != (trainer is not None):
        raise ValueError(
            "a served model (openai_api: true) needs a PolicyTrainer actor (learner.online_trainer."
            f"start_policy_trainer) and a service without one takes none; got openai_api {config.openai_api} "
            f"with trainer {trainer!r}"
        )
    if (config.policy == "rllib") != (delta_policy is not None):
        raise ValueError("policy 'rllib' needs its loaded checkpoint policy (delta_policy), and only it takes one")
    model_path = None
    release = PublishedPolicy()
    if trainer is not None:
        model_path = str(resolve_model_path(config.model))
        if config.initial_weights is not None:
            release = _describe_checkpoint(config.initial_weights, None)
    return _application(ServiceBuild(config, trainer, model_path, api_key(config), delta_policy), release)


def run(config: ServeConfig, trainer: Any | None = None, delta_policy: Any | None = None) -> str:
    """Deploy `config` on Serve's HTTP proxy at http://{host}:{port}{route_prefix} (127.0.0.1:8888 by default)
    and return that URL; the app keeps serving until it is deleted or its trainer's owner exits. Needs a
    connected Ray; a Serve instance already running keeps its own host and port."""
    app = build_app(config, trainer, delta_policy)  # first: a missing API key stops here, before anything listens
    serve.start(http_options={"host": config.host, "port": config.port, "request_timeout_s": config.request_timeout_s})
    serve.run(app, name=config.app_name, route_prefix=config.route_prefix)
    return f"http://{config.host}:{config.port}{config.route_prefix}"


def publish(
    config: ServeConfig, checkpoint: str | Path, policy_version: int | None = None
) -> PublishedPolicy | None:
    """Serve `checkpoint` (a checkpoint, model or run directory: its newest checkpoint) as `policy_version`
    (default: the checkpoint's own) from the running application config.app_name in this Ray cluster: its
    user_config changes, the replicas reconfigure in place and the engine swaps weights without dropping
    requests. Only config.app_name is read; the rest comes from the running app. Returns what is now served,
    or None, with a log line, when no such app runs or it serves no model (openai_api: false)."""
    if not ray.is_initialized() or config.app_name not in serve.status().applications:
        logger.warning("publish: no Serve application %r is running; %s not published", config.app_name, checkpoint)
        return None
    build: ServiceBuild = serve.get_app_handle(config.app_name).get_build.remote().result()
    if build.trainer is None:
        logger.warning(
            "publish: application %r serves no model (openai_api: false): no weights to publish", config.app_name
        )
        return None
    release = _describe_checkpoint(checkpoint, policy_version)
    serve.run(_application(build, release), name=config.app_name, route_prefix=build.config.route_prefix)
    logger.info("publish: %r now serves %s as version %d", config.app_name, release.checkpoint, release.policy_version)
    return release
