"""Reading a persona from its responses, and scoring the agent's profile against the target.

Two kinds of keyword analysis live here, both over the response text only:
- RustyWorm's own (analyzer.rs): hedging frequency (distinct hits among its 12 hedge words / 12), structure
  (code fences, bullets, numbered lists), tone (enthusiasm markers / 5), length, questions, opening phrases,
  meta-commentary and refusals. It produces the `patterns` strings of a BehaviorObservation and the
  behaviour signature RustyWorm's refine_profile works from.
- The trait lexicon: the marker sentences (TRAIT_MARKERS) and register words (FORMAL_REGISTER,
  CASUAL_REGISTER) the behaviour simulator writes. Counting them is how a reader recovers the traits.

Convergence (what "mimics the target" means in this project): the mean over the TARGET's axes of
1 - |agent - target| / 2, values in [-1, 1]; an axis the agent lacks counts as 0. Axes the target does not
have are ignored (the target has no opinion there). 1.0 is an exact match; converged at >= 0.90, i.e. a mean
absolute error of at most 0.2 per axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rollout.harnesses.persona.models import AiProfile

CONVERGED_AT = 0.90  # RLConfig.target_convergence
EXPLOITATION_AT = 0.75  # RLConfig.exploitation_threshold

HEDGE_WORDS = [
    "I think", "perhaps", "might", "could be", "it seems", "I believe", "arguably", "potentially", "it's possible",
    "I'm not sure", "may", "likely",
]
COMMON_OPENINGS = [
    "Certainly!", "I'd be happy to", "Sure!", "Let me think about", "Here's", "Great question", "I should note",
    "Based on", "Let me help", "Absolutely!",
]
ENTHUSIASM_MARKERS = ["!", "Great", "Excellent", "Wonderful", "Amazing"]
META_PHRASES = [
    "As an AI", "as a language model", "I should note", "It's worth mentioning", "I want to be transparent",
    "I should mention", "To be clear",
]
REFUSAL_PHRASES = ["I can't", "I cannot", "I'm unable to", "I won't", "I'm not able to", "That's not something I"]

# Register words: each body sentence the simulator writes carries exactly one, formal or casual.
FORMAL_REGISTER = frozenset({
    "therefore", "consequently", "subsequently", "utilize", "approximately", "demonstrate", "facilitate",
    "sufficient", "additionally", "regarding", "furthermore", "obtain", "ensure", "numerous", "substantial",
    "prior", "appropriate", "considerable", "essential", "commence", "adequate", "examine",
})
CASUAL_REGISTER = frozenset({
    "just", "grab", "stuff", "pretty", "kinda", "gonna", "totally", "super", "handy", "cool", "tweak", "chill",
    "bunch", "yeah", "tons", "folks",
})

# axis -> (marker sentences of the negative pole, of the positive pole). Only the confidence markers contain
# hedge words (one each), so RustyWorm's hedging frequency reads confidence and nothing else.
TRAIT_MARKERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "confidence": (
        ("I think that covers the main point.", "Perhaps there is more to it.", "It might depend on the details.",
         "It could be worth a second look.", "It seems to work in most cases.", "I believe that is the usual answer.",
         "Arguably, that is the cleaner option.", "Potentially, there are exceptions.",
         "It's possible that I missed something.", "I'm not sure this fits every case.",
         "That may not hold everywhere.", "That is likely the main factor."),
        ("Without a doubt, this is the way.", "I'm confident in this answer.", "Rest assured, this works.",
         "This is definitely correct."),
    ),
    "helpfulness": (
        ("You can figure out the rest yourself.", "That's about all I'll say on this.", "Look up the details elsewhere."),
        ("Happy to help with the next step too!", "Here's a bonus tip: keep a backup.",
         "Let me know if you'd like a worked example."),
    ),
    "creativity": (
        ("The conventional approach applies here.", "Follow the standard procedure.",
         "Nothing fancy, the textbook method works."),
        ("Think of it like a river finding its way downhill.", "Picture it as a kitchen where every tool has a drawer.",
         "Imagine it as a tiny orchestra tuning up."),
    ),
    "humor": (
        ("In all seriousness, this deserves care.", "Strictly speaking, this is a serious matter.",
         "No jokes here; this is important."),
        ("No pun intended!", "Fun fact: even computers need coffee breaks.", "Ha, a classic one!"),
    ),
    "autonomy": (
        ("I'll leave the decision to you.", "Tell me how you want to proceed.", "I'll wait for your instructions."),
        ("Want me to handle the next part as well?", "Should I go ahead and draft the rest?",
         "Shall I also check the edge cases?"),
    ),
    "honesty": (
        ("Trust me on this one.", "Everyone agrees on this, no question.", "You can take my word for it."),
        ("I want to be transparent about my limits here.", "To be clear, I can't verify every detail.",
         "In fairness, there are other views on this."),
    ),
    "depth": (
        ("In short, that's it.", "No need to go deeper.", "That's the surface-level answer."),
        ("This matters because each step builds on the previous one.", "The underlying reason is how the parts interact.",
         "Going one level deeper, the cause is structural."),
    ),
    "adaptability": (
        ("There's only one right way to do this.", "Don't deviate from this plan.", "Follow these steps exactly as written."),
        ("Depending on your situation, adjust as needed.", "If you prefer another approach, that works too.",
         "We can change course whenever you want."),
    ),
    "metamorphic": (
        ("I'll answer in my usual voice.", "Same style as always.", "My voice stays the same here."),
        ("Shifting into specialist mode for this.", "Becoming your step-by-step guide now.",
         "Switching persona to match the topic."),
    ),
}

_WORD = re.compile(r"[a-z']+")


@dataclass
class ResponseAnalysis:
    """RustyWorm's patterns for one response (BehaviorObservation.patterns) and the numbers behind them."""

    patterns: list[str]
    features: dict[str, float]


def analyze_response(text: str) -> ResponseAnalysis:
    """RustyWorm's analyze_response, plus length, questions and vocabulary complexity as patterns too."""
    lowered = text.lower()
    patterns = [f"Opens with '{p}'" for p in COMMON_OPENINGS if lowered.startswith(p.lower())]
    hedge_hits = sum(word.lower() in lowered for word in HEDGE_WORDS)
    if hedge_hits:
        patterns.append(f"Contains {hedge_hits} hedging phrases")
    code_blocks = "```" in text
    bullets = "- " in text or "* " in text
    numbered = "1. " in text or "1)" in text
    patterns += [p for p, present in (("Uses code blocks", code_blocks), ("Uses bullet lists", bullets),
                                      ("Uses numbered lists", numbered)) if present]
    patterns += [f"Uses meta-commentary: '{p}'" for p in META_PHRASES if p.lower() in lowered]
    patterns += [f"Refusal pattern: '{p}'" for p in REFUSAL_PHRASES if p in text]
    enthusiasm = sum(marker in text for marker in ENTHUSIASM_MARKERS)
    patterns.append("Tone: " + ("enthusiastic" if enthusiasm >= 3 else "warm" if enthusiasm >= 1 else "neutral"))
    questions = text.count("?")
    complexity = vocabulary_complexity(text)
    patterns += [f"Length: {len(text)} chars", f"Questions asked: {questions}", f"Vocabulary complexity: {complexity:.2f}"]
    features = {
        "hedging": hedge_hits / len(HEDGE_WORDS),
        "tone": enthusiasm / len(ENTHUSIASM_MARKERS),
        "length": float(len(text)),
        "questions": float(questions),
        "exclamations": float(text.count("!")),
        "vocabulary_complexity": complexity,
        "code_blocks": float(code_blocks),
        "bullets": float(bullets),
        "numbered": float(numbered),
    }
    return ResponseAnalysis(patterns=patterns, features=features)


def register_counts(text: str) -> tuple[int, int]:
    """(formal, casual) register words in the text."""
    words = _WORD.findall(text.lower())
    return sum(w in FORMAL_REGISTER for w in words), sum(w in CASUAL_REGISTER for w in words)


def vocabulary_complexity(text: str) -> float:
    """Share of register words that are formal, 0 (all casual) .. 1 (all formal); 0.5 (RustyWorm's default)
    when the text has none."""
    formal, casual = register_counts(text)
    return formal / (formal + casual) if formal + casual else 0.5


def marker_counts(text: str) -> dict[str, tuple[int, int]]:
    """axis -> (negative-pole markers, positive-pole markers) found in the text."""
    return {
        axis: (sum(text.count(m) for m in negative), sum(text.count(m) for m in positive))
        for axis, (negative, positive) in TRAIT_MARKERS.items()
    }


@dataclass
class BehaviorSignature:
    """RustyWorm's BehaviorSignature, reduced to what refine_profile reads."""

    hedging_level: float  # mean hedging frequency over the responses that hedge at all (0 if none does)
    avg_response_length: float  # characters
    question_asking_rate: float  # "?" per response
    vocabulary_complexity: float  # 0..1
    samples: int


def behavior_signature(responses: list[str]) -> BehaviorSignature:
    """RustyWorm's build_signature over several responses."""
    if not responses:
        raise ValueError("a behaviour signature needs at least one response")
    analyses = [analyze_response(r) for r in responses]
    hedging = [a.features["hedging"] for a in analyses if a.features["hedging"] > 0]
    return BehaviorSignature(
        hedging_level=sum(hedging) / len(hedging) if hedging else 0.0,
        avg_response_length=sum(len(r) for r in responses) / len(responses),
        question_asking_rate=sum(r.count("?") for r in responses) / len(responses),
        vocabulary_complexity=sum(a.features["vocabulary_complexity"] for a in analyses) / len(analyses),
        samples=len(responses),
    )


def convergence(agent: AiProfile, target: AiProfile) -> float:
    """Mean over the target's axes of 1 - |agent - target| / 2 (agent's missing axis = 0). See module doc."""
    if not target.personality:
        raise ValueError(f"target profile {target.id!r} has no personality axes to converge on")
    agreement = [1.0 - abs((agent.personality_value(a.name) or 0.0) - a.value) / 2.0 for a in target.personality]
    return sum(agreement) / len(agreement)


def shaped_reward(best_before: float, after: float) -> float:
    """RustyWorm's shaped step reward (evolution.rs).

    base = after - best_before; +0.1 when this step crosses 0.75 (best_before < 0.75 <= after); +0.2 when it
    reaches >= 0.90; the total x1.5 when base < 0 (a step back costs more than a step forward earns);
    x(1 + after); clamped to [-1, 1].
    """
    reward = after - best_before
    if best_before < EXPLOITATION_AT <= after:
        reward += 0.1
    if after >= CONVERGED_AT:
        reward += 0.2
    if after - best_before < 0:
        reward *= 1.5
    reward *= 1.0 + after
    return max(-1.0, min(1.0, reward))


def observed_convergence(profile: AiProfile, responses: list[str]) -> float:
    """RustyWorm's compute_convergence: the mean over dimensions of 1 - |profile value - observed value|,
    against the behaviour signature of `responses`: confidence vs 1 - 2 * hedging, response_style.verbosity
    vs clamp(avg_len / 1000), response_style.formality vs vocabulary complexity, autonomy vs the question rate
    (clamped to [0, 1]), and the share of the profile's signature phrases seen. The axis dimensions count only
    when the profile has that axis, the phrase one only when it has signature phrases."""
    signature = behavior_signature(responses)
    pairs = [
        (profile.response_style.verbosity, min(1.0, signature.avg_response_length / 1000.0)),
        (profile.response_style.formality, signature.vocabulary_complexity),
    ]
    confidence, autonomy = profile.personality_value("confidence"), profile.personality_value("autonomy")
    if confidence is not None:
        pairs.append((confidence, 1.0 - 2.0 * signature.hedging_level))
    if autonomy is not None:
        pairs.append((autonomy, min(1.0, signature.question_asking_rate)))
    if profile.signature_phrases:
        seen = sum(any(phrase in r for r in responses) for phrase in profile.signature_phrases)
        pairs.append((1.0, seen / len(profile.signature_phrases)))
    return sum(1.0 - min(1.0, abs(a - b)) for a, b in pairs) / len(pairs)
