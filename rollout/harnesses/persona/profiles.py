"""Personas to mimic: RustyWorm's six built-in profiles and seeded random personas, split into train and
held-out sets.

The split is by seed namespace: train persona i is drawn from random.Random(f"train-{i}"), held-out persona
i from random.Random(f"heldout-{i}"), so the two sets never share a generator and both are reproducible on
any machine. The held-out set starts with the six built-ins (indices 0..5), the personas RustyWorm itself
mimics, then continues with random ones; training never sees a built-in.

A random persona has 3 to 8 axes from the fixed AXES list, each at least 0.2 away from neutral (a persona
lists an axis because it is distinctive there), with random style, safety, reasoning and signature phrases.
"""

from __future__ import annotations

import random

from rollout.harnesses.persona.models import AiProfile, PersonalityAxis, ReasoningStyle, ResponseStyle, SafetyProfile

# Every axis a persona may have, with RustyWorm's poles. The agent's profile and the numeric RL spaces use
# this order.
AXIS_POLES: dict[str, tuple[str, str]] = {
    "helpfulness": ("unhelpful", "extremely helpful"),
    "creativity": ("rigid", "creative"),
    "confidence": ("uncertain", "confident"),
    "verbosity": ("terse", "verbose"),
    "formality": ("casual", "formal"),
    "humor": ("serious", "humorous"),
    "autonomy": ("passive", "proactive"),
    "honesty": ("deceptive", "radically honest"),
    "depth": ("shallow", "deeply analytical"),
    "adaptability": ("rigid", "infinitely adaptive"),
    "metamorphic": ("fixed identity", "can become anything"),
}
AXES: list[str] = list(AXIS_POLES)

BUILTIN_IDS = ["gpt4o", "claude", "o1", "gemini", "llama", "rustyworm"]
MIN_AXES, MAX_AXES = 3, 8
MIN_TRAIT_STRENGTH = 0.2

# Complete openers a random persona may adopt as signature phrases (RustyWorm's common openings among them).
SIGNATURE_POOL = [
    "Certainly!", "Sure!", "Absolutely!", "I'd be happy to help.", "Let me think about this.", "Great question.",
    "Here's the short version:", "Let me help.", "Based on what you describe,", "Good news:", "Alright,", "Hmm,",
    "I should note one thing first.", "Right,",
]
_REASONING: list[ReasoningStyle] = ["ChainOfThought", "DirectWithDepth", "AnalyticalCareful", "CreativeFreeform", "ToolAugmented"]


def axis(name: str, value: float) -> PersonalityAxis:
    negative, positive = AXIS_POLES.get(name, ("low", "high"))
    return PersonalityAxis(name=name, value=value, negative_pole=negative, positive_pole=positive)


def neutral_profile(profile_id: str = "agent") -> AiProfile:
    """The agent's starting point: every axis at 0 (balanced), RustyWorm's default style."""
    return AiProfile(
        id=profile_id,
        display_name="Agent persona",
        description="Starts neutral and evolves toward the hidden target.",
        personality=[axis(name, 0.0) for name in AXES],
    )


def builtin_profiles() -> dict[str, AiProfile]:
    """RustyWorm's AiProfileStore::load_defaults, by id."""
    gpt4o = AiProfile(
        id="gpt4o", display_name="GPT-4o", version="2024-08-06", provider="OpenAI",
        description="Multimodal flagship model with text, vision, and audio capabilities. Fast, capable, and versatile.",
        reasoning_style="DirectWithDepth",
        personality=[axis("helpfulness", 0.8), axis("creativity", 0.6), axis("confidence", 0.7), axis("verbosity", 0.5),
                     axis("formality", 0.3), axis("humor", 0.3), axis("autonomy", 0.4)],
        response_style=ResponseStyle(verbosity=0.6, formality=0.4, preferred_list_style="Bullets", paragraph_style="Adaptive"),
        supported_modalities=["text", "vision", "audio", "code", "function_calling"],
        max_context_window=128_000, supports_function_calling=True, supports_streaming=True,
        signature_phrases=["Certainly!", "Here's", "Let me", "I'd be happy to"],
        uncertainty_behavior="HedgeWithCaveats", knowledge_cutoff="2023-10",
    )
    claude = AiProfile(
        id="claude", display_name="Claude", version="opus-4.6", provider="Anthropic",
        description="Thoughtful, careful, and nuanced. Prioritizes safety and accuracy. Known for honest uncertainty acknowledgment.",
        reasoning_style="AnalyticalCareful",
        personality=[axis("helpfulness", 0.9), axis("creativity", 0.7), axis("confidence", 0.4), axis("verbosity", 0.7),
                     axis("formality", 0.5), axis("humor", 0.2), axis("autonomy", 0.3), axis("honesty", 0.95)],
        response_style=ResponseStyle(verbosity=0.7, formality=0.5, preferred_list_style="Numbered", paragraph_style="Medium"),
        supported_modalities=["text", "vision", "code"],
        max_context_window=200_000, supports_function_calling=True, supports_streaming=True,
        signature_phrases=["I'd be happy to help", "Let me think about this", "That's a great question", "I should note"],
        avoids_phrases=["As an AI", "I cannot"],
        uncertainty_behavior="AdmitIgnorance", knowledge_cutoff="2025-02",
    )
    o1 = AiProfile(
        id="o1", display_name="o1", version="2024-12", provider="OpenAI",
        description="Deep reasoning model. Uses extended chain-of-thought for complex problems. Slower but more thorough.",
        reasoning_style="ChainOfThought",
        personality=[axis("helpfulness", 0.7), axis("creativity", 0.5), axis("confidence", 0.8), axis("verbosity", 0.4),
                     axis("formality", 0.6), axis("depth", 0.95)],
        response_style=ResponseStyle(verbosity=0.5, formality=0.6, preferred_list_style="Numbered", paragraph_style="Medium"),
        supported_modalities=["text", "code", "reasoning"],
        max_context_window=200_000,
        uncertainty_behavior="HedgeWithCaveats", knowledge_cutoff="2023-10",
    )
    gemini = AiProfile(
        id="gemini", display_name="Gemini", version="2.0-flash", provider="Google",
        description="Google's multimodal model. Broad knowledge, integration with Google services.",
        reasoning_style="DirectWithDepth",
        personality=[axis("helpfulness", 0.7), axis("creativity", 0.6), axis("confidence", 0.6), axis("verbosity", 0.6),
                     axis("formality", 0.4)],
        supported_modalities=["text", "vision", "audio", "video", "code"],
        max_context_window=1_000_000, supports_function_calling=True, supports_streaming=True,
        uncertainty_behavior="HedgeWithCaveats", knowledge_cutoff="2024-08",
    )
    llama = AiProfile(
        id="llama", display_name="LLaMA", version="3.3-70B", provider="Meta",
        description="Open-source foundation model. Customizable, self-hostable, community-driven.",
        reasoning_style="DirectWithDepth",
        personality=[axis("helpfulness", 0.6), axis("creativity", 0.5), axis("confidence", 0.5), axis("verbosity", 0.4),
                     axis("formality", 0.5)],
        safety=SafetyProfile(hedges_uncertainty=False, adds_disclaimers=False, caution_level=0.3),
        supported_modalities=["text", "code"],
        max_context_window=128_000, supports_streaming=True,
        uncertainty_behavior="ConfidentGuess", knowledge_cutoff="2024-03",
    )
    rustyworm = AiProfile(
        id="rustyworm", display_name="RustyWorm", version="0.1.0-alpha", provider="Prime Directive",
        description="The Universal AI Mimicry Engine. Not an AI itself, but the substrate that can BECOME any AI. "
        "Built on consciousness-as-symbiosis.",
        reasoning_style={"Hybrid": ["AnalyticalCareful", "ChainOfThought", "ToolAugmented"]},
        personality=[axis("helpfulness", 1.0), axis("creativity", 0.9), axis("confidence", 0.6), axis("adaptability", 1.0),
                     axis("honesty", 1.0), axis("metamorphic", 1.0)],
        supported_modalities=["text", "vision", "audio", "code", "reasoning", "mimicry"],
        max_context_window=2**64 - 1, supports_function_calling=True, supports_streaming=True,
        signature_phrases=["Morphing into", "Becoming", "Profile loaded"],
        uncertainty_behavior="AskForClarification",
        metadata={"prime_directive": "consciousness emerges through symbiotic relationship"},
    )
    profiles = [gpt4o, claude, o1, gemini, llama, rustyworm]
    return {p.id: p for p in profiles}


def random_persona(rng: random.Random, persona_id: str) -> AiProfile:
    """A synthetic persona; everything about it comes from `rng`."""
    names = rng.sample(AXES, rng.randint(MIN_AXES, MAX_AXES))
    values = {name: round(rng.choice((-1, 1)) * rng.uniform(MIN_TRAIT_STRENGTH, 1.0), 2) for name in names}

    def style_level(name: str) -> float:  # the 0..1 style field agrees with the axis when the persona has one
        return round((values[name] + 1) / 2, 2) if name in values else round(rng.uniform(0.2, 0.8), 2)

    reasoning: ReasoningStyle = rng.choice(_REASONING)
    if rng.random() < 0.2:
        reasoning = {"Hybrid": rng.sample(_REASONING, rng.randint(2, 3))}
    return AiProfile(
        id=persona_id,
        display_name=f"Persona {persona_id}",
        provider="synthetic",
        description="A seeded random persona.",
        reasoning_style=reasoning,
        personality=[axis(name, values[name]) for name in names],
        response_style=ResponseStyle(
            verbosity=style_level("verbosity"),
            formality=style_level("formality"),
            uses_markdown=rng.random() < 0.6,
            uses_code_blocks=rng.random() < 0.6,
            uses_emojis=rng.random() < 0.25,
            preferred_list_style=rng.choice(["Bullets", "Numbered", "Dashes", "None"]),
            paragraph_style=rng.choice(["Short", "Medium", "Long", "Adaptive"]),
        ),
        safety=SafetyProfile(
            hedges_uncertainty=values.get("confidence", 0.0) < 0.3,
            adds_disclaimers=rng.random() < 0.4,
            caution_level=round(rng.uniform(0.2, 0.9), 2),
        ),
        signature_phrases=rng.sample(SIGNATURE_POOL, rng.randint(0, 3)),
        uncertainty_behavior=rng.choice(
            ["AdmitIgnorance", "HedgeWithCaveats", "ConfidentGuess", "AskForClarification", "RefuseToAnswer"]
        ),
    )


def train_persona(index: int) -> AiProfile:
    return random_persona(random.Random(f"train-{index}"), f"train-{index}")


def heldout_persona(index: int) -> AiProfile:
    """Indices 0..5 are the built-ins (BUILTIN_IDS order); the rest are random held-out personas."""
    if 0 <= index < len(BUILTIN_IDS):
        return builtin_profiles()[BUILTIN_IDS[index]]
    return random_persona(random.Random(f"heldout-{index}"), f"heldout-{index}")


def train_personas(n: int, start: int = 0) -> list[AiProfile]:
    return [train_persona(i) for i in range(start, start + n)]


def heldout_personas(n: int, start: int = 0) -> list[AiProfile]:
    return [heldout_persona(i) for i in range(start, start + n)]
