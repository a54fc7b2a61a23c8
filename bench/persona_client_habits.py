"""How the persona policies serve clients with habits of their own: in naming profiles and in applying deltas.

The service keeps its memory of a client per profile id and judges each step by the profile the next request
brings (rollout.harnesses.persona.session_memory). Each generator's judge personas are played by the served
default (the evidence policy) and the guarded expert on the same personas and observation draws, by clients
that:
- "an id each, as sent": give every profile its own id and apply each delta as sent (what
  bench/persona_generalization.py plays);
- "one id, in turn": give every profile the id "mimic", one episode after another;
- "one id, two at once": the same, two profiles in flight, one request each in turn (client.play_together);
- "applied at 0.3", "at 1.5", "at 0.3-1.0 drawn": apply each delta at a confidence of their own (a learning
  rate; client.ScaledClientPolicy), fixed or drawn per delta;
- "blended with the heuristic": apply the delta plus RustyWorm's own heuristic nudges at half strength.
The policy is never told that a new profile begins (client.UntoldClientPolicy): only what the requests show
tells profiles apart. Columns as in bench/persona_generalization.py.

    PYTHONPATH=$PWD python bench/persona_client_habits.py [--personas 200] [--generators NAME ...]
"""

from __future__ import annotations

import argparse
import random
import time

from persona_generalization import row

from rollout.harnesses.persona.client import (
    DeltaPolicy, EpisodeResult, EvidenceClientPolicy, ExpertClientPolicy, GuardedClientPolicy, HeuristicClientPolicy,
    ScaledClientPolicy, UntoldClientPolicy, play_episode, play_together,
)
from rollout.harnesses.persona.generators import GENERATORS, FamilyPersona, family_persona
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta

SHARED_ID = "mimic"


class BlendingClient:
    """`inner`'s delta plus RustyWorm's own heuristic nudges at half strength, applied as one delta."""

    def __init__(self, inner: DeltaPolicy) -> None:
        self.inner, self.heuristic = inner, HeuristicClientPolicy()

    def new_episode(self) -> None:
        self.inner.new_episode()
        self.heuristic.new_episode()

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> PersonalityDelta:
        delta = self.inner.predict(profile, observation)
        nudges = self.heuristic.predict(profile, observation)
        amounts = {axis: amount * delta.confidence for axis, amount in delta.adjustments}
        for axis, amount in nudges.adjustments:
            amounts[axis] = amounts.get(axis, 0.0) + 0.5 * amount * nudges.confidence
        return PersonalityDelta(adjustments=list(amounts.items()), confidence=1.0)


def judged(generator: str, count: int) -> tuple[list[FamilyPersona], list[random.Random]]:
    """The judge personas and their observation draws, as bench/persona_generalization.py's play_all makes them."""
    personas = [family_persona("judge", generator, i) for i in range(count)]
    return personas, [random.Random(f"judge-episode-{generator}-{i}") for i in range(count)]


def renamed(persona: FamilyPersona, profile_id: str) -> FamilyPersona:
    return FamilyPersona(persona.target, persona.start.model_copy(update={"id": profile_id}))


def play_habit(make_policy, habit: str, generator: str, count: int) -> list[EpisodeResult]:
    personas, rngs = judged(generator, count)
    observe = GENERATORS[generator]
    policy: DeltaPolicy = make_policy()
    if habit.startswith("one id"):
        policy, personas = UntoldClientPolicy(policy), [renamed(persona, SHARED_ID) for persona in personas]
        if habit == "one id, two at once":
            return [result for first in range(0, count, 2)
                    for result in play_together(policy, personas[first:first + 2], observe, rngs[first:first + 2])]
    draws = random.Random(f"client-shares-{generator}")
    shares = {"applied at 0.3": lambda: 0.3, "applied at 1.5": lambda: 1.5,
              "applied at 0.3-1.0 drawn": lambda: draws.uniform(0.3, 1.0)}
    if habit in shares:
        policy = ScaledClientPolicy(policy, shares[habit])
    elif habit == "blended with the heuristic":
        policy = BlendingClient(policy)
    return [play_episode(policy, persona, observe, rng) for persona, rng in zip(personas, rngs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=200, help="judge personas per generator")
    parser.add_argument("--generators", nargs="*", default=list(GENERATORS))
    args = parser.parse_args()
    policies = {
        "evidence policy (served default)": EvidenceClientPolicy,
        "expert (served: guarded)": lambda: GuardedClientPolicy(ExpertClientPolicy()),
    }
    habits = ("an id each, as sent", "one id, in turn", "one id, two at once", "applied at 0.3", "applied at 1.5",
              "applied at 0.3-1.0 drawn", "blended with the heuristic")
    print(f"{args.personas} judge personas per generator; the policy is never told that a new profile begins")
    for generator in args.generators:
        start = time.perf_counter()
        print(f"\n### {generator}")
        print("| policy, client | converged@0.90 [95% CI] | mean observations to converge | mean final convergence "
              "| share ending worse [95% CI] | RustyWorm observed convergence |")
        print("|---|---|---|---|---|---|")
        for name, make_policy in policies.items():
            for habit in habits:
                print(row(f"{name}, {habit}", play_habit(make_policy, habit, generator, args.personas)), flush=True)
        print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
