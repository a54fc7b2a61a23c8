"""What a persona policy remembers of a client between its /predict-delta requests, per profile id.

Why: RustyWorm's request carries no history, so a policy that judges its last step by the client's next
similarity (the evidence policy, the similarity guard) keeps a small session per profile id. Both keep it the
same way: a bounded LRU of sessions (MEMORY_SIZE ids), a session judged only when the profile arrives as the
last answer left it (`as_left`), and the range of similarities the client has reported, which says whether its
similarity has ever changed at all (`SimilarityRange.changed`: a constant, or RustyWorm's default 0.0, never
does). Not thread-safe: each owner holds its own lock around a whole request.

A profile that is not as our last answer left it may still be the one the session evolves (the client nudged
it, skipped a delta, restarted it toward the same target) or another profile under the same id (a client that
names every profile alike, or starts each from one built-in profile): `continues` tells which, and another
profile gets a new session. Kept, the old session misleads: its ruled-out axes, located targets and cues belong
to another target (a client reusing one id for 200 fit personas a generator converged 0.000-0.025 of them
instead of 0.740-0.895).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

MEMORY_SIZE = 4096  # profile ids remembered (LRU)
MATCH_TOLERANCE = 0.02  # how far an axis may sit from where our delta left it and still be "our" session
NUDGE = 0.5  # how far a client's own adjustments may move an axis from where our delta left it (continues)
FLAT_CHANGE = 2e-6  # a similarity change this small (its rounding) is no change

Session = TypeVar("Session")


class SessionMemory(Generic[Session]):
    """Sessions by profile id, the least recently used dropped beyond `size`."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self.size = size
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, profile_id: str) -> Session | None:
        return self._sessions.get(profile_id)

    def put(self, profile_id: str, session: Session) -> None:
        """Store (or touch) `session` as the most recently used."""
        self._sessions[profile_id] = session
        self._sessions.move_to_end(profile_id)
        while len(self._sessions) > self.size:
            self._sessions.popitem(last=False)

    def pop(self, profile_id: str) -> None:
        self._sessions.pop(profile_id, None)

    def clear(self) -> None:
        self._sessions.clear()

    def __contains__(self, profile_id: object) -> bool:
        return profile_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)


def as_left(values: dict[str, float], expected: dict[str, float]) -> bool:
    """The profile's axes are as our last delta left them (the client applied it and nothing else)."""
    return values.keys() == expected.keys() and all(abs(values[a] - v) <= MATCH_TOLERANCE for a, v in expected.items())


@dataclass(frozen=True)
class Seen:
    """A profile's axes as a request brought them, and the similarity the client reported with them."""

    values: dict[str, float]
    similarity: float


def continues(values: dict[str, float], similarity: float, expected: dict[str, float], seen: list[Seen]) -> bool:
    """Whether a profile that is not as our last delta left it (`expected`) is still the session's profile.

    Back at a profile the session saw (remember's first and latest: the client restarted it, or skipped our
    delta), the same target gives it the same similarity, and another target practically never does. Otherwise
    it is the session's when it has no axis our delta did not leave and each axis sits within NUDGE of where the
    delta left it (the client's own nudges); another profile has other axes or other values. (A profile as our
    delta left it is taken for the session's: asking the same of the similarity there would end sessions at each
    return to a profile under a noisy similarity.)"""
    for prior in seen:
        if as_left(values, prior.values):
            return abs(similarity - prior.similarity) <= FLAT_CHANGE
    return values.keys() <= expected.keys() and all(abs(v - expected[a]) <= NUDGE for a, v in values.items())


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
    "FLAT_CHANGE", "MATCH_TOLERANCE", "MEMORY_SIZE", "NUDGE", "Seen", "SessionMemory", "SimilarityRange", "as_left",
    "continues", "remember",
]
