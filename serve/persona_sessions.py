"""PersonaSessions: the per-profile memory of /predict-delta, one deployment for all of the service's replicas.

Why: RustyWorm's request carries no history. The evidence policy and the similarity guard judge each step by
the similarity the client reports next, so each keeps a session per profile id
(rollout.harnesses.persona.session_memory). Kept in each ingress replica, that memory breaks as soon as the
service scales out (num_replicas > 1, autoscaling): Serve routes a client's consecutive requests to any
replica, and one that did not answer the last step cannot judge it, calibrate the similarity or remember what
it ruled out. So the memory lives here, in one replica that every ingress replica calls through its handle;
the ingress replicas stay stateless. A call is the policy's arithmetic (well under a millisecond). Should this
replica die, Serve starts another with an empty memory: sessions start afresh, the answers go on.

The ingress (serve.app) calls predict (policy evidence) or prepare and finish around its own policy's answer
(every other policy, and the evidence policy's expert fallback); see SimilarityGuard for the two.
"""

from __future__ import annotations

from ray import serve

from rollout.harnesses.persona.evidence_policy import EvidencePolicy
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta
from rollout.harnesses.persona.similarity_guard import Prepared, SimilarityGuard

DEPLOYMENT_NAME = "PersonaSessions"
CALL_TIMEOUT_S = 10.0  # a call is sub-millisecond; longer means the replica is gone or restarting


class PersonaSessions:
    """The evidence policy (when it is the served policy) and the similarity guard, with their memories."""

    def __init__(self, evidence: bool) -> None:
        self.evidence = EvidencePolicy() if evidence else None
        self.guard = SimilarityGuard()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> tuple[PersonalityDelta, float, str]:
        """The evidence policy's answer: (delta, confidence, reasoning)."""
        if self.evidence is None:
            raise ValueError("this service's policy is not 'evidence': PersonaSessions holds no evidence policy")
        return self.evidence.predict(profile, observation)

    def prepare(self, profile: AiProfile, observation: BehaviorObservation) -> Prepared:
        return self.guard.prepare(profile, observation)

    def finish(self, prepared: Prepared, inner: PersonalityDelta) -> tuple[PersonalityDelta, str]:
        return self.guard.finish(prepared, inner)


PersonaSessionsDeployment = serve.deployment(PersonaSessions)

__all__ = ["CALL_TIMEOUT_S", "DEPLOYMENT_NAME", "PersonaSessions", "PersonaSessionsDeployment"]
