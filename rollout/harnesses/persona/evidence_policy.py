"""The evidence policy: the served persona policy, built to work on clients it was not built for.

It reads what a RustyWorm client sends and nothing else: the response text (rollout.harnesses.persona.lexicon:
wide English cue lexicons, self-descriptions in degree words), the `patterns` (parsed robustly, unknown ones
skipped), the profile's own axis names, poles and values, and `similarity_to_target`, the client's own
measure of how close the current profile is, which no behaviour generator can change the meaning of.

Rules:
- An axis moves only on evidence. An axis whose name (or pole names) no channel reads, or whose channel shows
  no cue in any response so far, is left where it is: silence is not a reading of 0.
- Steps are sized by evidence: the move toward an estimate is the share W / (W + prior) of the gap, W the
  amount of evidence, times `step`; a request moves the max_axes largest of these (one, as fitted), so the
  client's next similarity judges exactly that move. A channel with strong evidence that no axis of the
  profile reads may be such a move too: its axis is added under the channel's name.
- Similarity is feedback. The service keeps, per profile id, a small memory (a bounded LRU) of the session:
  the cues so far, the similarity seen with the last request and the changes it asked for. When the profile
  arrives as that delta left it and similarity fell, the last step is undone (a step of several axes is
  retried half by half, an axis whose move alone lowered it is not moved again); when it rose, it is kept. A request whose profile is not as the last delta
  left it (the client restarted, blended in its own nudges, or did not apply the delta) judges no step; the
  evidence gathered for that profile id is kept, since it is evidence about the same target.

`PolicyParams` holds the few numbers that turn cue densities and lengths into axis values; bench/
persona_generalization.py fits them on training generators only (leave-one-generator-out), and
DEFAULT_PARAMS are the ones fitted on all five, shipped in code so the service needs no training step.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from rollout.harnesses.persona.lexicon import CHANNELS, axis_channel, read_text, self_description
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta

MEMORY_SIZE = 4096  # profile ids remembered (LRU)
MATCH_TOLERANCE = 0.02  # how far an axis may sit from where our delta left it and still be "our" session
SIMILARITY_TOLERANCE = 1e-4
MIN_MOVE = 0.01
SELF_DESCRIPTION_WEIGHT = 3.0
NEW_AXIS_MIN_VALUE = 0.3  # one "I'm fairly X" counts as this many cues


@dataclass(frozen=True)
class PolicyParams:
    """cue_scale: value per (positive - negative) cue per sentence; length_mid: characters of a neutral answer;
    length_span: the length ratio that reads as +-1 verbosity; step: the share of the evidence-weighted gap moved
    per request; prior: evidence (in cues) that counts as half certain."""

    cue_scale: float = 4.0
    length_mid: float = 250.0
    length_span: float = 3.0
    step: float = 1.0
    prior: float = 1.0
    new_axis_evidence: float = 4.0  # cues before a missing axis is added
    max_move: float = 2.0  # per axis per step
    max_axes: int = 1  # axes moved per step (the largest moves), each step judged by the similarity it brings


DEFAULT_PARAMS = PolicyParams()


@dataclass
class _Session:
    observations: int = 0
    sentences: int = 0
    lengths: list[float] = field(default_factory=list)
    cues: dict[str, list[int]] = field(default_factory=dict)  # channel -> [negative, positive]
    described: dict[str, list[float]] = field(default_factory=dict)  # axis -> self-description readings
    register: list[float] = field(default_factory=list)  # 0..1 formality readings from patterns
    last_similarity: float | None = None
    last_change: dict[str, float] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)
    pending: list[list[str]] = field(default_factory=list)  # halves of an undone step, to retry in turn
    rejected: set[str] = field(default_factory=set)  # axes whose move alone lowered similarity


class EvidencePolicy:
    """predict(profile, observation) -> (delta, confidence, reasoning); thread-safe, memory bounded."""

    def __init__(self, params: PolicyParams = DEFAULT_PARAMS, memory_size: int = MEMORY_SIZE) -> None:
        self.params = params
        self.memory_size = memory_size
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, profile_id: str | None = None) -> None:
        with self._lock:
            if profile_id is None:
                self._sessions.clear()
            else:
                self._sessions.pop(profile_id, None)

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> tuple[PersonalityDelta, float, str]:
        with self._lock:
            session = self._session(profile)
            values = {axis.name: axis.value for axis in profile.personality}
            notes: list[str] = []
            undo = self._verify(session, observation.similarity_to_target, notes)
            for axis, amount in undo.items():
                values[axis] = min(1.0, max(-1.0, values.get(axis, 0.0) + amount))
            self._add_evidence(session, profile, observation)
            proposal = self._propose(session, profile, values, notes)
            change = {axis: undo.get(axis, 0.0) + proposal.get(axis, 0.0) for axis in undo.keys() | proposal.keys()}
            start = {axis.name: axis.value for axis in profile.personality}
            applied, added = {}, {}
            for axis, amount in change.items():
                if axis not in start:  # RustyWorm adds a missing axis with the unscaled amount: its value
                    added[axis] = round(max(-1.0, min(1.0, amount)), 4)
                    continue
                new_value = min(1.0, max(-1.0, start[axis] + amount))
                if abs(new_value - start[axis]) >= 1e-6:
                    applied[axis] = round(new_value - start[axis], 4)
            session.last_similarity = observation.similarity_to_target
            session.last_change = {axis: proposal[axis] for axis in proposal if axis in applied or axis in added}
            session.expected = {axis: start[axis] + applied.get(axis, 0.0) for axis in start} | added
        # a new axis is added with the unscaled amount (apply_correction): the amount is its value
        delta = PersonalityDelta(adjustments=[*applied.items(), *added.items()], confidence=1.0, source="Observation")
        summary = "; ".join(notes) if notes else "no axis of this profile has evidence yet: nothing moved"
        reasoning = f"evidence policy, observation {session.observations} of this profile: {summary}"
        return delta, 1.0, reasoning

    def _verify(self, session: _Session, similarity: float, notes: list[str]) -> dict[str, float]:
        """Judge the last step by the client's similarity: a step that lowered it is undone (returned as the
        changes that undo it) and, when it moved several axes, split in two and retried half by half; an
        axis whose move alone lowered it is not moved again this session."""
        if session.last_similarity is None or not session.last_change:
            return {}
        moved = similarity - session.last_similarity
        axes = list(session.last_change)
        if moved >= -SIMILARITY_TOLERANCE:
            if moved > SIMILARITY_TOLERANCE:
                notes.append(f"similarity rose {moved:+.3f} after the last step: kept")
            return {}
        notes.append(f"similarity fell {moved:+.3f} after the last step ({', '.join(axes)}): undone")
        if len(axes) == 1:
            session.rejected.add(axes[0])
        else:
            half = len(axes) // 2
            session.pending = [axes[:half], axes[half:], *session.pending]
        return {axis: -amount for axis, amount in session.last_change.items()}

    def _propose(self, session: _Session, profile: AiProfile, values: dict[str, float], notes: list[str]) -> dict[str, float]:
        """The next step: the next half of a split step when one waits, else the max_axes largest moves among
        the axes with evidence (not rejected), each toward its estimate by the evidence-weighted share of the
        gap, and the channels with strong evidence that no axis of the profile reads (added as new axes)."""
        moves: dict[str, float] = {}
        for axis in profile.personality:
            if axis.name in session.rejected:
                continue
            estimate, weight = self._estimate(session, axis)
            if weight <= 0:
                continue
            share = self.params.step * weight / (weight + self.params.prior)
            amount = share * (estimate - values[axis.name])
            amount = max(-self.params.max_move, min(self.params.max_move, amount))
            if abs(amount) >= MIN_MOVE:
                moves[axis.name] = amount
        moves |= {axis: value for axis, value in self._new_axes(session, profile).items() if axis not in session.rejected}
        while session.pending:
            group = [axis for axis in session.pending.pop(0) if axis in moves]
            if group:
                notes.append(f"retrying part of the undone step: {', '.join(group)}")
                return {axis: moves[axis] for axis in group}
        largest = sorted(moves, key=lambda axis: -abs(moves[axis]))[: self.params.max_axes]
        moves = {axis: moves[axis] for axis in largest}
        notes += [f"{axis} {values[axis]:+.2f} -> {values[axis] + amount:+.2f}" if axis in values
                  else f"added {axis} at {amount:+.2f} (strong evidence, the profile lacks it)" for axis, amount in moves.items()]
        return moves

    def _new_axes(self, session: _Session, profile: AiProfile) -> dict[str, float]:
        """Channels with strong evidence whose axis the profile lacks under any name: added under the channel's
        own name (a target with that axis gains; one without ignores it)."""
        read = {found[0] for axis in profile.personality if (found := axis_channel(axis)) is not None}
        added = {}
        for channel, spec in CHANNELS.items():
            if channel in read:
                continue
            estimate, weight = self._channel_estimate(session, channel)
            if weight >= self.params.new_axis_evidence and abs(estimate) >= NEW_AXIS_MIN_VALUE:
                added[spec.names[0]] = round(estimate * weight / (weight + self.params.prior), 4)
        return added

    def _session(self, profile: AiProfile) -> _Session:
        session = self._sessions.get(profile.id)
        if session is None:
            session = _Session()
        elif session.expected:
            current = {axis.name: axis.value for axis in profile.personality}
            same = all(abs(current.get(axis, 0.0) - value) <= MATCH_TOLERANCE for axis, value in session.expected.items())
            if not same or set(current) != set(session.expected):  # not as our delta left it: judge no step
                session.last_similarity, session.last_change, session.pending = None, {}, []
        self._sessions[profile.id] = session
        self._sessions.move_to_end(profile.id)
        while len(self._sessions) > self.memory_size:
            self._sessions.popitem(last=False)
        return session

    def _add_evidence(self, session: _Session, profile: AiProfile, observation: BehaviorObservation) -> None:
        reading = read_text(observation.response, observation.patterns)
        session.observations += 1
        session.sentences += reading.sentences
        if reading.length > 0:
            session.lengths.append(reading.length)
        for channel, (negative, positive) in reading.cues.items():
            counts = session.cues.setdefault(channel, [0, 0])
            counts[0] += negative
            counts[1] += positive
        hedging = reading.pattern_values.get("hedging")
        if hedging is not None and hedging > 0:  # the client's own hedge count: a cue of doubt
            session.cues.setdefault("certainty", [0, 0])[0] += 1
        for key in ("formality", "vocabulary"):
            level = reading.pattern_values.get(key)
            if level is not None and 0.0 <= level <= 1.0:
                session.register.append(level)
        for axis in profile.personality:
            for sentence in reading.first_person:
                degree = self_description(sentence, axis)
                if degree is not None:
                    session.described.setdefault(axis.name, []).append(degree)

    def _estimate(self, session: _Session, axis) -> tuple[float, float]:
        """(estimate, evidence weight) for one axis; weight 0: no evidence."""
        total, weight = 0.0, 0.0
        described = session.described.get(axis.name, [])
        if described:
            w = SELF_DESCRIPTION_WEIGHT * len(described)
            total += w * sum(described) / len(described)
            weight += w
        found = axis_channel(axis)
        if found is not None:
            channel, sign = found
            estimate, w = self._channel_estimate(session, channel)
            total += w * sign * estimate
            weight += w
        if weight <= 0:
            return 0.0, 0.0
        return max(-1.0, min(1.0, total / weight)), weight

    def _channel_estimate(self, session: _Session, channel: str) -> tuple[float, float]:
        p = self.params
        if channel == "verbosity":
            if not session.lengths:
                return 0.0, 0.0
            mean = sum(session.lengths) / len(session.lengths)
            level = math.log(max(mean, 1.0) / p.length_mid) / math.log(p.length_span)
            return max(-1.0, min(1.0, level)), float(len(session.lengths))
        negative, positive = session.cues.get(channel, (0, 0))
        if channel == "formality":
            readings = [2 * r - 1 for r in session.register]
            count = negative + positive
            total = sum(readings) * 2 + (positive - negative)
            weight = 2 * len(readings) + count
            return (max(-1.0, min(1.0, total / weight)), float(weight)) if weight else (0.0, 0.0)
        if negative + positive == 0:
            return 0.0, 0.0
        level = p.cue_scale * (positive - negative) / max(1, session.sentences)
        return max(-1.0, min(1.0, level)), float(negative + positive)


__all__ = ["CHANNELS", "DEFAULT_PARAMS", "EvidencePolicy", "PolicyParams"]
