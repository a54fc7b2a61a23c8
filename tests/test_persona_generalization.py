"""Persona policies on clients they were not built for: the generator family, the evidence policy, both
convergences, the held-out comparison with RustyWorm's heuristic, and the similarity guard that keeps every
other servable policy from leaving profiles worse on average."""

from __future__ import annotations

import inspect
import random
import re
import statistics

import pytest

from rollout.harnesses.persona import generators as generators_module
from rollout.harnesses.persona.analysis import TRAIT_MARKERS, convergence, observed_convergence
from rollout.harnesses.persona.client import (
    EvidenceClientPolicy, ExpertClientPolicy, GuardedClientPolicy, HeuristicClientPolicy, ScaledClientPolicy,
    UntoldClientPolicy, play_episode, play_together,
)
from rollout.harnesses.persona.evidence_policy import LINEAR, QUADRATIC, EvidencePolicy, _whole_reciprocal
from rollout.harnesses.persona.generators import AXIS_POOL, GENERATORS, MAX_AXES, MIN_AXES, FamilyPersona, family_persona
from rollout.harnesses.persona.lexicon import axis_channel, parse_patterns
from rollout.harnesses.persona.models import (
    AiProfile, BehaviorObservation, PersonalityAxis, PersonalityDelta, apply_correction,
)
from rollout.harnesses.persona.profiles import AXES
from rollout.harnesses.persona.session_memory import continues, remember
from rollout.harnesses.persona.similarity_guard import SimilarityGuard
from rollout.harnesses.persona.simulator import BODY_SENTENCES


def profile(axes: dict[str, float], profile_id: str = "p") -> AiProfile:
    return AiProfile(
        id=profile_id, display_name="P",
        personality=[PersonalityAxis(name=n, value=v, negative_pole="low", positive_pole="high") for n, v in axes.items()],
    )


# --- the generator family ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generators_write_valid_observations_with_their_own_similarity(name):
    generator = GENERATORS[name]
    for index in range(10):
        persona = family_persona("fit", name, index)
        rng = random.Random(index)
        seen = generator.observe(persona.target, persona.start, rng)
        again = BehaviorObservation.model_validate(seen.model_dump(mode="json"))  # RustyWorm's exact shape
        assert again == seen and seen.response.strip() and seen.query
        assert all(isinstance(p, str) for p in seen.patterns)
        assert 0.0 <= seen.similarity_to_target < 1.0 and 0.0 <= seen.confidence <= 1.0
        assert generator.observe(persona.target, persona.target, rng).similarity_to_target == 1.0


def test_generators_are_independent_of_the_simulator_and_of_each_other():
    imports = " ".join(re.findall(r"^(?:from|import) .*$", inspect.getsource(generators_module), re.M))
    for name in ("simulator", "TRAIT_MARKERS", "HEDGE_WORDS", "REGISTER", "lexicon", "evidence_policy", "estimator"):
        assert name not in imports
    simulator_text = {s for pairs in BODY_SENTENCES.values() for pair in pairs for s in pair} | {
        s for poles in TRAIT_MARKERS.values() for pole in poles for s in pole}
    vocabularies = {}
    for name, generator in GENERATORS.items():
        texts = [generator.observe(family_persona("fit", name, i).target, family_persona("fit", name, i).start,
                                   random.Random(i)).response for i in range(30)]
        assert not any(sentence in text for sentence in simulator_text for text in texts)
        vocabularies[name] = set(re.findall(r"[a-z']+", " ".join(texts).lower()))
    for a in GENERATORS:
        for b in GENERATORS:
            if a < b:  # no two generators share most of their words
                overlap = len(vocabularies[a] & vocabularies[b]) / len(vocabularies[a] | vocabularies[b])
                assert overlap < 0.3, (a, b, overlap)


def test_family_personas_are_varied_and_fit_and_judge_never_meet():
    targets = [family_persona("judge", "chat", i) for i in range(100)]
    sizes = [len(p.target.personality) for p in targets]
    assert min(sizes) >= MIN_AXES and max(sizes) <= MAX_AXES and len(set(sizes)) >= 6
    names = {axis.name for p in targets for axis in p.target.personality}
    assert names - set(AXES) and names <= set(AXIS_POOL)
    values = [axis.value for p in targets for axis in p.target.personality]
    assert min(values) < -0.9 and max(values) > 0.9 and any(abs(v) < 0.1 for v in values)
    assert all(convergence(p.start, p.target) < 0.88 for p in targets)
    assert any(any(a.value != 0 for a in p.start.personality) for p in targets)  # starts are not neutral
    assert any({a.name for a in p.target.personality} - {a.name for a in p.start.personality} for p in targets)
    fit = {p.target.model_dump_json(exclude={"id"}) for p in (family_persona("fit", "chat", i) for i in range(100))}
    assert not fit & {p.target.model_dump_json(exclude={"id"}) for p in targets}


# --- reading the client --------------------------------------------------------------------------------


def test_patterns_parse_in_any_spelling_and_junk_is_skipped():
    values = parse_patterns(["Hedging:0.17", "tone: 0.2", "Length: 412 chars", "Questions asked: 3",
                             "Vocabulary complexity: 0.62", "Tone: warm", "Foo:bar", "", "Cadence:1e9x"])
    assert values == {"hedging": 0.17, "tone": 0.2, "length": 412.0, "questions": 3.0, "vocabulary": 0.62}


def test_axes_are_read_by_name_stem_or_pole_and_unknown_ones_by_nothing():
    assert axis_channel(PersonalityAxis(name="enthusiastic", value=0, negative_pole="a", positive_pole="b"))[0] == "enthusiasm"
    assert axis_channel(PersonalityAxis(name="t7", value=0, negative_pole="uncertain", positive_pole="x")) == ("certainty", 1.0)
    assert axis_channel(PersonalityAxis(name="timidity", value=0, negative_pole="a", positive_pole="b")) == ("certainty", -1.0)
    assert axis_channel(PersonalityAxis(name="zorblax", value=0, negative_pole="low", positive_pole="high")) is None


def test_no_axis_moves_without_evidence():
    policy = EvidencePolicy()
    start = profile({"confidence": 0.8, "humor": -0.6, "zorblax": 0.4})
    plain = BehaviorObservation(query="q", response="The capital of France is Paris.", patterns=[], similarity_to_target=0.7)
    delta, _, reasoning = policy.predict(start, plain)
    assert delta.adjustments == [] and "nothing moved" in reasoning
    hedged = BehaviorObservation(query="q", response="Maybe it is Paris, I think. Perhaps not, I'm not sure.",
                                 patterns=["Unknown thing", "Weird:stuff"], similarity_to_target=0.7)
    moved = dict(EvidencePolicy().predict(start, hedged)[0].adjustments)
    assert moved.keys() == {"confidence"} and moved["confidence"] < 0  # humor and zorblax have no evidence


def test_a_step_that_lowered_similarity_is_undone_and_memory_is_bounded():
    policy = EvidencePolicy(memory_size=2)
    start = profile({"confidence": 0.8}, "evolving")
    hedged = BehaviorObservation(query="q", response="Maybe, I think. Perhaps, probably.", similarity_to_target=0.7)
    first = policy.predict(start, hedged)[0]
    step = dict(first.adjustments)["confidence"]
    after = apply_correction(start, first)
    worse = hedged.model_copy(update={"similarity_to_target": 0.6, "response": "The answer is Paris."})
    second, _, reasoning = policy.predict(after, worse)
    assert dict(second.adjustments)["confidence"] == pytest.approx(-step) and "undone" in reasoning
    # a profile not as the delta left it (the client blended in its own nudges, say): no step is judged
    assert "undone" not in policy.predict(profile({"confidence": 0.1}, "evolving"), worse)[2]
    for other in ("a", "b"):
        policy.predict(profile({"confidence": 0.0}, other), hedged)
    assert "evolving" not in policy._sessions and len(policy._sessions) == 2


@pytest.mark.parametrize("policy", [EvidenceClientPolicy, lambda: GuardedClientPolicy(ExpertClientPolicy())])
@pytest.mark.parametrize("same_start", [False, True])
def test_a_client_naming_every_profile_alike_is_served_as_one_naming_each_its_own(policy, same_start):
    """One id for every profile a client evolves, one after another (each from its own start, or all from one
    built-in start): each profile converges exactly as under an id of its own (same observations, same final
    convergence). Before `continues`, the evidence policy converged 0.000-0.025 of 200 fit personas a generator
    so served instead of 0.740-0.895 (the old session's ruled-out axes, located targets and cues belonged to
    another target)."""
    generator = GENERATORS["plainspoken"]
    one_start = family_persona("fit", generator.name, 0).start
    own, alike = policy(), UntoldClientPolicy(policy())
    for i in range(40):
        persona = family_persona("fit", generator.name, i)
        start = one_start if same_start else persona.start
        mine = FamilyPersona(persona.target, start.model_copy(update={"id": f"own-{i}"}))
        shared = FamilyPersona(persona.target, start.model_copy(update={"id": "mimic"}))
        expected = play_episode(own, mine, generator, random.Random(i))
        served = play_episode(alike, shared, generator, random.Random(i))
        assert (served.converged, served.observations, served.final_convergence) == (
            expected.converged, expected.observations, expected.final_convergence), i


def test_profiles_evolved_at_once_under_one_id_are_told_apart():
    """A client evolving two profiles at once under one id, request by request in turns: each is told apart
    (SessionMemory.claim) and converges as under an id of its own, all but the rare profile of one target that
    passes for a nudge of the other's (before: 0.075-0.575 of 200 fit personas a generator converged instead of
    0.740-0.895)."""
    generator, policy, matched = GENERATORS["plainspoken"], UntoldClientPolicy(EvidenceClientPolicy()), 0
    for pair in range(20):
        personas = [family_persona("fit", generator.name, 2 * pair + j) for j in range(2)]
        expected = [play_episode(EvidenceClientPolicy(), p, generator, random.Random(j)) for j, p in enumerate(personas)]
        alike = [FamilyPersona(p.target, p.start.model_copy(update={"id": "mimic"})) for p in personas]
        served = play_together(policy, alike, generator, [random.Random(j) for j in range(2)])
        matched += sum(s == e for s, e in zip(served, expected))
    assert matched >= 38, matched


def test_a_profile_back_at_one_the_session_saw_continues_it_only_with_the_same_similarity():
    """The client restarted the profile (or skipped a delta): the same target gives it the same similarity, and
    the session goes on (what it located is kept); another similarity is another target: a new session."""
    start = {"confidence": 0.8, "humor": -0.2}
    left = {"confidence": 0.3, "humor": -0.2}
    history = remember(remember([], start, 0.7), left, 0.75)
    assert continues(start, 0.7, left, history) and continues(left, 0.75, left, history)
    assert not continues(start, 0.71, left, history)
    assert continues({"confidence": 0.6, "humor": 0.1}, 0.7, left, history)  # nudged within NUDGE
    assert not continues({"confidence": 0.9, "humor": -0.2}, 0.7, left, history)  # beyond it
    assert not continues({"confidence": 0.3, "warmth": 0.1}, 0.7, left, history)  # another profile's axes


def test_observed_convergence_is_rustyworms_signature_agreement():
    response = "A plain answer without hedges or questions."
    matching = profile({"confidence": 1.0, "autonomy": 0.0})
    matching.response_style.verbosity = len(response) / 1000
    assert observed_convergence(matching, [response]) == pytest.approx(1.0)
    off = profile({"confidence": -1.0, "autonomy": 1.0})
    assert observed_convergence(off, [response]) < 0.5


# --- held out: the evidence policy against RustyWorm's heuristic --------------------------------------------


@pytest.mark.parametrize("held_out", ["plainspoken", "narrator"])
def test_evidence_policy_beats_the_heuristic_on_held_out_personas(held_out):
    """40 judge personas (never used for fitting) of a generator: the served policy converges more often than
    RustyWorm's own heuristic, and leaves profiles better on average than it found them."""
    results = {}
    for name, policy in (("heuristic", HeuristicClientPolicy()), ("evidence", EvidenceClientPolicy())):
        results[name] = [play_episode(policy, family_persona("judge", held_out, i), GENERATORS[held_out],
                                      random.Random(f"test-{held_out}-{i}")) for i in range(40)]
    converged = {name: statistics.mean(r.converged for r in rs) for name, rs in results.items()}
    gain = {name: statistics.mean(r.final_convergence - r.start_convergence for r in rs) for name, rs in results.items()}
    assert converged["evidence"] >= converged["heuristic"] + 0.1, converged
    assert gain["evidence"] > 0.02 and gain["evidence"] > gain["heuristic"] + 0.02, gain


# --- the similarity's magnitude: the slope models -----------------------------------------------------------


SLOPE_TARGET = {"confidence": -0.4, "zorblax": 0.6, "quux": -0.7}  # zorblax, quux: no text channel reads them


def mean_distance_similarity(current: AiProfile) -> float:
    return round(statistics.mean(1 - abs((current.personality_value(n) or 0.0) - v) / 2 for n, v in SLOPE_TARGET.items()), 6)


def rms_similarity(current: AiProfile) -> float:
    squares = [((current.personality_value(n) or 0.0) - v) ** 2 for n, v in SLOPE_TARGET.items()]
    return round(1 - (sum(squares) / len(squares)) ** 0.5 / 2, 6)


def evolve(policy: EvidencePolicy, similarity, steps: int = 10, start: AiProfile | None = None) -> tuple[AiProfile, list[str]]:
    """A client loop: hedged answers (evidence about confidence only), the given similarity, deltas applied."""
    current = start or profile({"confidence": 0.8, "zorblax": -0.5, "quux": 0.1, "extra": 0.3})
    reasons = []
    for _ in range(steps):
        observation = BehaviorObservation(query="q", response="Maybe it is Paris, I think. Perhaps not, I'm not sure.",
                                          similarity_to_target=similarity(current))
        delta, _, reasoning = policy.predict(current, observation)
        reasons.append(reasoning)
        current = apply_correction(current, delta)
    return current, reasons


@pytest.mark.parametrize("similarity", [mean_distance_similarity, rms_similarity])
def test_the_similarity_magnitude_locates_axes_no_text_reads(similarity):
    """Under a similarity that is a sum of per-axis distances (linear) or of their squares (RMS), the policy
    calibrates the slope from its own steps and then sets even axes without any text evidence exactly to the
    target; an axis the target lacks (the similarity ignores it) goes back to where it was. (16 requests: the
    hedged text makes it add three channel axes the target lacks first, a request each.)"""
    final, reasons = evolve(EvidencePolicy(), similarity, steps=16)
    values = final.personality_values()
    for name, target in SLOPE_TARGET.items():
        assert values[name] == pytest.approx(target, abs=0.03), (name, values)
    assert values["extra"] == pytest.approx(0.3)
    model = "linear" if similarity is mean_distance_similarity else "quadratic"
    assert any(f"located by the {model} similarity model" in r for r in reasons)
    assert similarity(final) == pytest.approx(1.0, abs=0.01) and "nothing left to probe" in reasons[-1]


@pytest.mark.parametrize("decimals", [6, None, 2])
def test_one_move_calibrates_a_mean_over_axes_and_no_probe_risks_the_clients_target(decimals):
    """A similarity that is a mean over n axes has the scale 1/k for a whole k, so one move that did not cross
    the target calibrates it (to the precision the client writes: 6 decimals, a full float), not two: the
    second request is already on the slope model. Once the located axes alone bring the similarity from below
    RustyWorm's 0.90 to it, that request probes nothing. Written to 2 decimals the reciprocal is not known
    well enough to tell whole from not: no calibration from one move."""

    def similarity(current: AiProfile) -> float:
        value = statistics.mean(1 - abs((current.personality_value(n) or 0.0) - v) / 2 for n, v in SLOPE_TARGET.items())
        return value if decimals is None else round(value, decimals)

    start = profile({"confidence": -0.9, "zorblax": 0.6, "quux": -0.2})  # the hedges move confidence toward -0.4
    final, reasons = evolve(EvidencePolicy(), similarity, steps=3, start=start)
    if decimals == 2:
        assert not any("similarity model" in r for r in reasons), reasons
        return
    assert "linear similarity model, scale 0.1667" in reasons[1], reasons  # 1 / (2 * 3 axes)
    assert "located by the linear similarity model" in reasons[2] and "no probe" in reasons[2], reasons
    assert similarity(final) >= 0.90 and final.personality_value("confidence") == pytest.approx(-0.4, abs=0.01)


def test_whole_reciprocal_scales_within_their_rounding_calibrate_and_others_do_not():
    """The check behind one-move calibration: 1/estimate whole to within the estimate's rounding error."""
    assert _whole_reciprocal([(1 / 12 + 1e-7, 1e-6 / 0.4)], LINEAR)  # a 0.4 move under 1 - mean |d| over 12 axes
    assert not _whole_reciprocal([(1 / 12.3, 1e-6 / 0.4)], LINEAR)  # a move that crossed its target
    assert not _whole_reciprocal([(1 / 12, 0.01 / 0.4)], LINEAR)  # a 2-decimal similarity: 1/e known to +-5.8
    assert not _whole_reciprocal([(1 / 12, 1e-6 / 0.4), (1 / 5.5, 1e-6 / 0.4)], LINEAR)  # linear: the largest counts
    assert _whole_reciprocal([(1 / 5.5, 1e-6), (1 / 28 + 1e-8, 1e-7)], QUADRATIC)  # quadratic: the most precise
    assert not _whole_reciprocal([(1.0, 1e-6)], LINEAR)  # a slope of 1 is no mean over axes


@pytest.mark.parametrize("kind", ["constant", "random", "noisy"])
def test_a_similarity_that_is_not_a_function_of_distances_keeps_the_sign_rule(kind):
    """A constant similarity never calibrates a slope model, a random or noisy one practically never (two
    scale estimates agreeing by chance): the policy stays on the sign rule (undo a step that lowered it) and
    still leaves the profiles better on average than it found them."""
    rng = random.Random(kind)
    gains, reasons = [], []
    for name, generator in GENERATORS.items():
        for index in range(10):
            persona = family_persona("fit", name, index)
            policy, current, seen = EvidencePolicy(), persona.start, random.Random(index)
            reasons.append([])
            for _ in range(10):
                observation = generator.observe(persona.target, current, seen)
                true = observation.similarity_to_target
                fake = {"constant": 0.5, "random": rng.random(), "noisy": min(1.0, max(0.0, true + rng.gauss(0, 0.02)))}[kind]
                delta, _, reasoning = policy.predict(current, observation.model_copy(update={"similarity_to_target": fake}))
                reasons[-1].append(reasoning)
                current = apply_correction(current, delta)
            gains.append(convergence(current, persona.target) - convergence(persona.start, persona.target))
    calibrated = sum(any("similarity model" in r for r in session) for session in reasons)
    assert calibrated == 0 if kind == "constant" else calibrated <= 2, calibrated  # chance: ~1 session in 300
    if kind != "constant":
        assert any("undone" in r for session in reasons for r in session)
    assert statistics.mean(gains) > 0, statistics.mean(gains)


def test_a_constant_similarity_rules_out_no_axis_and_a_live_one_does():
    """An axis whose move left a responding similarity exactly unchanged is not moved again; under a constant
    similarity nothing responds, so nothing is ruled out and evidence keeps moving axes."""
    policy = EvidencePolicy()
    _, constant = evolve(policy, lambda current: 0.5, steps=4)
    assert not any("not moved again" in r for r in constant)
    _, live = evolve(EvidencePolicy(), mean_distance_similarity, steps=6,
                     start=profile({"confidence": 0.8, "zorblax": -0.5, "humor": 0.4}))
    assert not any("not moved again" in r and "confidence" in r.split("not moved again")[0].split(";")[-1] for r in live)


def test_a_similarity_that_never_moves_leaves_only_self_descriptions_acting():
    """A client whose similarity stays the same however the profile moves (a constant, or RustyWorm's default
    0.0) cannot judge cue-based moves, and cues alone misread more axes than they read: after three axes moved
    with it unchanged the session is deaf, those axes go back to where it found them, and from then on only the
    target's self-descriptions move an axis (and small test moves, in case the similarity does respond: then
    cues act again)."""
    origin = {"confidence": 0.8, "enthusiasm": -0.5, "humor": -0.6, "warmth": 0.1}
    response = ("Maybe it is Paris, I think. Perhaps not. This is exciting! Wow, amazing! Haha, just kidding lol. "
                "I am extremely warm.")

    def evolve_under(similarity, steps: int) -> tuple[list[dict[str, float]], list[str]]:
        current, policy, values, reasons = profile(origin), EvidencePolicy(), [], []
        for _ in range(steps):
            observation = BehaviorObservation(query="q", response=response, similarity_to_target=similarity(current))
            delta, _, reasoning = policy.predict(current, observation)
            current = apply_correction(current, delta)
            values.append(current.personality_values())
            reasons.append(reasoning)
        return values, reasons

    values, reasons = evolve_under(lambda current: 0.0, steps=8)
    deaf = next(i for i, r in enumerate(reasons) if "the similarity never changed" in r)
    assert deaf <= 4, reasons
    for name in ("confidence", "enthusiasm", "humor"):
        assert values[deaf][name] == pytest.approx(origin[name], abs=1e-3), (name, values[deaf], reasons)
        assert abs(values[-1][name] - origin[name]) <= 0.1 + 1e-9, (name, values[-1], reasons)  # test moves only
    assert values[-1]["warmth"] > 0.5, (values[-1], reasons)
    # a similarity that ignores the cue-read axes but measures warmth: deaf at first, then it responds
    values, reasons = evolve_under(lambda current: 1 - abs(current.personality_value("warmth") - 0.9) / 2, steps=8)
    deaf = next(i for i, r in enumerate(reasons) if "the similarity never changed" in r)
    assert any("cues act again" in r for r in reasons[deaf + 1:]), reasons
    assert values[-1]["warmth"] == pytest.approx(0.9, abs=0.03), (values[-1], reasons)


# --- the persona LLM as a client policy (the bench's --persona-llm row) ----------------------------------


def test_the_persona_llm_client_counts_replies_and_falls_back_on_a_prompt_that_does_not_fit(engine, tiny_model_dir):
    from transformers import AutoTokenizer

    from rollout.chat import ChatRenderer
    from rollout.engine import SamplingConfig
    from rollout.harnesses.persona.client import LLMClientPolicy
    from rollout.harnesses.persona.estimator import predict_delta
    from rollout.harnesses.persona.policy_format import PersonaPolicyFormat

    policy_format = PersonaPolicyFormat(ChatRenderer(AutoTokenizer.from_pretrained(tiny_model_dir)))
    sampling = SamplingConfig(temperature=0.0, max_tokens=64)
    persona = family_persona("judge", "plainspoken", 0)
    observation = GENERATORS["plainspoken"].observe(persona.target, persona.start, random.Random(0))
    expert = predict_delta(persona.start, observation)[0]
    prompt_length = len(policy_format.prompt_ids(persona.start, observation))
    assert prompt_length + 64 <= 2048, prompt_length  # the session engine's context (conftest)

    fits = LLMClientPolicy(engine, policy_format, sampling, max_model_len=2048)
    delta = fits.predict(persona.start, observation)
    assert (fits.replies, fits.too_long) == (1, 0)
    if fits.invalid:  # cut off by max_tokens: the expert answers, as in the service
        assert delta == expert
    else:  # under the grammar: only the harness's axes and the profile's own
        assert {axis for axis, _ in delta.adjustments} <= set(AXES) | {axis.name for axis in persona.start.personality}

    short = LLMClientPolicy(engine, policy_format, sampling, max_model_len=prompt_length)  # no room for a reply
    assert short.predict(persona.start, observation) == expert
    assert (short.replies, short.invalid, short.too_long) == (0, 0, 1)


# --- the similarity guard: every other servable policy, no worse on average ------------------------------


def seen(similarity: float) -> BehaviorObservation:
    return BehaviorObservation(query="q", response="An answer.", similarity_to_target=similarity)


def test_the_guarded_expert_ends_no_worse_on_average_and_the_unguarded_one_does_not():
    """100 judge personas of each generator: the persona expert alone leaves them worse on average than it found
    them; through the similarity guard (as /predict-delta serves it) it does not."""
    for name, generator in GENERATORS.items():
        finals, starts = {}, []
        for label, policy in (("raw", ExpertClientPolicy()), ("guarded", GuardedClientPolicy(ExpertClientPolicy()))):
            results = [play_episode(policy, family_persona("judge", name, i), generator,
                                    random.Random(f"judge-episode-{name}-{i}")) for i in range(100)]
            finals[label] = statistics.mean(r.final_convergence for r in results)
            starts = [r.start_convergence for r in results]
        start = statistics.mean(starts)
        assert finals["raw"] < start <= finals["guarded"], (name, start, finals)


def test_the_guard_undoes_a_step_that_lowered_the_similarity_and_drops_that_move_after():
    guard = SimilarityGuard()
    start = profile({"confidence": 0.0, "humor": 0.5}, "guarded")
    first = guard.prepare(start, seen(0.7))
    assert first.profile == start and first.passes
    step = PersonalityDelta(adjustments=[("confidence", 0.4), ("humor", -0.2)], confidence=0.5)
    delta, note = guard.finish(first, step)
    assert delta == PersonalityDelta(adjustments=[("confidence", 0.2), ("humor", -0.1)], confidence=1.0) and note == ""
    after = apply_correction(start, delta)
    fell = guard.prepare(after, seen(0.6))
    assert fell.profile.personality_values() == start.personality_values()  # the undo, part of this answer
    inner = PersonalityDelta(adjustments=[("confidence", 0.3), ("humor", 0.2)], confidence=1.0)
    delta, note = guard.finish(fell, inner)  # confidence up was rejected, humor up was not (humor down was)
    assert dict(delta.adjustments) == pytest.approx({"confidence": -0.2, "humor": 0.3})
    assert "undone" in note and "dropped 1 move" in note
    retried = apply_correction(after, delta)
    assert retried.personality_values() == pytest.approx({"confidence": 0.0, "humor": 0.7})
    # judged against the similarity before the undone step (0.7), not the one the undo was sent with (0.6)
    again = guard.prepare(retried, seen(0.65))
    assert again.profile.personality_values() == pytest.approx(start.personality_values())
    assert "undone" in again.notes[0]
    delta, _ = guard.finish(again, PersonalityDelta(adjustments=[("humor", 0.1), ("confidence", -0.1)], confidence=1.0))
    assert dict(delta.adjustments) == pytest.approx({"humor": -0.2, "confidence": -0.1})  # humor up: rejected now


def test_a_profile_not_as_the_guard_left_it_judges_nothing():
    guard = SimilarityGuard()
    start = profile({"confidence": 0.0, "humor": 0.5}, "blended")
    step = PersonalityDelta(adjustments=[("confidence", 0.4)], confidence=1.0)
    guard.finish(guard.prepare(start, seen(0.7)), step)
    for current in (profile({"confidence": 0.3, "humor": 0.4}, "blended"),  # the client blended in its own nudges
                    start,  # or restarted
                    profile({"confidence": 0.4, "humor": 0.5, "extra": 0.1}, "blended")):  # or added an axis
        prepared = guard.prepare(current, seen(0.1))
        assert prepared.profile == current and prepared.passes and not prepared.notes
        delta, note = guard.finish(prepared, step)
        assert dict(delta.adjustments) == {"confidence": 0.4} and note == ""


def test_a_client_applying_a_share_of_each_delta_is_judged_and_sent_deltas_divided_by_it():
    """The client applies half of every delta (a confidence of its own): the step it did apply is judged (the
    similarity fell: undone), and the deltas that follow are sent doubled, so that they land as meant."""
    guard = SimilarityGuard()
    start = profile({"confidence": 0.0, "humor": 0.5}, "halving")
    guard.finish(guard.prepare(start, seen(0.7)), PersonalityDelta(adjustments=[("confidence", 0.4)], confidence=1.0))
    halved = profile({"confidence": 0.2, "humor": 0.5}, "halving")
    prepared = guard.prepare(halved, seen(0.6))
    assert prepared.profile.personality_values() == {"confidence": 0.0, "humor": 0.5}  # undone
    assert "applies 0.50 of each delta" in prepared.notes[0] and "undone" in prepared.notes[1]
    delta, _ = guard.finish(prepared, PersonalityDelta(adjustments=[("humor", -0.2)], confidence=1.0))
    assert dict(delta.adjustments) == pytest.approx({"confidence": -0.4, "humor": -0.4})
    landed = apply_correction(halved, delta.model_copy(update={"confidence": 0.5})).personality_values()
    assert landed == pytest.approx({"confidence": 0.0, "humor": 0.3})


@pytest.mark.parametrize("share", [0.3, 1.5])
def test_the_evidence_policy_serves_a_client_that_applies_a_share_of_each_delta(share):
    """40 judge personas of a generator, the client applying every delta at a confidence of its own: the
    served policy converges about as often as for a client that applies them as sent, and leaves profiles
    better than it found them (before it read the share: 0.045-0.195 converged at 0.3, up to 0.505 ending
    worse, on 200 judge personas a generator)."""
    generator = GENERATORS["plainspoken"]
    personas = [family_persona("judge", generator.name, i) for i in range(40)]
    results = {}
    for name, policy in (("as sent", EvidenceClientPolicy()),
                         ("scaled", ScaledClientPolicy(EvidenceClientPolicy(), lambda: share))):
        results[name] = [play_episode(policy, p, generator, random.Random(i)) for i, p in enumerate(personas)]
    scaled = results["scaled"]
    assert sum(r.converged for r in scaled) >= sum(r.converged for r in results["as sent"]) - 4
    assert statistics.mean(r.final_convergence for r in scaled) > statistics.mean(r.start_convergence for r in scaled) + 0.05
    assert sum(r.worse for r in scaled) <= 2


def test_a_similarity_that_never_changes_moves_the_axes_back_and_then_passes_nothing():
    guard = SimilarityGuard()
    start = profile({"confidence": 0.2, "humor": -0.5, "zorblax": 0.3}, "deaf")
    current = start
    step = PersonalityDelta(adjustments=[("confidence", 0.4), ("humor", 0.4), ("warmth", 0.6)], confidence=0.5)
    delta, _ = guard.finish(guard.prepare(current, seen(0.0)), step)  # RustyWorm's default 0.0
    current = apply_correction(current, delta)
    moved = {"confidence": 0.4, "humor": -0.3, "zorblax": 0.3, "warmth": 0.6}
    assert current.personality_values() == pytest.approx(moved)
    prepared = guard.prepare(current, seen(0.0))
    assert not prepared.passes and "never changed" in prepared.notes[0]
    back = start.personality_values() | {"warmth": 0.0}  # added: 0, as if missing
    assert prepared.profile.personality_values() == pytest.approx(back)
    for _ in range(3):  # from then on nothing passes
        delta, _ = guard.finish(prepared, step)
        current = apply_correction(current, delta)
        assert current.personality_values() == pytest.approx(back)
        prepared = guard.prepare(current, seen(0.0))
    delta, note = guard.finish(guard.prepare(current, seen(0.3)), step)  # the similarity changed: moves pass again
    assert "pass again" in note
    assert dict(delta.adjustments) == pytest.approx({"confidence": 0.2, "humor": 0.2, "warmth": 0.3})


@pytest.mark.parametrize("seed", range(20))
def test_the_guards_delta_gives_exactly_the_inner_delta_on_the_prepared_profile(seed):
    """The delta sent, applied by the client to the profile it sent, is the inner policy's delta applied to the
    prepared profile (an undo and the inner step in one, new axes included), to the 4 decimals sent."""
    rng = random.Random(seed)
    names = ["confidence", "humor", "warmth", "zorblax", "verbosity"]

    def random_delta() -> PersonalityDelta:
        moved = rng.sample(names + ["quux", "formality"], rng.randint(1, 5))
        adjustments = [(n, rng.uniform(-1.5, 1.5)) for n in moved]
        return PersonalityDelta(adjustments=adjustments, confidence=rng.uniform(0.1, 1))

    guard = SimilarityGuard()
    current = profile({n: rng.uniform(-1, 1) for n in rng.sample(names, 3)}, f"compose-{seed}")
    for similarity in (0.6, 0.5, 0.7, 0.4, 0.4):  # falls: undo and inner step composed
        prepared = guard.prepare(current, seen(similarity))
        inner = random_delta()
        delta, _ = guard.finish(prepared, inner)
        assert delta.confidence == 1.0
        assert all(amount != 0 and round(amount, 4) == amount for _, amount in delta.adjustments)
        kept = [(n, a) for n, a in inner.adjustments if (n, 1 if a > 0 else -1) not in prepared.rejected]
        expected = apply_correction(prepared.profile, inner.model_copy(update={"adjustments": kept})).personality_values()
        current = apply_correction(current, delta)
        assert current.personality_values() == pytest.approx(expected, abs=5e-5 + 1e-12)


def test_the_guards_memory_is_bounded():
    guard = SimilarityGuard(memory_size=2)
    for name in ("a", "b", "c"):
        guard.finish(guard.prepare(profile({"confidence": 0.0}, name), seen(0.5)), PersonalityDelta())
    assert list(guard._sessions) == ["b", "c"]
