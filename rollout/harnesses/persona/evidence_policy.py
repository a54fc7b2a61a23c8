"""The evidence policy: the served persona policy, built to work on clients it was not built for.

It reads what a RustyWorm client sends and nothing else: the response text (rollout.harnesses.persona.lexicon:
wide English cue lexicons, self-descriptions in degree words), the `patterns` (parsed robustly, unknown ones
skipped), the profile's own axis names, poles and values, and `similarity_to_target`, the client's own
measure of how close the current profile is, which no behaviour generator can change the meaning of.

Rules:
- Until the similarity is calibrated (below), an axis moves only on evidence. An axis whose name (or pole
  names) no channel reads, or whose channel shows no cue in any response so far, is left where it is: silence
  is not a reading of 0.
- Steps are sized by evidence: the move toward an estimate is the share W / (W + prior) of the gap, W the
  amount of evidence, times `step`; a request moves the max_axes largest of these (one, as fitted), so the
  client's next similarity judges exactly that move. A channel with strong evidence that no axis of the
  profile reads may be such a move too: its axis is added under the channel's name, only when no axis of the
  profile has a move (an added axis is often one the target lacks, and a move the similarity ignores neither
  gains nor calibrates: adding first converged 0.70 / 0.79 instead of 0.75 / 0.82 of 200 fit personas of the
  adverbial / chat generators, and no fewer under a constant similarity).
- Similarity is feedback, by sign. The service keeps, per profile id, a small memory (a bounded LRU) of the
  session: the cues so far, the similarity seen with the last request and the changes it asked for. When the
  profile arrives as that delta left it and similarity fell, the last step is undone (a step of several axes
  is retried half by half, an axis whose move alone lowered it is not moved again); when it rose, it is kept
  (the step after an undo is judged against the similarity before the undone step). Once the similarity has
  responded to some step, an axis whose move alone left it exactly unchanged is not moved again (the measure
  ignores it: the target lacks that axis); a constant similarity never responds, so nothing is ruled out.
  With no evidence left to act on and a responding similarity, an untested axis gets a small test move.
  A request whose profile is not as the last delta left it (the client restarted, blended in its own nudges,
  or did not apply the delta) judges no step; the evidence gathered for that profile id is kept, since it is
  evidence about the same target, unless the profile is another one under the same id (a client naming
  every profile alike, or evolving several at once under one): that one gets a session of its own
  (session_memory.SessionMemory.claim). A client that applies one share of each delta (a confidence of its
  own: session_memory.applied_share) has the step judged as it applied it, and the deltas that follow are
  sent divided by that share, so that they land where they were meant to.
- A similarity that never moves is no judge (a constant, or RustyWorm's default 0.0 from a client that does not
  compute one). Once it has stayed exactly the same while DEAF_AFTER axes of the profile were moved (a target
  lacks an axis or two, rarely three), the session is deaf: the axes moved on cues go back to where it found
  them and from then on only the target's self-descriptions move an axis. Cue estimates alone misread: on four
  of the five generators they sit further from the target than the client's own starting values, and under a
  constant similarity 0.384 of 500 fit personas ended worse with cue moves kept, 0.234 with them undone. A deaf
  session still makes small test moves; should the similarity move after all (the moved axes were ones the
  target lacks), cues act again.
- Similarity is also measured, by magnitude (the slope models). If the client's similarity is a sum of
  per-axis terms in each axis's distance to the target, linear (mean of 1 - |d| / 2, 1 - mean |d|: the loss
  1 - similarity grows by `scale` per unit of distance) or quadratic (1 - RMS / 2: (1 - similarity)^2 grows by
  `scale` per unit of squared distance), one axis's move says where its target is. Linear: a move of `size`
  that does not cross the target changes the loss by exactly scale * size (down if toward, up if away), one
  that crosses it by less, and the shortfall places the target; otherwise it bounds it. Quadratic: two moves of
  one axis give the scale, and with the scale any move places the target. Every judged step with one unknown
  move (its other moves have effects the model already knows; a step after an undo counts from the profile
  the undo returned to) is replayed under each model (_solve). A model is trusted only once two of its scale
  estimates agree (SLOPE_AGREEMENT: moves that do not cross the target agree to the similarity's rounding; a
  constant, noisy or random similarity practically never does), or one estimate is 1/k for a whole k to within
  the similarity's rounding (a mean over n axes has the scale 1/n, 1/(2n) or 1/(4n): _whole_reciprocal; this
  calibrates a request or more sooner), and only while it keeps fitting (no axis with
  contradictory target intervals, a stable scale): once it does not, the session stays on the sign rule for
  good. Calibrated, each request moves every located axis onto its target (a known change), returns axes the
  measure ignores to where they were, and probes one more axis: the one furthest from its target as far as is
  known, past its evidence estimate by probe_reach, to the far end of its known target interval, or by
  blind_step toward 0 when there is no evidence (blind probes rank at blind_score, axes added from channels
  below them; blind probes to the far pole converged 0.702 instead of 0.723 of 1000 fit personas and left
  0.039 instead of 0.018 worse, mostly when such a probe was the last step); at a perfect similarity nothing
  is probed, nor when the located axes alone bring the similarity from below RustyWorm's target_convergence
  (0.90) to it (a probe then could cost the client the convergence it is about to reach). A measure of another
  shape never calibrates: the sign rule does all.

`PolicyParams` holds the few numbers that turn cue densities and lengths into axis values and size probes; bench/
persona_generalization.py fits them on training generators only (leave-one-generator-out), and
DEFAULT_PARAMS are the ones fitted on all five, shipped in code so the service needs no training step.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from rollout.harnesses.persona.analysis import CONVERGED_AT
from rollout.harnesses.persona.lexicon import CHANNELS, axis_channel, read_text, self_description
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta
from rollout.harnesses.persona.session_memory import FLAT_CHANGE, MEMORY_SIZE, Seen, SessionMemory, SimilarityRange

MAX_STEPS = 32  # judged steps kept per session for the slope models (each request replays them)
SIMILARITY_TOLERANCE = 1e-4
MIN_MOVE = 0.01
DEAF_AFTER = 3  # axes moved with the similarity unchanged before it counts as deaf (a target lacks some axes)
SELF_DESCRIPTION_WEIGHT = 3.0
NEW_AXIS_MIN_VALUE = 0.3  # one "I'm fairly X" counts as this many cues
# Two scale estimates that agree this closely (relative) calibrate a slope model. Linear estimates of moves that
# did not cross the target agree to the similarity's rounding (1e-6); 0.3% lets ~1 in 300 sessions of a random
# or noisy similarity calibrate by chance (1% let 3 in 100). Quadratic estimates are differences of differences:
# rounding needs the 1%, and chance agreement is rarer there.
SLOPE_AGREEMENT = {"linear": 0.003, "quadratic": 0.01}
WHOLE_WINDOW = 0.05  # a reciprocal known no better than this is not told from its neighbours (a coarse similarity)
FLOAT_ERROR = 1e-12  # the least error a similarity is taken to carry (a full-precision float, computed in sums)
WHOLE_MAX = {"linear": 64, "quadratic": 256}  # the largest whole reciprocal taken for a scale: 64 axes either way
SLOPE_EDGE = 0.02  # a gain within this share of the full slope: the move did not cross the target
LOCATED = 0.03  # an axis whose target interval is this narrow is located
FLAT = 0.01  # linear: a probe whose loss change is within this share of scale * size of 0 found a flat axis
FLAT_LOSS = 1e-5  # quadratic: the same, a loss change this small
LINEAR, QUADRATIC = "linear", "quadratic"  # the slope models: a sum of per-axis distances, or of their squares


@dataclass(frozen=True)
class PolicyParams:
    """cue_scale: value per (positive - negative) cue per sentence; length_mid: characters of a neutral answer;
    length_span: the length ratio that reads as +-1 verbosity; step: the share of the evidence-weighted gap moved
    per request; prior: evidence (in cues) that counts as half certain."""

    cue_scale: float = 2.0
    length_mid: float = 250.0
    length_span: float = 3.0
    step: float = 1.0
    prior: float = 1.0
    new_axis_evidence: float = 4.0  # cues before a missing axis is added
    max_move: float = 2.0  # per axis per step
    max_axes: int = 1  # axes moved per step (the largest moves), each step judged by the similarity it brings
    probe_reach: float = 0.3  # once the slope is calibrated: how far past an evidence estimate a probe goes
    blind_score: float = 0.2  # probe priority of an axis with no evidence (an evidence gap scores its size)
    blind_step: float = 0.5  # such a probe's size, toward 0 (gentler than the far pole, see the module doc)
    test_size: float = 0.05  # a test move (no evidence left): small, so it rarely crosses the target


DEFAULT_PARAMS = PolicyParams()


@dataclass
class _Step:
    """One delta as the slope models see it: the similarity it started from (after an undo, that of the profile
    the undo returned to, whose moves are then left out), the similarity after it, its moves (axis -> (from,
    to); a missing axis is from 0), and the one axis whose effect was unknown when it was sent (None: none)."""

    similarity: float
    moves: dict[str, tuple[float, float]]
    probe: str | None
    after: float = 0.0


@dataclass
class _Tally:
    """A running count and sum: what a session keeps of a reading that recurs with every observation, so that its
    memory stays bounded however long a client keeps a profile id."""

    count: int = 0
    total: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass
class _Session:
    observations: int = 0
    sentences: int = 0
    lengths: _Tally = field(default_factory=_Tally)  # response lengths
    cues: dict[str, list[int]] = field(default_factory=dict)  # channel -> [negative, positive]
    described: dict[str, _Tally] = field(default_factory=dict)  # axis -> self-description readings
    register: _Tally = field(default_factory=_Tally)  # 0..1 formality readings from patterns
    last_similarity: float | None = None
    last_change: dict[str, float] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)
    pending: list[list[str]] = field(default_factory=list)  # halves of an undone step, to retry in turn
    rejected: set[str] = field(default_factory=set)  # axes whose move alone lowered similarity
    step: _Step | None = None  # the last step, until the next similarity judges it
    steps: list[_Step] = field(default_factory=list)  # judged steps (the slope model's data)
    live: bool = False  # the similarity has changed after one of our steps (it is not constant)
    still: set[str] = field(default_factory=set)  # axes whose move alone left the similarity unchanged
    model: str = ""  # the slope model that calibrated, once one did
    scale: float = 0.0  # its scale when it did
    inconsistent: bool = False  # the similarity broke the slope model once: sign only for this session
    origin: dict[str, float] = field(default_factory=dict)  # the profile as the session first saw it
    similarities: SimilarityRange = field(default_factory=SimilarityRange)  # lowest and highest reported
    resolution: float = 1.0  # how finely the client writes its similarity (1e-6: to 6 decimals; see _resolution)
    deaf: bool = False  # the similarity never moved although we did: text cues alone, which misread more than they read
    seen: list[Seen] = field(default_factory=list)  # the first and latest profiles with their similarities (continues)
    share: float = 1.0  # the share of each delta the client applies (applied_share); we send 1/share of a move


class EvidencePolicy:
    """predict(profile, observation) -> (delta, confidence, reasoning); thread-safe, memory bounded."""

    def __init__(self, params: PolicyParams = DEFAULT_PARAMS, memory_size: int = MEMORY_SIZE) -> None:
        self.params = params
        self._sessions: SessionMemory[_Session] = SessionMemory(memory_size)
        self._lock = threading.Lock()

    def forget(self, profile_id: str | None = None) -> None:
        with self._lock:
            if profile_id is None:
                self._sessions.clear()
            else:
                self._sessions.pop(profile_id)

    def predict(self, profile: AiProfile, observation: BehaviorObservation) -> tuple[PersonalityDelta, float, str]:
        with self._lock:
            notes: list[str] = []
            session = self._session(profile, observation.similarity_to_target, notes)
            similarity = similarity_before = observation.similarity_to_target
            start = profile.personality_values()
            if session.step is not None:  # the profile is as our last delta left it: that step is judged now
                session.step.after = similarity
                session.steps = [*session.steps[-(MAX_STEPS - 1):], session.step]
            self._add_evidence(session, profile, observation)
            undeaf = self._check_deaf(session, start, notes)
            slope = None if session.inconsistent else self._calibrate(session)
            if slope is not None:
                change, probe = self._slope_step(session, profile, start, similarity, *slope, notes)
                session.last_change = {}  # a calibrated step is judged by the slope model, not by the undo rule
                values, proposal = start, {}
            else:
                undo = self._verify(session, similarity, notes)
                if undo:  # the next step is judged against the similarity of the profile it undid to
                    similarity_before = session.last_similarity
                values = dict(start)
                undo = undeaf | undo
                for axis, amount in undo.items():
                    values[axis] = min(1.0, max(-1.0, values.get(axis, 0.0) + amount))
                proposal = self._propose(session, profile, values, notes)
                if not proposal and not undo and (session.live or session.deaf):
                    proposal = self._test_move(session, values, notes)
                change = {axis: undo.get(axis, 0.0) + proposal.get(axis, 0.0) for axis in undo.keys() | proposal.keys()}
                probe = next(iter(proposal)) if len(proposal) == 1 else None
            applied, added = {}, {}
            for axis, amount in change.items():
                if axis not in start:  # RustyWorm adds a missing axis with the unscaled amount: its value
                    added[axis] = round(max(-1.0, min(1.0, amount)), 4)
                    continue
                new_value = min(1.0, max(-1.0, start[axis] + amount))
                if abs(new_value - start[axis]) >= 1e-6:
                    applied[axis] = round(new_value - start[axis], 4)
            session.last_similarity = similarity_before
            session.expected = {axis: start[axis] + applied.get(axis, 0.0) for axis in start} | added
            final = {axis: session.expected[axis] for axis in applied.keys() | added.keys()}
            if slope is None:  # the step as the model sees it: its proposal, from the profile the undo went back to
                moves = {axis: (values.get(axis, 0.0), final[axis]) for axis in proposal if axis in final}
                session.last_change = {axis: final[axis] - values.get(axis, 0.0) for axis in moves}
            else:
                moves = {axis: (start.get(axis, 0.0), value) for axis, value in final.items()}
            session.step = _Step(similarity_before, moves, probe if probe in moves else None)
            sent = {axis: round(amount / session.share, 4) for axis, amount in applied.items()}
        # a new axis is added with the unscaled amount (apply_correction): the amount is its value
        delta = PersonalityDelta(adjustments=[*sent.items(), *added.items()], confidence=1.0, source="Observation")
        summary = "; ".join(notes) if notes else "no axis of this profile has evidence yet: nothing moved"
        reasoning = f"evidence policy, observation {session.observations} of this profile: {summary}"
        return delta, 1.0, reasoning

    def _calibrate(self, session: _Session) -> tuple[float, dict[str, tuple[float, float]], dict[str, float]] | None:
        """(scale, target interval per probed axis, flat axes) when the judged steps calibrate a slope model
        (linear first, then quadratic: see _solve), else None.

        A model is trusted only once two of its scale estimates agree (SLOPE_AGREEMENT: a constant, noisy or
        random similarity practically never does), and only while it keeps fitting: session.inconsistent is set
        (the sign rule for the rest of the session) when later steps contradict it (an axis whose target
        intervals do not meet, a target out of range, a scale that moves or no longer has agreement)."""
        for kind in (LINEAR, QUADRATIC) if not session.model else (session.model,):
            scale, agreeing = 0.0, 0
            for _ in range(6):
                bounds, flat, estimates, consistent = _solve(session.steps, kind, scale, session.resolution)
                new_scale, agreeing = _agreed_scale(estimates, kind)
                if abs(new_scale - scale) <= 1e-9 * max(1.0, scale):
                    break
                scale = new_scale
            calibrated = scale > 1e-6 and (agreeing >= 2 or _whole_reciprocal(estimates, kind))
            if not calibrated and not session.model:
                continue
            moved = session.scale > 0 and abs(scale - session.scale) > 2 * SLOPE_AGREEMENT[kind] * session.scale
            if not calibrated or not consistent or moved:  # a model once calibrated no longer fits: sign rule for good
                session.inconsistent = True
                return None
            session.model, session.scale = kind, scale
            return scale, bounds, flat
        return None

    def _slope_step(
        self, session: _Session, profile: AiProfile, start: dict[str, float], similarity: float, slope: float,
        bounds: dict[str, tuple[float, float]], flat: dict[str, float], notes: list[str],
    ) -> tuple[dict[str, float], str | None]:
        """Calibrated: every located axis goes to its target (a known gain), and one more axis is probed: the
        one whose target is furthest from it as far as is known. A probe goes past where the target is thought
        to be (an evidence estimate plus probe_reach, the far end of a known interval; blind_step toward 0
        without evidence), so that the gain it brings locates the target unless it lies beyond the probe."""
        change: dict[str, float] = {}
        candidates: list[tuple[float, str, float]] = []  # (priority, axis, probe value)
        for axis in profile.personality:
            x = start[axis.name]
            if axis.name in flat:
                if abs(flat[axis.name] - x) >= MIN_MOVE:
                    change[axis.name] = flat[axis.name] - x
                    notes.append(f"{axis.name} {x:+.2f} -> {flat[axis.name]:+.2f} (back: the similarity ignores it)")
                continue
            lo, hi = bounds.get(axis.name, (-1.0, 1.0))
            if hi - lo <= LOCATED:
                target = (lo + hi) / 2
                if abs(target - x) >= MIN_MOVE:
                    change[axis.name] = target - x
                    notes.append(f"{axis.name} {x:+.2f} -> {target:+.2f} (located by the {session.model} similarity model)")
                continue
            estimate, weight = self._estimate(session, axis)
            if axis.name in bounds:
                far = lo if abs(lo - x) > abs(hi - x) else hi
                candidates.append((abs((lo + hi) / 2 - x), axis.name, far))
            elif weight > 0 and abs(estimate - x) >= MIN_MOVE:
                direction = 1.0 if estimate > x else -1.0
                reach = min(1.0, max(-1.0, estimate + direction * self.params.probe_reach))
                candidates.append((abs(estimate - x) * weight / (weight + self.params.prior), axis.name, reach))
            elif weight <= 0:
                candidates.append((self.params.blind_score, axis.name, x - self.params.blind_step if x > 0 else x + self.params.blind_step))
        for axis, value in self._new_axes(session, profile).items():
            if axis not in bounds and axis not in flat:  # often an axis the target lacks: probed after the rest
                candidates.append((min(abs(value), self.params.blind_score) / 2, axis, value))
        known = sum(_effect(session.model, start[axis], start[axis] + amount, (bounds[axis][0] + bounds[axis][1]) / 2)
                    for axis, amount in change.items() if axis in bounds)
        loss = max(0.0, _loss(similarity, session.model) + slope * known)
        expected = 1.0 - (loss if session.model == LINEAR else math.sqrt(loss))
        if similarity < CONVERGED_AT <= expected:  # a probe now could cost the client its convergence
            notes.append(f"the located axes bring the similarity to {expected:.3f}, RustyWorm's target: no probe")
        elif similarity >= 1.0 - FLAT_CHANGE:
            notes.append("the similarity is perfect: nothing left to probe")
        elif candidates:
            _, axis, value = max(candidates)
            x = start.get(axis, 0.0)
            change[axis] = value - x
            notes.append(f"probing {axis} {x:+.2f} -> {value:+.2f} ({session.model} similarity model, scale {slope:.4f})")
            return change, axis
        else:
            notes.append("every axis is located or ignored by the similarity: nothing left to probe")
        return change, None

    def _test_move(self, session: _Session, values: dict[str, float], notes: list[str]) -> dict[str, float]:
        """With no evidence left to act on and a similarity that responds: a small move (test_size, toward 0)
        of the axis moved least this session (at most twice, not ruled out), so that its change calibrates a
        slope model (a quadratic one needs two moves of one axis) and tells which side of it the target is."""
        moves = {axis: 0 for axis in values if axis not in session.rejected}
        for step in session.steps:
            for axis in step.moves.keys() & moves.keys():
                moves[axis] += 1
        candidates = [axis for axis, count in moves.items() if count < 2]
        if not candidates:
            return {}
        axis = min(candidates, key=lambda name: (moves[name], -abs(values[name])))
        amount = -self.params.test_size if values[axis] > 0 else self.params.test_size
        notes.append(f"testing {axis} {values[axis]:+.2f} -> {values[axis] + amount:+.2f} (no evidence left)")
        return {axis: amount}

    def _verify(self, session: _Session, similarity: float, notes: list[str]) -> dict[str, float]:
        """Judge the last step by the client's similarity: a step that lowered it is undone (returned as the
        changes that undo it) and, when it moved several axes, split in two and retried half by half; an
        axis whose move alone lowered it is not moved again this session."""
        if session.last_similarity is None or not session.last_change:
            return {}
        moved = similarity - session.last_similarity
        axes = list(session.last_change)
        if abs(moved) <= FLAT_CHANGE and len(axes) == 1:
            session.still.add(axes[0])
        session.live = session.live or abs(moved) > FLAT_CHANGE
        if session.live and session.still:  # a live measure that ignored an axis's move: it ignores the axis
            notes.append(f"similarity did not change after moving {', '.join(sorted(session.still))}: not moved again")
            session.rejected |= session.still
            session.still = set()
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
        if not moves:  # an added axis is often one the target lacks: the profile's own go first
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

    def _session(self, profile: AiProfile, similarity: float, notes: list[str]) -> _Session:
        """The session this profile belongs to (session_memory: under its id, possibly a new one); one whose
        last delta did not leave the profile so judges no step now, unless the client applied one share of
        that delta to every axis: then that is the step judged, and later deltas are sent divided by the share."""
        claim = self._sessions.claim(profile.id, profile.personality_values(), similarity, _Session)
        session, left = claim.session, claim.left
        if claim.share is not None and session.step is not None:
            notes.append(claim.adopt_share())
            if (applied := claim.applied_moves(session.step.moves)) is not None:
                session.step.moves = applied
                session.last_change = {axis: to - was for axis, (was, to) in applied.items() if axis in session.last_change}
                session.expected, left = session.seen[-1].values, True
        if not left:
            session.last_similarity, session.last_change, session.pending, session.step = None, {}, [], None
        return session

    def _add_evidence(self, session: _Session, profile: AiProfile, observation: BehaviorObservation) -> None:
        reading = read_text(observation.response, observation.patterns)
        session.observations += 1
        session.similarities.add(observation.similarity_to_target)
        session.resolution = min(session.resolution, _resolution(observation.similarity_to_target))
        session.sentences += reading.sentences
        if reading.length > 0:
            session.lengths.add(reading.length)
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
                session.register.add(level)
        for axis in profile.personality:
            for sentence in reading.first_person:
                degree = self_description(sentence, axis)
                if degree is not None:
                    session.described.setdefault(axis.name, _Tally()).add(degree)

    def _check_deaf(self, session: _Session, start: dict[str, float], notes: list[str]) -> dict[str, float]:
        """Once the similarity has stayed exactly the same while DEAF_AFTER axes of the profile were moved, it
        judges nothing: the session turns deaf (self-descriptions only, and small test moves) and the axes moved
        on cues go back to where the session found them (returned as changes). Should the similarity move after
        all (the moved axes were ones the target lacks, and a test move found one it has), cues act again."""
        if not session.origin:
            session.origin = dict(start)
        changed = session.similarities.changed
        if session.deaf and changed:
            session.deaf = False
            notes.append("the similarity moved after all: cues act again")
        if session.deaf or changed:
            return {}
        moved = {axis for axis, value in session.origin.items() if abs(start.get(axis, 0.0) - value) >= MIN_MOVE}
        if len(moved) < DEAF_AFTER:  # (added axes do not count: often ones the target lacks)
            return {}
        session.deaf = True
        back = {axis: session.origin.get(axis, 0.0) - value for axis, value in start.items()  # an added axis: to 0, as if missing
                if axis not in session.described and abs(session.origin.get(axis, 0.0) - value) >= MIN_MOVE}
        notes.append("the similarity never changed: only self-descriptions move axes" + (f"; {', '.join(sorted(back))} back" if back else ""))
        return back

    def _estimate(self, session: _Session, axis) -> tuple[float, float]:
        """(estimate, evidence weight) for one axis; weight 0: no evidence."""
        total, weight = 0.0, 0.0
        described = session.described.get(axis.name)
        if described is not None:
            w = SELF_DESCRIPTION_WEIGHT * described.count
            total += w * described.mean
            weight += w
        found = None if session.deaf else axis_channel(axis)
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
            if not session.lengths.count:
                return 0.0, 0.0
            level = math.log(max(session.lengths.mean, 1.0) / p.length_mid) / math.log(p.length_span)
            return max(-1.0, min(1.0, level)), float(session.lengths.count)
        negative, positive = session.cues.get(channel, (0, 0))
        if channel == "formality":
            readings = session.register  # each reading r in 0..1 counts twice, as 2 * r - 1
            count = negative + positive
            total = (2 * readings.total - readings.count) * 2 + (positive - negative)
            weight = 2 * readings.count + count
            return (max(-1.0, min(1.0, total / weight)), float(weight)) if weight else (0.0, 0.0)
        if negative + positive == 0:
            return 0.0, 0.0
        level = p.cue_scale * (positive - negative) / max(1, session.sentences)
        return max(-1.0, min(1.0, level)), float(negative + positive)


def _resolution(similarity: float) -> float:
    """10^-d for the fewest decimals d that write this similarity exactly (a full-precision float: FLOAT_ERROR).
    The finest over a session is how finely the client writes it (a value sent to 6 decimals may need fewer by
    chance, never more); a difference of two similarities is off by at most that."""
    for decimals in range(12):
        if round(similarity, decimals) == similarity:
            return max(FLOAT_ERROR, 10.0**-decimals)
    return FLOAT_ERROR


def _whole_reciprocal(estimates: list[tuple[float, float]], kind: str) -> bool:
    """Whether one scale estimate alone calibrates: a similarity that is a mean over n axes (1 - mean |d|,
    mean of 1 - |d| / 2, 1 - RMS / 2) has a scale of exactly 1/k for a whole k (n, 2n, 4n), so an estimate
    whose reciprocal is whole to within its rounding error is the scale. Linear: the largest estimate (one
    from a move that crossed the target is smaller, and 1/k only by a coincidence of where the target lies);
    quadratic: the most precise one (a quadratic estimate is exact up to rounding)."""
    usable = [(e, error) for e, error in estimates if e > 1e-9 and error > 0]
    if not usable:
        return False
    estimate, error = max(usable) if kind == LINEAR else min(usable, key=lambda pair: pair[1] / pair[0])
    whole = round(1 / estimate)
    window = error / estimate**2  # the reciprocal's error
    return 2 <= whole <= WHOLE_MAX[kind] and window <= WHOLE_WINDOW and abs(1 / estimate - whole) <= window


def _agreed_scale(estimates: list[tuple[float, float]], kind: str) -> tuple[float, int]:
    """(scale, how many estimates agree with it to SLOPE_AGREEMENT): linear, the largest estimate (a probe
    that crossed the target gives less); quadratic, the mean of the largest group of agreeing estimates."""
    positive = [e for e, _ in estimates if e > 1e-9]
    if not positive:
        return 0.0, 0
    if kind == LINEAR:
        scale = max(positive)
        return scale, sum(abs(e - scale) <= SLOPE_AGREEMENT[kind] * scale for e in positive)
    groups = [[e for e in positive if abs(e - centre) <= SLOPE_AGREEMENT[kind] * centre] for centre in positive]
    best = max(groups, key=len)
    return sum(best) / len(best), len(best)


def _loss(similarity: float, kind: str) -> float:
    """What the model takes to be additive over axes: 1 - similarity (linear) or its square (quadratic)."""
    return 1.0 - similarity if kind == LINEAR else (1.0 - similarity) ** 2


def _effect(kind: str, a: float, b: float, target: float) -> float:
    """The change of one axis's term (per unit of scale) when it moves from a to b: its distance to the
    target (linear) or its square (quadratic) after minus before."""
    if kind == LINEAR:
        return abs(b - target) - abs(a - target)
    return (b - target) ** 2 - (a - target) ** 2


def _solve(
    steps: list[_Step], kind: str, scale: float, resolution: float = FLOAT_ERROR,
) -> tuple[dict[str, tuple[float, float]], dict[str, float], list[float], bool]:
    """Replays the judged steps under the model `kind` with `scale`: (target interval per probed axis, flat axes,
    scale estimates, whether the steps agree with the model). A step's known moves (axes whose interval fixes
    their effect, flat axes) are taken off its loss change; the rest is the probe's.

    linear: a probe of `size` changes the loss by scale * size when it does not cross the target (an estimate:
    the scale is the largest), by less when it crosses it, which then lies where the change says. quadratic: a
    probe from a to b changes it by scale * (b - a) * (a + b - 2 * target): two probes of one axis give the
    scale (the estimates), and with the scale any probe gives the target. A probe after which the similarity
    did not change marks a flat axis, one the measure does not count (the target lacks it): it goes back to
    where it was (the value in the dict) and is not probed again."""
    bounds: dict[str, tuple[float, float]] = {}
    flat: dict[str, float] = {}
    estimates: list[tuple[float, float]] = []  # (scale estimate, its error from the similarity's rounding)
    earlier: dict[str, list[tuple[float, float, float]]] = {}  # quadratic: axis -> (a + b, loss change per unit, its error)
    consistent = True
    for step in steps:
        if step.probe is None:
            continue
        known = 0.0
        for axis, (a, b) in step.moves.items():
            if axis == step.probe or axis in flat:
                continue
            lo, hi = bounds.get(axis, (-1.0, 1.0))
            low, high = _effect(kind, a, b, lo), _effect(kind, a, b, hi)
            if abs(low - high) > 1e-6:
                break  # an effect we cannot tell: the step says nothing about its probe
            known += scale * low
        else:
            a, b = step.moves[step.probe]
            size = abs(b - a)
            if size < MIN_MOVE:
                continue
            change = _loss(step.after, kind) - _loss(step.similarity, kind) - known
            if scale > 0:
                ignored = abs(change) <= FLAT * scale * size if kind == LINEAR else abs(change) <= FLAT_LOSS
            else:  # no scale yet: only a lone move that left the similarity exactly as it was
                ignored = abs(step.after - step.similarity) <= FLAT_CHANGE and len(step.moves) == 1
            if ignored and step.probe not in bounds:
                flat[step.probe] = a
                continue
            if kind == LINEAR:
                estimates.append((abs(change) / size, resolution / size))
                if scale <= 0:
                    continue
                share = -change / (scale * size)
                up = b > a
                if share >= 1 - SLOPE_EDGE:  # the target is at or past where the probe went
                    found = (b, 1.0) if up else (-1.0, b)
                elif share <= -1 + SLOPE_EDGE:  # the target is behind where the probe started
                    found = (-1.0, a) if up else (a, 1.0)
                else:  # the probe crossed the target: it lies where the change says
                    target = a + (1 if up else -1) * (share + 1) * size / 2
                    found = (target, target)
            else:
                per_unit = change / (b - a)
                # (1 - s)^2 is off by (1 - s) * resolution when s is off by resolution / 2 (its rounding)
                error = resolution * (2.0 - step.similarity - step.after) / size
                estimates += [((per_unit - before) / (a + b - middle), (error + before_error) / abs(a + b - middle))
                              for middle, before, before_error in earlier.get(step.probe, [])
                              if abs(a + b - middle) >= 2 * MIN_MOVE]
                earlier.setdefault(step.probe, []).append((a + b, per_unit, error))
                if scale <= 0:
                    continue
                target = (a + b - per_unit / scale) / 2
                consistent = consistent and abs(target) <= 1 + LOCATED
                target = max(-1.0, min(1.0, target))
                found = (target, target)
            lo, hi = bounds.get(step.probe, (-1.0, 1.0))
            lo, hi = max(lo, found[0]), min(hi, found[1])
            if lo > hi:
                consistent = consistent and lo - hi <= LOCATED
                lo = hi = (lo + hi) / 2
            bounds[step.probe] = (lo, hi)
    return bounds, flat, estimates, consistent


__all__ = ["CHANNELS", "DEFAULT_PARAMS", "EvidencePolicy", "PolicyParams"]
