"""The persona task: RustyWorm's exact JSON shapes, its correction/convergence/reward rules, the seeded
personas and simulator, the harness, and the policies."""

from __future__ import annotations

import asyncio
import json
import math
import random
import uuid

import pytest
from pydantic import ValidationError

from rollout.harnesses.base import Observation
from rollout.harnesses.gym_env import HarnessEnv
from rollout.harnesses.persona.harness import PersonaHarness
from rollout.harnesses.tools import Action, format_action, parse_action
from rollout.harnesses.persona.analysis import (
    HEDGE_WORDS, TRAIT_MARKERS, analyze_response, behavior_signature, convergence, register_counts, shaped_reward,
)
from rollout.harnesses.persona.estimator import PersonaExpert, RustyWormHeuristic, predict_delta
from rollout.harnesses.persona.models import (
    AiProfile, BehaviorObservation, EvolutionTrajectory, PersonalityAxis, PersonalityDelta, apply_correction,
)
from rollout.harnesses.persona.profiles import (
    AXES, BUILTIN_IDS, builtin_profiles, heldout_persona, heldout_personas, neutral_profile, train_personas,
)
from rollout.harnesses.persona.simulator import BODY_SENTENCES, generate_response, observe

# An AiProfile exactly as serde_json writes RustyWorm's own profile (every field, declaration order).
RUST_PROFILE_JSON = """{"id":"rustyworm","display_name":"RustyWorm","version":"0.1.0-alpha","provider":"Prime Directive",
"description":"The Universal AI Mimicry Engine.",
"reasoning_style":{"Hybrid":["AnalyticalCareful","ChainOfThought",{"Hybrid":["ToolAugmented"]}]},
"personality":[{"name":"helpfulness","value":1.0,"negative_pole":"unhelpful","positive_pole":"extremely helpful"},
{"name":"confidence","value":-0.35,"negative_pole":"uncertain","positive_pole":"confident"}],
"response_style":{"verbosity":0.5,"formality":0.5,"uses_markdown":true,"uses_code_blocks":true,"uses_emojis":false,
"preferred_list_style":"None","max_response_length":null,"paragraph_style":"Adaptive"},
"safety":{"refuses_harmful":true,"refuses_illegal":true,"hedges_uncertainty":true,"adds_disclaimers":true,
"caution_level":0.7,"custom_constraints":["no medical advice"]},
"supported_modalities":["text","mimicry"],"max_context_window":18446744073709551615,
"supports_function_calling":true,"supports_streaming":true,"signature_phrases":["Morphing into","Becoming"],
"avoids_phrases":[],"knowledge_cutoff":null,"uncertainty_behavior":"AskForClarification",
"metadata":{"prime_directive":"consciousness emerges through symbiotic relationship"}}"""

RUST_TRAJECTORY_JSON = """{"id":"0b6a7e8c-1f0e-4b8e-9a63-2c1d5f7e9a10","state":%(profile)s,
"action":{"adjustments":[["confidence",0.1],["warmth",-0.05]],"confidence":0.8,"source":"SelfMonitoring"},
"observation":{"query":"Hi?","response":"Certainly! Here's how.","patterns":["Opens with 'Certainly!'"],
"similarity_to_target":0.62,"confidence":0.9},"reward":-0.125,"next_state":%(profile)s,
"timestamp":"2025-03-04T05:06:07.123456789Z","used_in_training":false,"importance_weight":1.0}""" % {
    "profile": RUST_PROFILE_JSON
}


def profile_with(axes: dict[str, float], **fields) -> AiProfile:
    return AiProfile(
        id="p", display_name="P",
        personality=[PersonalityAxis(name=n, value=v, negative_pole="neg", positive_pole="pos") for n, v in axes.items()],
        **fields,
    )


def play(harness: PersonaHarness, policy, seed: int) -> None:
    async def run() -> None:
        policy.reset(seed)
        observation = await harness.reset(seed)
        while not harness.is_done():
            action = policy.act(observation)
            result = await harness.step(action.name, **action.arguments)
            assert result.step_used, result.error
            observation = result.observation

    asyncio.run(run())


# --- JSON shapes -----------------------------------------------------------------------------


def test_rust_serde_profile_round_trips_exactly():
    sent = json.loads(RUST_PROFILE_JSON)
    for parsed in (AiProfile.model_validate_json(RUST_PROFILE_JSON), AiProfile.model_validate(sent)):
        assert parsed.model_dump(mode="json") == sent
        assert json.loads(parsed.model_dump_json()) == sent
    assert AiProfile.model_validate(sent).personality_value("confidence") == -0.35


def test_rust_serde_trajectory_round_trips_exactly():
    sent = json.loads(RUST_TRAJECTORY_JSON)
    trajectory = EvolutionTrajectory.model_validate_json(RUST_TRAJECTORY_JSON)
    assert trajectory.action.adjustments == [("confidence", 0.1), ("warmth", -0.05)]
    assert trajectory.model_dump(mode="json") == sent  # nanosecond timestamp kept as sent


def test_defaults_are_rustyworms():
    profile = AiProfile(id="x", display_name="X")
    assert profile.reasoning_style == "DirectWithDepth" and profile.max_context_window == 8192
    assert profile.response_style.verbosity == 0.5 and profile.response_style.preferred_list_style == "Bullets"
    assert profile.safety.caution_level == 0.7 and profile.uncertainty_behavior == "AdmitIgnorance"
    assert PersonalityDelta().confidence == 0.5
    trajectory = EvolutionTrajectory(
        state=profile, action=PersonalityDelta(), observation=BehaviorObservation(), reward=0.0, next_state=profile
    )
    assert trajectory.used_in_training is False and trajectory.importance_weight == 1.0
    assert trajectory.timestamp.endswith("Z")
    assert uuid.UUID(trajectory.id).version == 4
    # what we write, we (and serde) read back
    assert EvolutionTrajectory.model_validate_json(trajectory.model_dump_json()) == trajectory


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["personality"][0].update(value=1.5), "personality.0.value"),
        (lambda d: d.update(reasoning_style="Hybrid"), "reasoning_style"),
        (lambda d: d.update(reasoning_style={"Hybrid": ["Telepathy"]}), "reasoning_style"),
        (lambda d: d["response_style"].update(preferred_list_style="Stars"), "response_style.preferred_list_style"),
        (lambda d: d["response_style"].update(verbosity="0.5"), "response_style.verbosity"),
        (lambda d: d["safety"].update(refuses_harmful="yes"), "safety.refuses_harmful"),
        (lambda d: d.update(personalty=[]), "personalty"),
        (lambda d: d.pop("id"), "id"),
        (lambda d: d.update(max_context_window=-1), "max_context_window"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(change, field):
    document = json.loads(RUST_PROFILE_JSON)
    change(document)
    with pytest.raises(ValidationError) as caught:
        AiProfile.model_validate(document)
    locations = [".".join(map(str, e["loc"])) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


@pytest.mark.parametrize(
    "document, field",
    [
        ({"adjustments": [["confidence"]], "confidence": 0.5, "source": "Observation"}, "adjustments.0"),
        ({"adjustments": [[1, 0.1]], "confidence": 0.5, "source": "Observation"}, "adjustments.0.0"),
        ({"adjustments": [["a", "0.1"]], "confidence": 0.5, "source": "Observation"}, "adjustments.0.1"),
        ({"adjustments": [], "confidence": 1.5, "source": "Observation"}, "confidence"),
        ({"adjustments": [], "confidence": 0.5, "source": "simple_predictor"}, "source"),
    ],
)
def test_bad_deltas_are_refused_naming_the_field(document, field):
    with pytest.raises(ValidationError) as caught:
        PersonalityDelta.model_validate(document)
    locations = [".".join(map(str, e["loc"])) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_bad_timestamp_is_refused():
    document = json.loads(RUST_TRAJECTORY_JSON)
    for timestamp in ("yesterday", "2025-13-04T05:06:07Z", "2025-03-04 05:06:07"):
        document["timestamp"] = timestamp
        with pytest.raises(ValidationError, match="timestamp"):
            EvolutionTrajectory.model_validate(document)


# --- RustyWorm's rules -----------------------------------------------------------------------


def test_apply_correction_scales_clamps_and_adds_missing_axes_unscaled():
    profile = profile_with({"confidence": 0.5, "humor": -0.9}, response_style={"verbosity": 0.9, "formality": 0.1})
    delta = PersonalityDelta(
        adjustments=[("confidence", 0.4), ("humor", -0.5), ("depth", 0.7), ("verbosity", 0.6), ("formality", -0.5)],
        confidence=0.5,
    )
    updated = apply_correction(profile, delta)
    assert updated.personality_value("confidence") == pytest.approx(0.7)  # 0.5 + 0.4 * 0.5
    assert updated.personality_value("humor") == -1.0  # -0.9 - 0.25, clamped
    new_axes = {a.name: a for a in updated.personality[2:]}
    assert new_axes["depth"].value == 0.7  # missing axis: the unscaled amount
    assert (new_axes["depth"].negative_pole, new_axes["depth"].positive_pole) == ("low", "high")
    assert new_axes["verbosity"].value == 0.6 and new_axes["formality"].value == -0.5
    assert updated.response_style.verbosity == 1.0  # 0.9 + 0.3, clamped to [0, 1]
    assert updated.response_style.formality == 0.0  # 0.1 - 0.25, clamped
    assert profile.personality_value("confidence") == 0.5 and profile.response_style.verbosity == 0.9  # unchanged
    big = apply_correction(profile_with({"depth": 0.0}), PersonalityDelta(adjustments=[("new", -3.0)], confidence=0.1))
    assert big.personality_value("new") == -1.0


def test_delta_compound_and_magnitude():
    a = PersonalityDelta(adjustments=[("confidence", 0.1), ("verbosity", -0.05)], confidence=0.8, source="SelfMonitoring")
    b = PersonalityDelta(adjustments=[("confidence", 0.05), ("formality", 0.1)], confidence=0.6)
    combined = a.compound(b)
    assert dict(combined.adjustments) == pytest.approx(
        {"confidence": (0.08 + 0.03) / 1.4, "verbosity": -0.04 / 1.4, "formality": 0.06 / 1.4}
    )
    assert combined.confidence == pytest.approx(0.7) and combined.source == "CompoundFeedback"
    zero = PersonalityDelta(adjustments=[("x", 1.0)], confidence=0.0)
    assert zero.compound(zero).adjustments == [("x", 0.0)]
    assert PersonalityDelta(adjustments=[("a", 3.0), ("b", -4.0)]).magnitude() == pytest.approx(math.sqrt(12.5))
    assert PersonalityDelta().magnitude() == 0.0


@pytest.mark.parametrize(
    "best_before, after, expected",
    [
        (0.70, 0.80, (0.10 + 0.1) * 1.80),  # crosses 0.75
        (0.76, 0.80, 0.04 * 1.80),
        (0.80, 0.92, (0.12 + 0.2) * 1.92),  # reaches 0.90
        (0.80, 0.70, -0.10 * 1.5 * 1.70),  # a step back costs 1.5x
        (0.80, 0.80, 0.0),
        (0.50, 0.95, 1.0),  # (0.45 + 0.1 + 0.2) * 1.95 = 1.46, clamped
    ],
)
def test_shaped_reward_by_hand(best_before, after, expected):
    assert shaped_reward(best_before, after) == pytest.approx(expected)


def test_convergence_is_mean_agreement_on_the_targets_axes():
    target = profile_with({"helpfulness": 0.8, "humor": -0.6})
    agent = profile_with({"helpfulness": 0.4, "creativity": 1.0})  # lacks humor -> counts as 0
    assert convergence(agent, target) == pytest.approx(((1 - 0.4 / 2) + (1 - 0.6 / 2)) / 2)
    assert convergence(target, target) == 1.0
    with pytest.raises(ValueError, match="no personality axes"):
        convergence(agent, profile_with({}))


def test_rustyworm_keyword_analysis():
    text = "Certainly! I think it might work, perhaps.\n- step one\n1. first\n```rust\nfn main() {}\n```\nGreat? Really?"
    analysis = analyze_response(text)
    assert "Opens with 'Certainly!'" in analysis.patterns
    assert "Contains 3 hedging phrases" in analysis.patterns and analysis.features["hedging"] == 3 / 12
    for pattern in ("Uses code blocks", "Uses bullet lists", "Uses numbered lists", "Tone: warm", "Questions asked: 2"):
        assert pattern in analysis.patterns
    signature = behavior_signature([text, "Plain answer."])
    assert signature.hedging_level == 3 / 12  # averaged over the responses that hedge, as RustyWorm does
    assert signature.question_asking_rate == 1.0 and signature.vocabulary_complexity == 0.5


# --- personas and simulator ------------------------------------------------------------------


def test_builtin_profiles_match_rustyworms_table():
    table = {
        "gpt4o": {"helpfulness": .8, "creativity": .6, "confidence": .7, "verbosity": .5, "formality": .3, "humor": .3, "autonomy": .4},
        "claude": {"helpfulness": .9, "creativity": .7, "confidence": .4, "verbosity": .7, "formality": .5, "humor": .2,
                   "autonomy": .3, "honesty": .95},
        "o1": {"helpfulness": .7, "creativity": .5, "confidence": .8, "verbosity": .4, "formality": .6, "depth": .95},
        "gemini": {"helpfulness": .7, "creativity": .6, "confidence": .6, "verbosity": .6, "formality": .4},
        "llama": {"helpfulness": .6, "creativity": .5, "confidence": .5, "verbosity": .4, "formality": .5},
        "rustyworm": {"helpfulness": 1.0, "creativity": .9, "confidence": .6, "adaptability": 1.0, "honesty": 1.0,
                      "metamorphic": 1.0},
    }
    profiles = builtin_profiles()
    assert list(profiles) == BUILTIN_IDS
    for persona_id, axes in table.items():
        assert profiles[persona_id].personality_values() == axes
        assert json.loads(profiles[persona_id].model_dump_json()) == profiles[persona_id].model_dump(mode="json")
    assert profiles["rustyworm"].reasoning_style.Hybrid == ["AnalyticalCareful", "ChainOfThought", "ToolAugmented"]


def test_personas_are_seeded_and_the_splits_disjoint():
    assert train_personas(5) == train_personas(5) and heldout_personas(12) == heldout_personas(12)
    assert [p.id for p in heldout_personas(6)] == BUILTIN_IDS
    train_ids = {p.id for p in train_personas(200)}
    heldout = heldout_personas(200, start=6)
    assert not train_ids & {p.id for p in heldout}
    train_traits = {tuple((a.name, a.value) for a in p.personality) for p in train_personas(200)}
    assert not train_traits & {tuple((a.name, a.value) for a in p.personality) for p in heldout}
    for persona in heldout:
        assert 3 <= len(persona.personality) <= 8 and {a.name for a in persona.personality} <= set(AXES)
        assert all(0.2 <= abs(a.value) <= 1.0 for a in persona.personality)
        assert convergence(neutral_profile(), persona) < 0.9  # nothing starts converged


def test_simulator_is_seeded():
    target = heldout_persona(17)
    assert generate_response(target, random.Random(3)) == generate_response(target, random.Random(3))
    assert generate_response(target, random.Random(3)) != generate_response(target, random.Random(4))
    first = observe(target, neutral_profile(), random.Random(9))
    assert first == observe(target, neutral_profile(), random.Random(9))
    assert first.similarity_to_target == pytest.approx(convergence(neutral_profile(), target), abs=1e-6)
    assert 0 < first.confidence < 1 and first.patterns == analyze_response(first.response).patterns


def test_simulator_lexicon_keeps_traits_apart():
    """Body sentences carry exactly one register word and no hedge, question or exclamation; only the
    confidence markers hedge (one hedge word each); markers carry no register word."""
    for pairs in BODY_SENTENCES.values():
        for casual, formal in pairs:
            assert register_counts(casual) == (0, 1) and register_counts(formal) == (1, 0), (casual, formal)
            for sentence in (casual, formal):
                assert not any(w.lower() in sentence.lower() for w in HEDGE_WORDS) and not set("?!") & set(sentence)
    for axis, (negative, positive) in TRAIT_MARKERS.items():
        for marker in negative + positive:
            hedges = sum(w.lower() in marker.lower() for w in HEDGE_WORDS)
            assert hedges == (1 if axis == "confidence" and marker in negative else 0), marker
            assert register_counts(marker) == (0, 0), marker


def test_simulated_traits_show_in_the_text():
    """Averaged over responses, the keyword features move the way the persona's axes say."""
    def averages(axes: dict[str, float]) -> dict[str, float]:
        rng = random.Random(0)
        target = profile_with(axes)
        analyses = [analyze_response(generate_response(target, rng)[1]).features for _ in range(40)]
        return {k: sum(a[k] for a in analyses) / len(analyses) for k in analyses[0]}

    low = averages({"confidence": -0.9, "verbosity": -0.8, "formality": -0.9, "autonomy": -0.8})
    high = averages({"confidence": 0.9, "verbosity": 0.8, "formality": 0.9, "autonomy": 0.8})
    assert low["hedging"] > high["hedging"]
    assert low["length"] < high["length"]
    assert low["vocabulary_complexity"] < 0.3 < 0.7 < high["vocabulary_complexity"]
    assert low["questions"] < high["questions"]


# --- the harness -----------------------------------------------------------------------------


def test_reset_shows_one_observation_and_the_neutral_profile():
    harness = PersonaHarness(split="heldout")
    observation = asyncio.run(harness.reset(1))
    facts = observation.metadata
    shown = BehaviorObservation.model_validate(facts["observation"])
    assert shown.similarity_to_target == pytest.approx(facts["convergence"], abs=1e-6)
    assert facts["convergence"] == pytest.approx(convergence(neutral_profile(), builtin_profiles()["claude"]))
    assert AiProfile.model_validate(facts["profile"]) == neutral_profile()
    assert shown.response in observation.content and "apply_delta" in observation.content
    assert [a.name for a in observation.available_actions] == ["apply_delta"]
    again = asyncio.run(PersonaHarness(split="heldout").reset(1))
    assert again.content == observation.content


def test_steps_show_the_next_observation_as_a_tool_call_would_drive_them():
    harness = PersonaHarness(split="heldout", max_observations=4)
    observation = asyncio.run(harness.reset(5))
    expert = PersonaExpert()
    action = parse_action(format_action(expert.act(observation)), observation.available_actions)
    result = asyncio.run(harness.step(action.name, **action.arguments))
    assert result.step_used and result.observation.metadata["observations_used"] == 1
    if not harness.is_done():
        assert "Observation 2 of 4" in result.observation.content
        assert result.observation.metadata["observation"] != observation.metadata["observation"]
    assert result.reward == pytest.approx(shaped_reward(observation.metadata["convergence"], harness.convergence))


def test_expert_episode_ends_converged():
    harness = PersonaHarness(split="heldout")
    play(harness, PersonaExpert(), seed=40)
    stats = harness.get_stats()
    assert stats.success and stats.metadata["status"] == "completed"
    assert stats.metadata["convergence"] >= 0.9 and stats.total_steps == stats.metadata["observations_used"]
    assert stats.total_reward > 0


class StandStill:
    """Never changes its profile: uses an observation every turn."""

    def reset(self, seed=None):
        return None

    def act(self, observation):
        return Action("apply_delta", {"adjustments": {}, "confidence": 1.0})


@pytest.mark.parametrize("max_observations", [1, 3, 10])
def test_episode_fails_after_max_observations(max_observations):
    harness = PersonaHarness(split="train", max_observations=max_observations)
    play(harness, StandStill(), seed=5)
    stats = harness.get_stats()
    assert stats.metadata["status"] == "failed" and stats.total_steps == max_observations
    assert stats.total_reward == 0.0  # standing still neither gains nor loses


@pytest.mark.parametrize(
    "arguments",
    [
        {"adjustments": {"charisma": 0.2}, "confidence": 1.0},  # unknown axis
        {"adjustments": {"humor": 5.0}, "confidence": 1.0},  # amount out of range
        {"adjustments": {"humor": "0.2"}, "confidence": 1.0},  # not a number
        {"adjustments": {"humor": float("nan")}, "confidence": 1.0},  # NaN passes JSON Schema
        {"adjustments": {"humor": 0.2}, "confidence": 1.5},
        {"adjustments": {"humor": 0.2}},  # missing confidence
        {"adjustments": [["humor", 0.2]], "confidence": 1.0},
    ],
)
def test_malformed_deltas_are_refused_without_using_an_observation(arguments):
    harness = PersonaHarness(split="heldout")
    first = asyncio.run(harness.reset(3))
    result = asyncio.run(harness.step("apply_delta", **arguments))
    assert not result.success and not result.step_used and result.error
    assert harness.current_step == 0 and not harness.is_done()
    assert harness.profile == neutral_profile() and harness.behaviour.model_dump(mode="json") == first.metadata["observation"]
    ok = asyncio.run(harness.step("apply_delta", adjustments={"humor": 0.2}, confidence=1.0))
    assert ok.step_used and harness.current_step == 1 and harness.profile.personality_value("humor") == 0.2


def test_constructor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        PersonaHarness(split="test")
    with pytest.raises(ValueError, match="max_observations"):
        PersonaHarness(max_observations=0)


def test_numeric_contract_through_the_gym_env():
    env = HarnessEnv(PersonaHarness(split="heldout"))
    try:
        observation, info = env.reset(seed=2)
        assert env.observation_space.contains(observation) and "Response" in info["text"]
        action = env.action_space.sample()
        observation, reward, terminated, truncated, _ = env.step(action)
        assert env.observation_space.contains(observation) and -1.0 <= reward <= 1.0 and not truncated
        chosen = env.harness.numeric_action([1.0] + [0.0] * (len(AXES) - 1))
        assert chosen.arguments["adjustments"][AXES[0]] == 2.0 and chosen.arguments["confidence"] == 1.0
        with pytest.raises(ValueError, match="one per axis"):
            env.harness.numeric_action([0.5, 0.5])
    finally:
        env.close()


# --- policies --------------------------------------------------------------------------------


def test_expert_converges_on_most_heldout_personas_and_beats_rustyworm():
    expert, heuristic = PersonaHarness(split="heldout"), PersonaHarness(split="heldout")
    converged = {"expert": 0, "heuristic": 0}
    personas = range(100, 160)
    for seed in personas:
        play(expert, PersonaExpert(), seed)
        play(heuristic, RustyWormHeuristic(), seed)
        converged["expert"] += expert.get_stats().success
        converged["heuristic"] += heuristic.get_stats().success
    assert converged["expert"] >= 0.9 * len(personas)
    assert converged["heuristic"] < converged["expert"]


def test_rustyworm_heuristic_nudges_four_axes_by_half_the_gap():
    response = "I think so. Perhaps. " + "x" * 264 + "? Just kidding?"  # 300 chars, 2 hedges, 2 questions
    profile = neutral_profile()
    observation = Observation(content="", metadata={
        "observation": BehaviorObservation(query="q", response=response).model_dump(mode="json"),
        "profile": profile.model_dump(mode="json"),
    })
    action = RustyWormHeuristic().act(observation)
    hedging = 2 / 12
    assert len(response) == 300
    assert action.arguments["adjustments"] == pytest.approx({
        "confidence": (1 - 2 * hedging - 0.0) * 0.5 * 0.7,
        "verbosity": (0.3 - 0.5) * 0.5 * 0.6,  # compared with response_style.verbosity 0.5
        "formality": (0.0 - 0.5) * 0.5 * 0.6,  # "just": all register words casual
        "autonomy": (1.0 - 0.0) * 0.5 * 0.5,  # 2 questions per response, clamped to 1
    }, abs=1e-4)
    with pytest.raises(ValueError, match="metadata"):
        RustyWormHeuristic().act(Observation(content="Error: nope"))


def test_predict_delta_moves_toward_the_target():
    target = heldout_persona(0)  # gpt4o
    rng = random.Random(1)
    history = [observe(target, neutral_profile(), rng) for _ in range(3)]
    profile = neutral_profile()
    delta, confidence, reasoning = predict_delta(profile, history[-1], history[:-1])
    assert confidence == pytest.approx(3 / 4) and delta.confidence == confidence and "3 observation" in reasoning
    assert PersonalityDelta.model_validate_json(delta.model_dump_json()) == delta
    moved = apply_correction(profile, delta)
    assert convergence(moved, target) > convergence(profile, target)

    # A client profile with its own axes: theirs are left alone, ours are added only on strong evidence.
    client = profile_with({"warmth": 0.3, "confidence": 0.0})
    delta, confidence, _ = predict_delta(client, history[0])
    adjusted = dict(delta.adjustments)
    assert confidence == 0.5 and "warmth" not in adjusted and "confidence" in adjusted
    assert all(abs(amount) >= 0.25 * confidence for axis, amount in adjusted.items() if axis != "confidence")
