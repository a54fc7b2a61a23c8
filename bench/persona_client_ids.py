"""How the persona policies serve clients that do not give each profile an id of its own.

The service keeps its memory of a client per profile id (rollout.harnesses.persona.session_memory). A
RustyWorm-style client might give every profile it evolves one id ("mimic"), or start each from one built-in
profile and keep its id. Each generator's judge personas are played by the served default (the evidence
policy) and the guarded expert under three id schemes, on the same personas and observation draws:
- "an id each": every profile its own id (what bench/persona_generalization.py plays);
- "one id, in turn": every profile the id "mimic", one episode after another;
- "one id, two at once": the same, two profiles in flight, one request each in turn (client.play_together).
The policy is never told that a new profile begins (client.UntoldClientPolicy): only what the requests show
tells the profiles apart. Columns as in bench/persona_generalization.py.

    PYTHONPATH=$PWD python bench/persona_client_ids.py [--personas 200] [--generators NAME ...]
"""

from __future__ import annotations

import argparse
import random
import time

from persona_generalization import row

from rollout.harnesses.persona.client import (
    DeltaPolicy, EpisodeResult, EvidenceClientPolicy, ExpertClientPolicy, GuardedClientPolicy, UntoldClientPolicy,
    play_episode, play_together,
)
from rollout.harnesses.persona.generators import GENERATORS, FamilyPersona, family_persona

SHARED_ID = "mimic"


def judged(generator: str, count: int) -> tuple[list[FamilyPersona], list[random.Random]]:
    """The judge personas and their observation draws, as bench/persona_generalization.py's play_all makes them."""
    personas = [family_persona("judge", generator, i) for i in range(count)]
    return personas, [random.Random(f"judge-episode-{generator}-{i}") for i in range(count)]


def renamed(persona: FamilyPersona, profile_id: str) -> FamilyPersona:
    return FamilyPersona(persona.target, persona.start.model_copy(update={"id": profile_id}))


def play_scheme(make_policy, scheme: str, generator: str, count: int) -> list[EpisodeResult]:
    personas, rngs = judged(generator, count)
    observe = GENERATORS[generator]
    if scheme == "an id each":
        policy = make_policy()
        return [play_episode(policy, persona, observe, rng) for persona, rng in zip(personas, rngs)]
    policy: DeltaPolicy = UntoldClientPolicy(make_policy())
    shared = [renamed(persona, SHARED_ID) for persona in personas]
    if scheme == "one id, in turn":
        return [play_episode(policy, persona, observe, rng) for persona, rng in zip(shared, rngs)]
    results = []
    for first in range(0, count, 2):
        results += play_together(policy, shared[first:first + 2], observe, rngs[first:first + 2])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=200, help="judge personas per generator")
    parser.add_argument("--generators", nargs="*", default=list(GENERATORS))
    args = parser.parse_args()
    policies = {
        "evidence policy (served default)": EvidenceClientPolicy,
        "expert (served: guarded)": lambda: GuardedClientPolicy(ExpertClientPolicy()),
    }
    schemes = ("an id each", "one id, in turn", "one id, two at once")
    print(f"{args.personas} judge personas per generator; the policy is never told that a new profile begins")
    for generator in args.generators:
        start = time.perf_counter()
        print(f"\n### {generator}")
        print("| policy, ids | converged@0.90 [95% CI] | mean observations to converge | mean final convergence "
              "| share ending worse [95% CI] | RustyWorm observed convergence |")
        print("|---|---|---|---|---|---|")
        for name, make_policy in policies.items():
            for scheme in schemes:
                print(row(f"{name}, {scheme}", play_scheme(make_policy, scheme, generator, args.personas)), flush=True)
        print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
