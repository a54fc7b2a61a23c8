"""How well could any reader place a persona's axes from its responses? An upper bound, per generator.

Why: #14 asks for >= 90% of held-out personas converged within <= 4 observations. Each request returns one
similarity, which locates at most one axis (see the README), so that target needs a reader that places several
axes from the text alone. This script gives such a reader every advantage the served policy lacks and measures
what it still cannot do:
- it is fitted on the same generator it is judged on (the served policy never sees the judged generator);
- its labels are the hidden targets themselves (the service never sees a target);
- it has --fit-personas of them (600), and it is told which axes the target has.

The reader: for each axis name, a ridge regression from hashed word and word-pair counts per sentence of the
target's first k responses, the response length, and the starting profile's value of that axis (and whether it
has one), to the target's value; the ridge strength is picked on a fifth of the fit personas. The "read profile"
is the start with every target axis set to the reader's estimate; the table prints its mean per-axis error, the
start's, and how many read profiles converge (>= 0.90 to the target) against how many starts do (none: starts are
below 0.88 by construction), alone and with the worst axes set exactly (what judged similarities could add).

A second table plays the served evidence policy with its text estimates taken from these readers instead (the
last 3 responses at most), on the same judge personas and episodes as bench/persona_generalization.py: what a
reader learned from the client's own traffic could bring at best.

    PYTHONPATH=$PWD python bench/persona_text_ceiling.py [--fit-personas 600] [--personas 200] [--responses 1 2 3 4]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
import zlib

import numpy as np
from persona_generalization import mean_ci, play_all, row, wilson

from rollout.harnesses.persona.analysis import CONVERGED_AT, convergence
from rollout.harnesses.persona.client import MAX_OBSERVATIONS, EvidenceClientPolicy
from rollout.harnesses.persona.evidence_policy import EvidencePolicy
from rollout.harnesses.persona.generators import AXIS_POOL, GENERATORS, FamilyPersona, family_persona
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityAxis, PersonalityDelta

BUCKETS = 4096  # hashed features (words and word pairs)
STRENGTHS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # ridge strengths tried on the validation fifth
PLAYED_RESPONSES = 3  # the played reader reads the last 3 responses at most
READER_WEIGHT = 2.0  # its evidence per response read (0.7 and 6 converged within 0.04 of this on 3 generators)


def text_features(responses: list[str]) -> np.ndarray:
    """Counts of hashed words and word pairs per sentence, and the log mean length, over the responses."""
    counts = np.zeros(BUCKETS + 1)
    sentences = 0
    for response in responses:
        sentences += max(1, len(re.findall(r"[.!?]+", response)))
        tokens = re.findall(r"[a-z']+|[^\sa-z0-9]", response.lower())
        for first, second in zip(tokens, [*tokens[1:], ""]):
            counts[zlib.crc32(first.encode()) % BUCKETS] += 1.0
            counts[zlib.crc32(f"{first} {second}".encode()) % BUCKETS] += 0.5
    counts /= sentences
    counts[BUCKETS] = np.log1p(sum(len(r) for r in responses) / len(responses))
    return counts


def axis_features(text: np.ndarray, start_value: float | None) -> np.ndarray:
    """A reader's input for one axis: the text's features, then a bias, the start's value and whether it has one."""
    return np.concatenate([text, [1.0, start_value or 0.0, float(start_value is not None)]])


def responses(persona: FamilyPersona, generator: str, seed: str, count: int) -> list[str]:
    rng = random.Random(seed)
    return [GENERATORS[generator].observe(persona.target, persona.start, rng).response for _ in range(count)]


def ridge(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """Ridge weights in the dual form (fewer examples than features): x^T (x x^T + strength I)^-1 y."""
    return x.T @ np.linalg.solve(x @ x.T + strength * np.eye(len(x)), y)


def fit_reader(rows: list[tuple[np.ndarray, FamilyPersona]]) -> dict[str, np.ndarray]:
    """axis -> ridge weights, the strength picked on the last fifth of `rows`, then refitted on all of them."""
    def examples(part: list[tuple[np.ndarray, FamilyPersona]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        found: dict[str, tuple[list[np.ndarray], list[float]]] = {axis: ([], []) for axis in AXIS_POOL}
        for text, persona in part:
            for axis in persona.target.personality:
                found[axis.name][0].append(axis_features(text, persona.start.personality_value(axis.name)))
                found[axis.name][1].append(axis.value)
        return {axis: (np.array(x), np.array(y)) for axis, (x, y) in found.items()}

    cut = len(rows) * 4 // 5
    train, valid = examples(rows[:cut]), examples(rows[cut:])

    def validation_error(strength: float) -> float:
        errors = [np.abs(np.clip(valid[a][0] @ ridge(*train[a], strength), -1, 1) - valid[a][1])
                  for a in AXIS_POOL if len(train[a][1]) and len(valid[a][1])]
        return float(np.concatenate(errors).mean())

    strength = min(STRENGTHS, key=validation_error)
    every = examples(rows)
    return {axis: ridge(*every[axis], strength) for axis in AXIS_POOL if len(every[axis][1])}


def start_values(persona: FamilyPersona) -> dict[str, float]:
    """The start's values of the target's axes (an axis it lacks is left out: it counts as 0)."""
    found = {axis.name: persona.start.personality_value(axis.name) for axis in persona.target.personality}
    return {axis: value for axis, value in found.items() if value is not None}


def read_values(reader: dict[str, np.ndarray], text: np.ndarray, persona: FamilyPersona) -> dict[str, float]:
    """The start's values with every target axis the reader knows set to its estimate (it is told the target's axes)."""
    values = start_values(persona)
    for axis in persona.target.personality:
        if axis.name in reader:
            estimate = axis_features(text, persona.start.personality_value(axis.name)) @ reader[axis.name]
            values[axis.name] = float(np.clip(estimate, -1.0, 1.0))
    return values


def with_located(values: dict[str, float], target: AiProfile, count: int) -> dict[str, float]:
    """`values` with the `count` worst target axes set exactly on the target: the most `count` judged
    similarities can add (each locates at most one axis; this one even knows which to locate)."""
    worst = sorted(target.personality, key=lambda a: -abs(values.get(a.name, 0.0) - a.value))[:count]
    return values | {axis.name: axis.value for axis in worst}


def convergence_of(values: dict[str, float], target: AiProfile) -> float:
    """The convergence of a profile with these values of the target's axes (convergence reads no other axis)."""
    agent = target.model_copy(update={"personality": [
        axis.model_copy(update={"value": values[axis.name]}) for axis in target.personality if axis.name in values]})
    return convergence(agent, target)


class ReaderEvidencePolicy(EvidencePolicy):
    """The served evidence policy with every axis a reader knows estimated by that reader (the rest, and a deaf
    session, as served). It keeps the current episode's responses: one profile at a time, forgotten each episode."""

    def __init__(self, readers: dict[int, dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.readers, self.responses = readers, []

    def forget(self, profile_id: str | None = None) -> None:
        super().forget(profile_id)
        self.responses = []

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> tuple[PersonalityDelta, float, str]:
        self.responses.append(observation.response)
        return super().predict(profile, observation)

    def _estimate(self, session, axis: PersonalityAxis) -> tuple[float, float]:
        count = min(len(self.responses), PLAYED_RESPONSES)
        reader = self.readers[count].get(axis.name)
        if reader is None or session.deaf:
            return super()._estimate(session, axis)
        text = text_features(self.responses[-count:])
        estimate = axis_features(text, session.origin.get(axis.name)) @ reader  # origin: the profile as first seen
        return float(np.clip(estimate, -1.0, 1.0)), READER_WEIGHT * count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit-personas", type=int, default=600)
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--responses", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    args = parser.parse_args()
    print(f"a reader fitted on {args.fit_personas} personas of the judged generator with their true targets, "
          f"judged on {args.personas} others; converged at >= {CONVERGED_AT}\n")
    print("| generator | responses | mean axis error, read [95% CI] | mean axis error, start | read profiles converged [95% CI] "
          "| convergence, read | convergence, start | read + (responses - 1) axes located, converged [95% CI] | start + (responses - 1) axes located |")
    print("|---|---|---|---|---|---|---|---|---|")
    played = []
    for generator in args.generators:
        began = time.perf_counter()
        fit = [family_persona("fit", generator, i) for i in range(args.fit_personas)]
        judge = [family_persona("judge", generator, i) for i in range(args.personas)]
        readers = {count: fit_reader([(text_features(responses(p, generator, f"fit-text-{generator}-{i}", count)), p)
                                      for i, p in enumerate(fit)])
                   for count in sorted({*args.responses, *range(1, PLAYED_RESPONSES + 1)})}
        for count in args.responses:
            reader = readers[count]
            read_errors, start_errors, read_scores, start_scores, located, unread = [], [], [], [], 0, 0
            for i, persona in enumerate(judge):
                text = text_features(responses(persona, generator, f"judge-text-{generator}-{i}", count))
                read, start = read_values(reader, text, persona), start_values(persona)
                for axis in persona.target.personality:
                    read_errors.append(abs(read.get(axis.name, 0.0) - axis.value))
                    start_errors.append(abs(start.get(axis.name, 0.0) - axis.value))
                read_scores.append(convergence_of(read, persona.target))
                start_scores.append(convergence_of(start, persona.target))
                located += convergence_of(with_located(read, persona.target, count - 1), persona.target) >= CONVERGED_AT
                unread += convergence_of(with_located(start, persona.target, count - 1), persona.target) >= CONVERGED_AT
            converged = sum(score >= CONVERGED_AT for score in read_scores)
            low, high = wilson(converged, len(judge))
            located_low, located_high = wilson(located, len(judge))
            print(f"| {generator} | {count} | {mean_ci(read_errors)} | {statistics.mean(start_errors):.3f} "
                  f"| {converged / len(judge):.3f} [{low:.3f}, {high:.3f}] | {statistics.mean(read_scores):.3f} "
                  f"| {statistics.mean(start_scores):.3f} | {located / len(judge):.3f} [{located_low:.3f}, {located_high:.3f}] "
                  f"| {unread / len(judge):.3f} |", flush=True)
        with_reader = EvidenceClientPolicy()
        with_reader.policy = ReaderEvidencePolicy(readers)  # the served adapter, around the reader's policy
        for name, policy in (("served default", EvidenceClientPolicy()), ("with the fitted reader", with_reader)):
            played.append(row(f"{generator}, {name}", play_all(policy, generator, "judge", args.personas, MAX_OBSERVATIONS)))
        print(f"{generator}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    print("\nThe served evidence policy as bench/persona_generalization.py judges it, and the same policy with its text "
          "estimates from the readers above:\n")
    print("| generator, policy | converged@0.90 [95% CI] | mean observations to converge | mean final convergence "
          "| share ending worse [95% CI] | RustyWorm observed convergence |")
    print("|---|---|---|---|---|---|")
    print("\n".join(played))


if __name__ == "__main__":
    main()
