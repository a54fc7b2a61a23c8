"""A simulated RustyWorm client: evolves a starting profile toward a hidden target by asking a delta policy
for a PersonalityDelta after each observation, as the Rust client does through /predict-delta.

One episode: up to max_observations times, the generator writes one BehaviorObservation of the target
(similarity_to_target: the generator's own measure of the current profile), the policy answers a delta, the
client applies it with apply_correction. Converged when the convergence to the hidden target
(analysis.convergence) reaches 0.90. Both convergences are recorded: to the hidden target, and RustyWorm's
observed-signature compute_convergence against the responses seen (analysis.observed_convergence).

Policies here speak the service's interface, predict(profile, observation) -> PersonalityDelta, plus
new_episode() (a stateless policy ignores it). The adapters wrap the project's other policies so the
leave-one-generator-out table plays them all on the same personas; LLMClientPolicy is the persona LLM as
/predict-delta serves it (policy llm), on a vLLM engine actor. GuardedClientPolicy wraps a policy in the
similarity guard, as the service answers every policy but the evidence one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import ray

from rollout.harnesses.base import Observation
from rollout.harnesses.persona.analysis import CONVERGED_AT, convergence, observed_convergence
from rollout.harnesses.persona.estimator import RustyWormHeuristic, predict_delta
from rollout.harnesses.persona.evidence_policy import EvidencePolicy, PolicyParams
from rollout.harnesses.persona.generators import FamilyPersona, Generator
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta, apply_correction
from rollout.harnesses.persona.policy_format import PersonaPolicyFormat, parse_delta, reply_grammar, reply_sampling
from rollout.harnesses.persona.similarity_guard import SimilarityGuard
from rollout.harnesses.tools import ActionParseError

MAX_OBSERVATIONS = 10


class DeltaPolicy(Protocol):
    def new_episode(self) -> None: ...

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta: ...


@dataclass
class EpisodeResult:
    converged: bool
    observations: int  # observations used (deltas asked for)
    start_convergence: float
    final_convergence: float
    observed_convergence: float  # RustyWorm's compute_convergence at the end

    @property
    def worse(self) -> bool:
        return self.final_convergence < self.start_convergence - 1e-9


def play_episode(
    policy: DeltaPolicy, persona: FamilyPersona, generator: Generator, rng: random.Random,
    max_observations: int = MAX_OBSERVATIONS,
) -> EpisodeResult:
    return play_together(policy, [persona], generator, [rng], max_observations)[0]


def play_together(
    policy: DeltaPolicy, personas: list[FamilyPersona], generator: Generator, rngs: list[random.Random],
    max_observations: int = MAX_OBSERVATIONS,
) -> list[EpisodeResult]:
    """Episodes of several profiles at once, one request each in turn (a client with several profiles in
    flight); each persona observed with its own rng."""
    if max_observations < 1:
        raise ValueError(f"max_observations must be at least 1, got {max_observations}")
    policy.new_episode()
    profiles = [persona.start for persona in personas]
    starts = [convergence(persona.start, persona.target) for persona in personas]
    responses: list[list[str]] = [[] for _ in personas]
    results: list[EpisodeResult | None] = [None] * len(personas)
    for used in range(1, max_observations + 1):
        for j, persona in enumerate(personas):
            if results[j] is not None:
                continue
            observation = generator.observe(persona.target, profiles[j], rngs[j])
            responses[j].append(observation.response)
            profiles[j] = apply_correction(profiles[j], policy.predict(profiles[j], observation))
            final = convergence(profiles[j], persona.target)
            if final >= CONVERGED_AT or used == max_observations:
                observed = observed_convergence(profiles[j], responses[j])
                results[j] = EpisodeResult(final >= CONVERGED_AT, used, starts[j], final, observed)
    return results


class UntoldClientPolicy:
    """`inner` as the service meets a client: never told that a new profile begins (new_episode does nothing),
    so only what the requests show tells profiles under one id apart (session_memory.SessionMemory.claim)."""

    def __init__(self, inner: DeltaPolicy) -> None:
        self.inner = inner

    def new_episode(self) -> None:
        return None

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        return self.inner.predict(profile, observation)


class ScaledClientPolicy:
    """`inner`'s deltas as a client applies them at a confidence of its own (a learning rate, a trust), drawn by
    `share` for each delta: RustyWorm's apply_correction multiplies every amount by it."""

    def __init__(self, inner: DeltaPolicy, share: Callable[[], float]) -> None:
        self.inner, self.share = inner, share

    def new_episode(self) -> None:
        self.inner.new_episode()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        return self.inner.predict(profile, observation).model_copy(update={"confidence": self.share()})


class EvidenceClientPolicy:
    def __init__(self, params: PolicyParams | None = None) -> None:
        self.policy = EvidencePolicy(params) if params is not None else EvidencePolicy()

    def new_episode(self) -> None:
        self.policy.forget()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        return self.policy.predict(profile, observation)[0]


class GuardedClientPolicy:
    """`inner` as /predict-delta serves every policy but the evidence one: through a SimilarityGuard (one per
    adapter, forgotten each episode). `inner` stays reachable (the LLM client's counters)."""

    def __init__(self, inner: DeltaPolicy) -> None:
        self.inner, self.guard = inner, SimilarityGuard()

    def new_episode(self) -> None:
        self.guard.forget()
        self.inner.new_episode()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        prepared = self.guard.prepare(profile, observation)  # held (passes False): the policy is not asked
        inner = self.inner.predict(prepared.profile, observation) if prepared.passes else PersonalityDelta()
        return self.guard.finish(prepared, inner)[0]


class ExpertClientPolicy:
    """The persona expert as /predict-delta serves it (one request, no history)."""

    def new_episode(self) -> None:
        return None

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        return predict_delta(profile, observation)[0]


class HeuristicClientPolicy:
    """RustyWorm's own refine_profile over the responses seen this episode (what the client does alone)."""

    def __init__(self) -> None:
        self.heuristic = RustyWormHeuristic()

    def new_episode(self) -> None:
        self.heuristic.reset()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        facts = {"observation": observation.model_dump(mode="json"), "profile": profile.model_dump(mode="json")}
        action = self.heuristic.act(Observation(content="", metadata=facts))
        arguments = action.arguments
        return PersonalityDelta(adjustments=list(arguments["adjustments"].items()), confidence=arguments["confidence"])


class CheckpointClientPolicy:
    """A loaded checkpoint policy with predict(profile, observation, observations_used) (the RLlib PPO one)."""

    def __init__(self, loaded) -> None:
        self.loaded = loaded
        self.used = 0

    def new_episode(self) -> None:
        self.used = 0

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        delta = self.loaded.predict(profile, observation, observations_used=self.used)
        self.used += 1
        return delta


class LLMClientPolicy:
    """The persona LLM as /predict-delta serves it with policy llm: the harness's prompt for (profile,
    observation), one greedy reply from `engine` (a rollout.engine InferenceEngine actor), sampled under the
    profile's apply_delta grammar when `constrain` (serve.constrain_replies); a reply that is not a usable
    apply_delta call is counted in `invalid`, a prompt that does not fit `max_model_len` (the engine's context)
    in `too_long`, and both fall back to the persona expert, as the service does."""

    def __init__(self, engine, policy_format: PersonaPolicyFormat, sampling, max_model_len: int,
                 constrain: bool = True, timeout_s: float = 600.0) -> None:
        self.engine, self.format, self.sampling, self.max_model_len = engine, policy_format, sampling, max_model_len
        self.constrain, self.timeout_s = constrain, timeout_s
        self.replies = self.invalid = self.too_long = 0

    def new_episode(self) -> None:
        return None

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        renderer = self.format.renderer
        prompt = self.format.prompt_ids(profile, observation)
        sampling = reply_sampling(self.sampling, len(prompt), self.max_model_len)
        if sampling is None:
            self.too_long += 1
            return predict_delta(profile, observation)[0]
        self.replies += 1
        grammar = reply_grammar(profile) if self.constrain else None
        call = self.engine.generate.remote(prompt, sampling, [renderer.end_of_turn_id], 0, grammar)
        generation = ray.get(call, timeout=self.timeout_s)
        try:
            return parse_delta(renderer.tokenizer.decode(generation.token_ids, skip_special_tokens=True), profile)
        except ActionParseError:
            self.invalid += 1
            return predict_delta(profile, observation)[0]
