"""What a persona policy remembers of a client between its /predict-delta requests, per profile id.

Why: RustyWorm's request carries no history, so a policy that judges its last step by the client's next
similarity (the evidence policy, the similarity guard) keeps a small session per profile id. Both keep it the
same way: a bounded LRU of sessions (MEMORY_SIZE), a session judged only when the profile arrives as the
last answer left it (`as_left`), and the range of similarities the client has reported, which says whether its
similarity has ever changed at all (`SimilarityRange.changed`: a constant, or RustyWorm's default 0.0, never
does). Not thread-safe: each owner holds its own lock around a whole request.

A profile that is not as our last answer left it may still be the one the session evolves (the client nudged
it, skipped a delta, restarted it toward the same target) or another profile under the same id (a client that
names every profile alike, or starts each from one built-in profile): `continues` tells which, and another
profile gets a session of its own, beside the id's others (`SessionMemory.claim`: a client may evolve several
profiles under one id at once). Kept, the old session misleads: its ruled-out axes, located targets and cues
belong to another target. On 200 judge personas a generator (bench/persona_client_habits.py) the evidence policy
converged 0.000-0.010 of the profiles of a client with one id for all, and with two profiles at once under one
id 0.010-0.050, leaving 0.600-0.815 worse; told apart, 0.755-0.920 and 0.750-0.920, as with an id each.

A client may also apply a share of each delta of its own (a confidence, a learning rate): `applied_share`
reads it from the profile the next request brings (in claim, which keeps it in the session's `share`), so that
its owner can judge the step as applied (`Claim.applied_moves`) and send later deltas divided by the share (the evidence policy converged 0.045-0.195 of such a client's profiles at a
share of 0.3 before, 0.745-0.915 after).
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

MEMORY_SIZE = 4096  # sessions remembered (LRU)
PER_ID = 64  # sessions one profile id may hold (a client evolving that many profiles under it at once)
MATCH_TOLERANCE = 0.02  # how far an axis may sit from where our delta left it and still be "our" session
NUDGE = 0.5  # how far a client's own adjustments may move an axis from where our delta left it (continues)
FLAT_CHANGE = 2e-6  # a similarity change this small (its rounding) is no change
SHARE_MIN_MOVE = 0.05  # an axis our delta moved less than this does not tell the share the client applied
SHARE_RANGE = (0.05, 5.0)  # the shares of a delta a client is taken to apply (applied_share)

SessionKey = tuple[str, int]  # (profile id, serial): one id may hold several sessions


class Remembered(Protocol):
    """What the memory keeps of a session: where our last answer left the profile, remember's profiles, and the
    share of each answer the client applies (applied_share; its owner sends 1/share of each move)."""

    expected: dict[str, float]
    seen: list[Seen]
    share: float


Session = TypeVar("Session", bound=Remembered)


@dataclass(frozen=True)
class Claim(Generic[Session]):
    """The session a request belongs to (SessionMemory.claim) and how the profile arrived."""

    key: SessionKey
    session: Session
    left: bool  # as the session's last answer left it
    share: float | None = None  # the share of that answer the client applied, when it applied one (applied_share)
    sent_for: dict[str, float] | None = None  # with a share: the profile that answer was sent for

    def adopt_share(self) -> str:
        """Take the share read into the session's (its owner sends 1/share of each move from now on); the note
        that says so."""
        self.session.share *= self.share
        share = self.session.share
        return f"the client applies {share:.2f} of each delta: sent as 1/{share:.2f} of a move"

    def applied_moves(self, moves: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]] | None:
        """The last step's moves (axis -> (from, to)) as the client applied them, when it applied a share of an
        answer that started where it was sent (no undo in it: an undo's start was never reached); else None."""
        if self.sent_for is None or any(was != self.sent_for.get(axis, 0.0) for axis, (was, _) in moves.items()):
            return None
        values = self.session.seen[-1].values
        return {axis: (was, values[axis]) for axis, (was, _) in moves.items()}


class SessionMemory(Generic[Session]):
    """Sessions of profile ids, the least recently used dropped beyond `size` (and beyond PER_ID of one id),
    told apart by `claim`."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self.size = size
        self._sessions: OrderedDict[SessionKey, Session] = OrderedDict()
        self._serials: dict[str, list[int]] = {}  # profile id -> its sessions' serials, least recently used first
        self._next_serial = 0

    def claim(
        self, profile_id: str, values: dict[str, float], similarity: float, new: Callable[[], Session],
    ) -> Claim[Session]:
        """The session a request's profile (`values`, at `similarity`) belongs to, made the most recently used
        with the profile remembered:
        - the id's most recently used session, if its answer left the profile so or the profile continues it
          (`continues`: nudged, moved by one share of that answer (the share read is in the claim), or back
          at a profile it saw with the same similarity);
        - else another of the id's sessions whose answer left the profile so, unless the profile is back at one
          that session saw with another similarity (a start several profiles share, say: another target);
        - else a new one, `new()`.
        Only the latest session is continued from elsewhere: the more sessions are tried, the likelier a
        profile of another target passes for a nudge or a restart."""
        own = [((profile_id, serial), self._sessions[(profile_id, serial)])
               for serial in reversed(self._serials.get(profile_id, []))]  # most recently used first
        if own:
            key, latest = own[0]
            if as_left(values, latest.expected):
                return self._claimed(Claim(key, latest, True), values, similarity)
            sent_for = latest.seen[-1].values
            share = applied_share(values, sent_for, latest.expected)
            if continues(values, similarity, latest.expected, latest.seen, applied=share is not None):
                return self._claimed(Claim(key, latest, False, share, None if share is None else sent_for), values, similarity)
        for key, session in own[1:]:
            if as_left(values, session.expected) and _agrees(values, similarity, session.seen) is not False:
                return self._claimed(Claim(key, session, True), values, similarity)
        self._next_serial += 1
        return self._claimed(Claim((profile_id, self._next_serial), new(), False), values, similarity)

    def _claimed(self, claim: Claim[Session], values: dict[str, float], similarity: float) -> Claim[Session]:
        claim.session.seen = remember(claim.session.seen, values, similarity)
        self.put(claim.key, claim.session)
        return claim

    def get(self, key: SessionKey) -> Session | None:
        return self._sessions.get(key)

    def put(self, key: SessionKey, session: Session) -> None:
        """Store (or touch) `session` as the most recently used."""
        serials = self._serials.setdefault(key[0], [])
        if key in self._sessions:
            serials.remove(key[1])
        serials.append(key[1])
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        if len(serials) > PER_ID:
            self._drop((key[0], serials[0]))
        while len(self._sessions) > self.size:
            self._drop(next(iter(self._sessions)))

    def pop(self, profile_id: str) -> None:
        """Forget every session of `profile_id`."""
        for serial in list(self._serials.get(profile_id, [])):
            self._drop((profile_id, serial))

    def clear(self) -> None:
        self._sessions.clear()
        self._serials.clear()

    def _drop(self, key: SessionKey) -> None:
        del self._sessions[key]
        serials = self._serials[key[0]]
        serials.remove(key[1])
        if not serials:
            del self._serials[key[0]]

    def __contains__(self, profile_id: object) -> bool:
        return profile_id in self._serials

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[str]:
        """The profile ids of the sessions, least recently used first."""
        return (profile_id for profile_id, _ in self._sessions)


def as_left(values: dict[str, float], expected: dict[str, float]) -> bool:
    """The profile's axes are as our last delta left them (the client applied it and nothing else)."""
    return values.keys() == expected.keys() and all(abs(values[a] - v) <= MATCH_TOLERANCE for a, v in expected.items())


@dataclass(frozen=True)
class Seen:
    """A profile's axes as a request brought them, and the similarity the client reported with them."""

    values: dict[str, float]
    similarity: float


def continues(
    values: dict[str, float], similarity: float, expected: dict[str, float], seen: list[Seen], applied: bool = False,
) -> bool:
    """Whether a profile that is not as our last delta left it (`expected`) is still the session's profile.

    Back at a profile the session saw (remember's first and latest: the client restarted it, or skipped our
    delta), the same target gives it the same similarity, and another target practically never does. Otherwise
    it is the session's when the client applied one share of our delta (`applied`: applied_share found one),
    or when it has no axis our delta did not leave and each axis sits within NUDGE of where the delta left it
    (the client's own nudges); another profile has other axes or other values. (A profile as our delta left it
    SessionMemory.claim takes for the latest session's: asking the same of the similarity there would end
    sessions at each return to a profile under a noisy similarity.)"""
    agrees = _agrees(values, similarity, seen)
    if agrees is not None:
        return agrees
    if applied:
        return True
    return values.keys() <= expected.keys() and all(abs(v - expected[a]) <= NUDGE for a, v in values.items())


def _agrees(values: dict[str, float], similarity: float, seen: list[Seen]) -> bool | None:
    """Whether the similarity is the one seen with these values before; None when no seen profile had them."""
    for prior in seen:
        if as_left(values, prior.values):
            return abs(similarity - prior.similarity) <= FLAT_CHANGE
    return None


def applied_share(values: dict[str, float], before: dict[str, float], expected: dict[str, float]) -> float | None:
    """The share of our last delta (which took the profile from `before` to `expected`) that the client applied,
    when it applied one share to every axis (RustyWorm's apply_correction with a confidence of its own, a
    learning rate: value = before + share * change, clamped; an added axis keeps its unscaled amount); None when
    the profile shows no such share (not our profile, its own nudges, too small a delta to tell by)."""
    if values.keys() != expected.keys():
        return None
    shares = [(values[a] - before[a]) / (expected[a] - before[a]) for a in expected
              if a in before and abs(expected[a] - before[a]) >= SHARE_MIN_MOVE and abs(expected[a]) < 1.0]
    if not shares:
        return None
    share = statistics.median(shares)
    if not SHARE_RANGE[0] <= share <= SHARE_RANGE[1]:
        return None
    predicted = {a: max(-1.0, min(1.0, before[a] + share * (v - before[a]))) if a in before else v
                 for a, v in expected.items()}
    return share if all(abs(values[a] - v) <= MATCH_TOLERANCE for a, v in predicted.items()) else None


def remember(seen: list[Seen], values: dict[str, float], similarity: float) -> list[Seen]:
    """The profiles `continues` compares against: the session's first and its latest."""
    latest = Seen(dict(values), similarity)
    return [seen[0] if seen else latest, latest]


@dataclass
class SimilarityRange:
    """The lowest and highest similarity a client has reported this session."""

    low: float = math.inf
    high: float = -math.inf

    def add(self, similarity: float) -> None:
        self.low, self.high = min(self.low, similarity), max(self.high, similarity)

    @property
    def changed(self) -> bool:
        return self.high - self.low > FLAT_CHANGE


__all__ = [
    "Claim", "FLAT_CHANGE", "MATCH_TOLERANCE", "MEMORY_SIZE", "NUDGE", "PER_ID", "Seen", "SessionKey", "SessionMemory",
    "SimilarityRange", "applied_share", "as_left", "continues", "remember",
]
