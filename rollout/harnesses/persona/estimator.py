"""Observation-only policies for the persona harness, and the /predict-delta fallback.

- RustyWormHeuristic: RustyWorm's own refine_profile (analyzer.rs), the baseline. From the keyword signature
  of the responses seen so far it nudges four things by half the observed gap, each scaled by RustyWorm's
  confidence for it: confidence toward 1 - 2 * hedging (0.7), verbosity toward length / 1000 (0.6, compared
  with response_style.verbosity), formality toward vocabulary complexity (0.6, compared with
  response_style.formality), autonomy toward the question rate (0.5); gaps under 0.05 are left alone.
- PersonaExpert: inverts the simulator's behaviour model (rollout.harnesses.persona.simulator). Each response gives a
  reading of every axis (body sentences -> verbosity, formal share -> formality, marker sentences per body
  sentence -> the other axes) with a known variance (per-response jitter plus rounding); readings from all
  observations so far are combined by precision weighting under a uniform prior on [-1, 1], and the
  estimate is the posterior median (the best guess under absolute error, which is what convergence
  measures). It then sets its profile to the estimate in one delta (confidence 1).

Both follow the policy interface of rollout.harnesses.experts: reset(seed=None), act(observation) -> Action.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from rollout.harnesses.base import Observation
from rollout.harnesses.tools import Action
from rollout.harnesses.persona.analysis import behavior_signature, marker_counts, register_counts
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta
from rollout.harnesses.persona.profiles import AXES
from rollout.harnesses.persona.simulator import (
    BASE_SENTENCES, DEFAULT_BASE_SENTENCES, JITTER, MARKER_RATE, VERBOSITY_SLOPE, query_category,
)

# predict_delta adds an axis the profile lacks only when the evidence for it is at least this strong.
NEW_AXIS_THRESHOLD = 0.25
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_STANDARD_NORMAL = NormalDist()


@dataclass
class TraitReading:
    """One response's noisy measurement of one axis: value ~ N(true value, variance)."""

    value: float
    variance: float


def read_traits(query: str, response: str) -> dict[str, TraitReading]:
    """Every axis reading one response supports (the simulator's rendering rules, inverted)."""
    formal, casual = register_counts(response)
    register_words = formal + casual
    # Each simulated body sentence has exactly one register word; for other text, count sentences.
    body = register_words or max(1, len(_SENTENCE_END.findall(response)))
    base = BASE_SENTENCES.get(query_category(query) or "", DEFAULT_BASE_SENTENCES)
    rounding = 0.25  # the largest variance of a stochastic rounding, in counts
    readings = {
        "verbosity": TraitReading((body / base - 1) / VERBOSITY_SLOPE, JITTER**2 + rounding / (VERBOSITY_SLOPE * base) ** 2)
    }
    if register_words:
        readings["formality"] = TraitReading(2 * formal / register_words - 1, JITTER**2 + 4 * rounding / register_words**2)
    for axis, (negative, positive) in marker_counts(response).items():
        scale = MARKER_RATE * body
        readings[axis] = TraitReading((positive - negative) / scale, JITTER**2 + rounding / scale**2)
    return readings


class TraitEvidence:
    """Readings accumulated over observations; estimates are posterior medians under a uniform prior."""

    def __init__(self) -> None:
        self.observations = 0
        self._precision = {axis: 0.0 for axis in AXES}
        self._weighted_sum = {axis: 0.0 for axis in AXES}

    def add(self, observation: BehaviorObservation) -> None:
        self.observations += 1
        for axis, reading in read_traits(observation.query, observation.response).items():
            self._precision[axis] += 1.0 / reading.variance
            self._weighted_sum[axis] += reading.value / reading.variance

    def estimate(self, axis: str) -> float:
        """Median of N(mean, 1/precision) truncated to [-1, 1]; 0 with no readings."""
        precision = self._precision[axis]
        if precision == 0:
            return 0.0
        mean, sd = self._weighted_sum[axis] / precision, math.sqrt(1.0 / precision)
        low, high = (_STANDARD_NORMAL.cdf((bound - mean) / sd) for bound in (-1.0, 1.0))
        middle = min(1 - 1e-12, max(1e-12, (low + high) / 2))
        return min(1.0, max(-1.0, mean + sd * _STANDARD_NORMAL.inv_cdf(middle)))

    def estimates(self) -> dict[str, float]:
        return {axis: self.estimate(axis) for axis in AXES}


def _observed(observation: Observation) -> tuple[BehaviorObservation, AiProfile]:
    """The structured BehaviorObservation and agent profile the persona harness puts in metadata."""
    facts: dict[str, Any] = observation.metadata
    if "observation" not in facts or "profile" not in facts:
        raise ValueError(
            "persona policies read metadata['observation'] and metadata['profile'] (a persona harness "
            f"observation); got metadata keys {sorted(facts)}"
        )
    return BehaviorObservation.model_validate(facts["observation"]), AiProfile.model_validate(facts["profile"])


class PersonaExpert:
    """Accumulates evidence over the episode and sets the profile to its current estimate each step."""

    def __init__(self) -> None:
        self.evidence = TraitEvidence()

    def reset(self, seed: int | None = None) -> None:
        self.evidence = TraitEvidence()

    def act(self, observation: Observation) -> Action:
        behaviour, profile = _observed(observation)
        self.evidence.add(behaviour)
        adjustments = {}
        for axis, estimate in self.evidence.estimates().items():
            change = round(estimate - (profile.personality_value(axis) or 0.0), 2)
            if change != 0:
                adjustments[axis] = change
        return Action("apply_delta", {"adjustments": adjustments, "confidence": 1.0})


class RustyWormHeuristic:
    """RustyWorm's refine_profile over the signature of every response seen this episode (see module doc)."""

    def __init__(self) -> None:
        self.responses: list[str] = []

    def reset(self, seed: int | None = None) -> None:
        self.responses = []

    def act(self, observation: Observation) -> Action:
        behaviour, profile = _observed(observation)
        self.responses.append(behaviour.response)
        signature = behavior_signature(self.responses)
        style = profile.response_style
        # (axis, observed level, current level, RustyWorm's confidence for this nudge); None: axis absent
        nudges = [
            ("confidence", 1.0 - 2.0 * signature.hedging_level, profile.personality_value("confidence"), 0.7),
            ("verbosity", min(1.0, max(0.0, signature.avg_response_length / 1000.0)), style.verbosity, 0.6),
            ("formality", signature.vocabulary_complexity, style.formality, 0.6),
            ("autonomy", min(1.0, max(0.0, signature.question_asking_rate)), profile.personality_value("autonomy"), 0.5),
        ]
        adjustments = {}
        for axis, observed, current, confidence in nudges:
            if current is not None and abs(observed - current) > 0.05:
                # RustyWorm applies each nudge as its own delta (amount gap/2, that confidence); one delta at
                # confidence 1 with the amounts pre-scaled moves existing axes identically.
                adjustments[axis] = round((observed - current) * 0.5 * confidence, 4)
        return Action("apply_delta", {"adjustments": adjustments, "confidence": 1.0})


def predict_delta(
    profile: AiProfile, observation: BehaviorObservation, history: list[BehaviorObservation] | None = None
) -> tuple[PersonalityDelta, float, str]:
    """The expert's delta for one /predict-delta request (the fallback when no trained policy serves).

    With k observations (history + this one) the delta's confidence is k / (k + 1): applied with
    apply_correction it moves each axis the profile has that fraction of the way to the estimate. An AXES
    axis the profile lacks is added (at confidence x estimate, since RustyWorm adds new axes unscaled) only
    when |estimate| >= NEW_AXIS_THRESHOLD. Axes outside AXES are left alone.
    """
    evidence = TraitEvidence()
    for seen in [*(history or []), observation]:
        evidence.add(seen)
    confidence = evidence.observations / (evidence.observations + 1)
    adjustments: list[tuple[str, float]] = []
    for axis, estimate in evidence.estimates().items():
        current = profile.personality_value(axis)
        if current is not None:
            adjustments.append((axis, round(estimate - current, 4)))
        elif abs(estimate) >= NEW_AXIS_THRESHOLD:
            adjustments.append((axis, round(confidence * estimate, 4)))
    delta = PersonalityDelta(adjustments=adjustments, confidence=confidence, source="Observation")
    summary = ", ".join(f"{axis} {evidence.estimate(axis):+.2f}" for axis, _ in adjustments) or "no axis to adjust"
    reasoning = (
        f"Trait estimates from {evidence.observations} observation(s) of the target: {summary}; "
        f"moving {confidence:.0%} of the way toward them."
    )
    return delta, confidence, reasoning
