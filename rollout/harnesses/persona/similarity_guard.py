"""The similarity guard: any delta policy, wrapped so that it leaves profiles no worse on average than it found
them, judged only by what the RustyWorm client sends (its profile and its own `similarity_to_target`).

The persona expert, the RLlib PPO checkpoint and the persona LLM answer each request on its own, with no word
on how their last delta did; on the bench they left most profiles worse than they found them. The guard keeps,
per profile id, a bounded memory of the last step (rollout.harnesses.persona.session_memory, kept as the evidence
policy keeps its own) and judges it by the next similarity:

- The sign rule. When the profile arrives as the guard's last answer left it (every axis within MATCH_TOLERANCE,
  the same axes) and its similarity fell by more than FALL_TOLERANCE from the one the step started from, the
  step is undone in this answer, and each (axis, direction) it moved is rejected: later moves of that axis that
  way are dropped from the inner policy's deltas. The step after an undo is judged against the similarity from
  before the undone step (the profile is back there). A profile not as the guard left it (the client restarted,
  blended in its own nudges, or did not apply the delta) judges nothing; another profile under the same id
  gets a session of its own (session_memory.SessionMemory.claim).
- The deaf rule. A similarity that has never changed (max - min <= FLAT_CHANGE this session) while an axis of
  the profile was moved away from where the session first found it (an added axis: from 0, as if missing) judges
  nothing (a constant, or RustyWorm's default 0.0): the axes go back to where the session found them and no
  inner move passes until the similarity changes. One moved axis is enough (DEAF_AFTER): a live similarity
  that did not change after a move ignores the moved axes (the target lacks them), so moving them back costs
  nothing; with three, as the evidence policy waits for, the persona expert still left a constant similarity's
  profiles worse on average on two of the five generators (it often moves only one or two axes a step).
- Otherwise the inner policy's delta passes, less its rejected moves.
- A client that applies one share of each delta (a confidence or learning rate of its own: the profile arrives
  at that share of the way on every axis moved, session_memory.applied_share) has that step judged as it
  applied it, and later deltas are sent divided by the share, so that they land where the guard meant.

The evidence policy (rollout.harnesses.persona.evidence_policy, the served default) is not wrapped: it judges
its own steps with rules of the same names, and more. Its sign rule rejects an axis only when that axis's move
alone lowered the similarity (a step of several axes is retried half by half) and it rules out axes a live
similarity ignores; the guard cannot choose the inner policy's moves, so it rejects every (axis, direction) of a
step that lowered the similarity, which can only keep the profile where the similarity said it was better.
Its deaf rule waits for three moved axes, keeps self-described axes and makes test moves; the guard passes
nothing. It also calibrates the similarity's magnitude (slope models), which the guard does not read.

Use: `prepared = guard.prepare(profile, observation)`; the inner policy answers for `prepared.profile` (the
request's profile with any undo applied); `guard.finish(prepared, inner_delta)` gives the delta to send,
relative to the request's profile, and a note for the reasoning. Between the two the caller may await (the
service's engine call). Thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rollout.harnesses.persona.models import (
    AiProfile, BehaviorObservation, DeltaSource, PersonalityDelta, apply_correction,
)
from rollout.harnesses.persona.session_memory import MEMORY_SIZE, Seen, SessionKey, SessionMemory, SimilarityRange

FALL_TOLERANCE = 1e-4  # a similarity that fell by more than this after a step: the step is undone
DEAF_AFTER = 1  # axes moved with the similarity unchanged before it counts as deaf (see the module doc)
MIN_MOVE = 0.01  # an axis this far from where the session found it has been moved
DECIMALS = 4  # of the amounts sent

Move = tuple[str, int]  # (axis, direction: +1 up, -1 down)


@dataclass
class _Session:
    origin: dict[str, float]  # the profile's axes as the session first found them
    similarities: SimilarityRange = field(default_factory=SimilarityRange)  # lowest and highest reported
    expected: dict[str, float] = field(default_factory=dict)  # the axes as our last answer leaves them
    step: dict[str, tuple[float, float]] = field(default_factory=dict)  # its inner moves: axis -> (from, to)
    before: float = 0.0  # the similarity that step started from
    rejected: set[Move] = field(default_factory=set)
    deaf: bool = False
    seen: list[Seen] = field(default_factory=list)  # the first and latest profiles with their similarities (continues)
    share: float = 1.0  # the share of each delta the client applies (applied_share); we send 1/share of a move


@dataclass(frozen=True)
class Prepared:
    """What prepare decided: `profile` is the one the inner policy answers for (the request's, with any undo or
    return to the origin applied); `passes` is False while the similarity is deaf (no inner move is sent). Plain
    data, no reference to the session (finish finds it by its key), so it may cross processes (the
    service's guard lives in serve.persona_sessions, a deployment of its own)."""

    request: AiProfile
    profile: AiProfile
    before: float  # the similarity `profile` is judged to have: the next step is judged against it
    passes: bool
    notes: tuple[str, ...]
    rejected: frozenset[Move]  # the session's rejected moves: finish drops them from the inner delta
    key: SessionKey  # the session's, in the guard's memory


class SimilarityGuard:
    """prepare(profile, observation) -> Prepared; finish(prepared, inner_delta) -> (delta, note). Thread-safe,
    memory bounded; one per service replica (or per simulated client)."""

    def __init__(self, memory_size: int = MEMORY_SIZE) -> None:
        self._sessions: SessionMemory[_Session] = SessionMemory(memory_size)
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._sessions.clear()

    def prepare(self, profile: AiProfile, observation: BehaviorObservation) -> Prepared:
        """Judge the last step by this request's similarity (undo it if it fell) and apply the deaf rule."""
        similarity = observation.similarity_to_target
        values = profile.personality_values()
        notes: list[str] = []
        with self._lock:
            claim = self._sessions.claim(profile.id, values, similarity, lambda: _Session(origin=dict(values)))
            key, session, left = claim.key, claim.session, claim.left
            if claim.share is not None and session.step:  # the client applies a share of each delta: judge what it did
                notes.append(claim.adopt_share())
                if (applied := claim.applied_moves(session.step)) is not None:
                    session.step, session.expected, left = applied, values, True
            session.similarities.add(similarity)
            before = similarity
            target = dict(values)
            if session.step and left and similarity < session.before - FALL_TOLERANCE:
                moved = ", ".join(f"{axis}{'+-'[_sign(to - was) < 0]}" for axis, (was, to) in session.step.items())
                notes.append(f"similarity fell {session.before:.4f} -> {similarity:.4f} after the last step ({moved}): "
                             "undone, not moved that way again")
                session.rejected |= {(axis, _sign(to - was)) for axis, (was, to) in session.step.items()}
                target |= {axis: was for axis, (was, _) in session.step.items()}
                before = session.before  # the profile is back where that step started
            session.step = {}
            changed = session.similarities.changed
            if session.deaf and changed:
                session.deaf = False
                notes.append("the similarity moved: the policy's moves pass again")
            origin = session.origin
            moved_axes = [axis for axis, value in target.items() if abs(value - origin.get(axis, 0.0)) >= MIN_MOVE]
            if not session.deaf and not changed and len(moved_axes) >= DEAF_AFTER:
                session.deaf = True
                back = {axis: origin.get(axis, 0.0) for axis in target}  # an added axis: 0, as if missing
                notes.append(f"the similarity never changed while {', '.join(moved_axes)} moved: it judges nothing, "
                             "the profile goes back to where it was found and the policy's moves are held")
                target = back
            passes = not session.deaf
            rejected = frozenset(session.rejected)
        return Prepared(profile, _moved_to(profile, target), before, passes, tuple(notes), rejected, key)

    def finish(self, prepared: Prepared, inner: PersonalityDelta) -> tuple[PersonalityDelta, str]:
        """The delta to send: the inner delta on prepared.profile, less rejected moves (all of them while deaf),
        composed with the undo into one delta relative to the request's profile (confidence 1)."""
        notes = list(prepared.notes)
        kept = []
        with self._lock:
            session = self._sessions.get(prepared.key)  # None only if dropped from the LRU since prepare
            if session is None:
                session = _Session(origin=prepared.request.personality_values())
            for axis, amount in inner.adjustments:
                if prepared.passes and (axis, _sign(amount)) not in prepared.rejected:
                    kept.append((axis, amount))
            dropped = len(inner.adjustments) - len(kept)
            if dropped and prepared.passes:
                notes.append(f"dropped {dropped} move(s) the similarity rejected before")
            final = apply_correction(prepared.profile, inner.model_copy(update={"adjustments": kept}))
            delta = _delta_between(prepared.request, final, inner.source)
            left = apply_correction(prepared.request, delta).personality_values()
            start = prepared.profile.personality_values()
            session.expected = left
            session.step = {axis: (start.get(axis, 0.0), value) for axis, value in left.items()
                            if abs(value - start.get(axis, 0.0)) >= 1e-6}
            session.before = prepared.before
            self._sessions.put(prepared.key, session)
            # an added axis takes the unscaled amount (apply_correction): only the request's axes are scaled
            request = prepared.request.personality_values()
            sent = [(axis, round(amount / session.share, DECIMALS) if axis in request else amount)
                    for axis, amount in delta.adjustments]
        return delta.model_copy(update={"adjustments": sent}), f"Similarity guard: {'; '.join(notes)}." if notes else ""


def _sign(change: float) -> int:
    """A move's direction, as rejected moves are remembered."""
    return 1 if change > 0 else -1


def _moved_to(profile: AiProfile, values: dict[str, float]) -> AiProfile:
    """`profile` with its axes set to `values`, as the client would have it after such a delta."""
    current = profile.personality_values()
    moves = [(axis, value - current[axis]) for axis, value in values.items() if value != current[axis]]
    return apply_correction(profile, PersonalityDelta(adjustments=moves, confidence=1.0)) if moves else profile


def _delta_between(start: AiProfile, final: AiProfile, source: DeltaSource) -> PersonalityDelta:
    """The delta (confidence 1) that takes `start`'s axes to `final`'s: the difference on an axis `start` has,
    the value itself on one it lacks (RustyWorm adds a missing axis at the unscaled amount)."""
    before = start.personality_values()
    adjustments = []
    for axis, value in final.personality_values().items():
        amount = round(value - before[axis] if axis in before else value, DECIMALS)
        if amount != 0.0:
            adjustments.append((axis, amount))
    return PersonalityDelta(adjustments=adjustments, confidence=1.0, source=source)


__all__ = ["Prepared", "SimilarityGuard"]
