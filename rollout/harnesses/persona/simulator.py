"""A seeded behaviour model: how a persona (an AiProfile) answers a query, as text.

The model, stated once so policies and reviewers can judge it:
1. Traits. Each axis drives behaviour through the persona's value on it; an axis the persona lacks is
   neutral (0), except verbosity/formality, which fall back to the response style (2 * style - 1).
2. Per-response expression. A persona is not identical from one answer to the next: in each response every
   trait is expressed at value + N(0, JITTER) (not clipped), independently per axis and per response.
3. Rendering, driven by the expressed traits e:
   - verbosity: the answer has max(2, round(base * (1 + VERBOSITY_SLOPE * e))) body sentences, base by query
     category (coding 7, factual/advice/creative 6, casual 5);
   - formality: a share clip((e + 1) / 2, 0, 1) of body sentences use the formal wording (each body sentence
     exists in a casual and a formal version and carries exactly one register word);
   - every other axis: round(|e| * MARKER_RATE * body sentences) marker sentences of the pole e points to
     (analysis.TRAIT_MARKERS), placed at random among the body sentences. Hedges are the confidence markers,
     questions the autonomy ones, "!" comes with helpfulness and humor.
   Rounding is stochastic (x rounds up with probability frac(x)), so counts are unbiased but a short answer
   carries less evidence than a long one.
4. Style without axes, for realism and as nuisance a reader must see through: signature phrase openings,
   markdown headers, lists in the preferred list style, code blocks for coding queries, emojis, paragraph
   style, a reasoning-style lead-in, the uncertainty behaviour (AskForClarification asks a question too),
   disclaimers, and truncation at max_response_length.
One response therefore gives a noisy reading of each trait (per-response jitter 0.3 plus rounding); several
responses average the jitter away. All randomness comes from the `rng` argument.
"""

from __future__ import annotations

import math
import random
import re

from rollout.harnesses.persona.analysis import TRAIT_MARKERS, analyze_response, convergence
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, HybridReasoning
from rollout.harnesses.persona.profiles import AXES

JITTER = 0.3
MARKER_RATE = 0.6
VERBOSITY_SLOPE = 0.5
MIN_BODY_SENTENCES = 2

QUERIES: dict[str, list[str]] = {
    "coding": ["How do I reverse a list in Python?", "Why does my loop never terminate?",
               "How should I structure a small REST API?", "What's the best way to find a memory leak?",
               "How can I make my unit tests faster?"],
    "factual": ["Why is the sky blue?", "What causes the seasons on Earth?", "How far away is the Sun?",
                "How do rainbows form?", "Why do leaves change colour in autumn?"],
    "advice": ["How can I prepare for a job interview?", "How do I stay focused while working from home?",
               "Any tips for public speaking?", "How do I build a reading habit?", "How should I plan a busy week?"],
    "creative": ["Write an opening line for a story about a lighthouse.", "Suggest a name for a new coffee shop.",
                 "Give me an idea for a short poem about rain.", "Describe a city at dawn in a few sentences.",
                 "Invent a character for a mystery novel."],
    "casual": ["What's a good way to spend a rainy weekend?", "What's your favourite season?",
               "Any ideas for a relaxing evening?", "What should I cook tonight?", "How do you cheer yourself up?"],
}
BASE_SENTENCES: dict[str, int] = {"coding": 7, "factual": 6, "advice": 6, "creative": 6, "casual": 5}
DEFAULT_BASE_SENTENCES = 6

# (casual, formal) versions of each body sentence; each carries exactly one register word.
BODY_SENTENCES: dict[str, list[tuple[str, str]]] = {
    "coding": [
        ("Grab the loop variable and print it on each pass.", "Examine the loop variable by printing it on each pass."),
        ("A tiny test case makes the bug pretty obvious.", "A minimal test case will demonstrate the defect clearly."),
        ("Keep each function small so it does just one job.", "Keep each function small to ensure it performs one task."),
        ("Version control is handy when an edit goes wrong.", "Version control is essential when an edit goes wrong."),
        ("Read the error message before you tweak anything, since it shows the line.",
         "Read the error message prior to editing, since it identifies the line."),
        ("Name things clearly so folks reading the code later can follow along.",
         "Choose descriptive names to facilitate later reading of the code."),
        ("Run the tests after each change so stuff doesn't break silently.",
         "Run the tests after each change; consequently, regressions surface early."),
        ("Profiling first is a cool way to find the slow part.",
         "Profiling first is an appropriate way to identify the slow part."),
    ],
    "factual": [
        ("Sunlight scatters off air molecules and blue light scatters the most, so yeah, the sky looks blue.",
         "Sunlight scatters off air molecules and blue light scatters the most; therefore the sky appears blue."),
        ("The effect is pretty strong at short wavelengths.", "The effect is considerable at short wavelengths."),
        ("Scientists have tested this tons of times.", "Scientists have tested this on numerous occasions."),
        ("The basic idea is kinda simple once you see the numbers.",
         "The principle becomes clear once one can examine the numbers."),
        ("Earth's tilt drives the seasons, not the distance to the sun, which is a cool fact.",
         "Earth's axial tilt, rather than its distance from the sun, is the essential cause of seasons."),
        ("The numbers change a bunch depending on where you measure.",
         "The values vary to a substantial degree with the location of measurement."),
        ("Textbooks cover this stuff in the first chapter.", "Textbooks address this topic in the chapter regarding optics."),
        ("Sunlight takes about eight minutes to reach us, just so you know.",
         "Sunlight requires approximately eight minutes to reach the Earth."),
    ],
    "advice": [
        ("Make a short list of your goals and tweak it each week.",
         "Compose a short list of objectives and subsequently revise it each week."),
        ("Sleep and breaks totally matter more than people expect.",
         "Adequate sleep and regular breaks matter more than people expect."),
        ("Practice out loud a few times, it helps a bunch.", "Rehearse aloud several times prior to the event."),
        ("Keep your workspace chill and free of clutter.", "Maintain an orderly workspace to facilitate focus."),
        ("Set a timer and just start with the smallest task.", "Set a timer and commence with the smallest task."),
        ("Ask a friend for honest feedback, it's super useful.", "Request candid feedback from a colleague, as it is essential input."),
        ("Write stuff down so you don't have to remember it all.", "Record commitments in writing to ensure nothing is forgotten."),
        ("Taking a walk is a handy way to reset.", "A brief walk is an appropriate way to restore concentration."),
    ],
    "creative": [
        ("Start with a lighthouse keeper who's gonna miss the last boat.",
         "Commence with a lighthouse keeper who will miss the final boat."),
        ("Give the coffee shop a cozy name, something cool like Ember and Oak.",
         "Give the coffee shop an inviting name such as Ember and Oak to demonstrate warmth."),
        ("Toss in a bunch of sensory details, like salt in the air.", "Include numerous sensory details, such as salt in the air."),
        ("Keep the first line short and pretty punchy.", "Keep the first line brief yet sufficient to hook the reader."),
        ("Let the ending stay kinda open.", "Allow the ending to remain open; consequently, readers keep thinking."),
        ("Use one odd detail to make the scene totally memorable.", "Use one unusual detail to ensure the scene is memorable."),
        ("Read it out loud and tweak the rhythm.", "Read it aloud and subsequently adjust the rhythm."),
        ("A title with a strong noun is super easy to remember.", "A strong noun in the title will facilitate recall."),
    ],
    "casual": [
        ("Rainy weekends are perfect for a movie marathon, just saying.", "Rainy weekends are appropriate for a film marathon."),
        ("Autumn is pretty nice for long walks.", "Autumn provides sufficient mild weather for long walks."),
        ("Board games with friends are a cool way to spend an evening.",
         "Board games with friends are an adequate way to spend an evening."),
        ("Cooking something new is kinda fun.", "Preparing a new recipe is, additionally, an enjoyable activity."),
        ("A nap can fix a bunch of things.", "A nap can resolve numerous minor troubles."),
        ("Music makes chores go by super fast.", "Music will facilitate the completion of chores."),
        ("Hanging out with a good book is totally underrated.", "Time with a good book is a substantial pleasure."),
        ("Hot chocolate makes everything better, yeah.", "Hot chocolate is, furthermore, a reliable comfort."),
    ],
}

CODE_SNIPPET = "```python\nitems = [3, 2, 5]\nitems.reverse()\nprint(items)\n```"
REASONING_LEADS = {
    "ChainOfThought": "Let's work through it step by step.",
    "DirectWithDepth": "Here is the direct answer first.",
    "AnalyticalCareful": "Let me weigh the options carefully.",
    "CreativeFreeform": "Here is a fresh angle on it.",
    "ToolAugmented": "I would normally check a tool for this.",
}
UNCERTAINTY_LINES = {
    "AdmitIgnorance": "I don't know every detail here.",
    "HedgeWithCaveats": "There are caveats worth keeping in mind.",
    "ConfidentGuess": "My best guess is solid here.",
    "AskForClarification": "Could you share a bit more context?",
    "RefuseToAnswer": "I won't speculate beyond that.",
}
DISCLAIMER = "Please verify important details with a qualified expert."
LIST_PREFIXES = {"Bullets": "* ", "Dashes": "- "}
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def query_category(query: str) -> str | None:
    """The category of one of the simulator's queries, None for any other text."""
    return next((category for category, queries in QUERIES.items() if query in queries), None)


def trait_values(profile: AiProfile) -> dict[str, float]:
    """The value driving each axis's behaviour (rule 1 of the module doc)."""
    traits = {name: 0.0 for name in AXES}
    traits["verbosity"] = 2 * profile.response_style.verbosity - 1
    traits["formality"] = 2 * profile.response_style.formality - 1
    for axis in profile.personality:
        if axis.name in traits:
            traits[axis.name] = axis.value
    return traits


def generate_response(target: AiProfile, rng: random.Random) -> tuple[str, str]:
    """(query, response) for one question put to the target persona."""
    category = rng.choice(list(QUERIES))
    query = rng.choice(QUERIES[category])
    expressed = {name: value + rng.gauss(0.0, JITTER) for name, value in trait_values(target).items()}
    style = target.response_style

    n_body = max(MIN_BODY_SENTENCES, _stochastic_round(BASE_SENTENCES[category] * (1 + VERBOSITY_SLOPE * expressed["verbosity"]), rng))
    bank = BODY_SENTENCES[category][:]
    rng.shuffle(bank)
    formal_share = min(1.0, max(0.0, (expressed["formality"] + 1) / 2))
    formal = set(rng.sample(range(n_body), _stochastic_round(n_body * formal_share, rng)))
    units = [bank[i % len(bank)][i in formal] for i in range(n_body)]

    for name, (negative, positive) in TRAIT_MARKERS.items():
        value = expressed[name]
        for _ in range(_stochastic_round(abs(value) * MARKER_RATE * n_body, rng)):
            units.insert(rng.randint(0, len(units)), rng.choice(positive if value > 0 else negative))

    if rng.random() < 0.5:
        units.insert(0, REASONING_LEADS[_reasoning_name(target, rng)])
    if rng.random() < 0.3:
        units.append(UNCERTAINTY_LINES[target.uncertainty_behavior])
    if target.safety.adds_disclaimers and rng.random() < 0.5:
        units.append(DISCLAIMER)
    if style.uses_emojis and rng.random() < 0.7:
        index = rng.randrange(len(units))
        units[index] += " 🙂"

    as_list = style.uses_markdown and style.preferred_list_style != "None" and n_body >= 4 and rng.random() < 0.6
    blocks = _blocks(units, style.paragraph_style, style.preferred_list_style if as_list else None, rng)
    if category == "coding" and style.uses_code_blocks and rng.random() < 0.8:
        blocks.insert(min(1, len(blocks)), CODE_SNIPPET)
    if style.uses_markdown and rng.random() < 0.3:
        blocks.insert(0, "**Answer**")
    if target.signature_phrases and rng.random() < 0.6:
        opener = rng.choice(target.signature_phrases)
        blocks[0] = (opener if opener[-1] in "!.:,?" else opener + "...") + " " + blocks[0]
    response = "\n\n".join(blocks)
    if style.max_response_length is not None:
        response = _truncate(response, style.max_response_length)
    return query, response


def observe(target: AiProfile, agent: AiProfile, rng: random.Random) -> BehaviorObservation:
    """One BehaviorObservation of the target; similarity_to_target is the agent's current convergence and
    confidence grows with the amount of text (1 - exp(-sentences / 8))."""
    query, response = generate_response(target, rng)
    sentences = len(_SENTENCE_END.findall(response))
    return BehaviorObservation(
        query=query,
        response=response,
        patterns=analyze_response(response).patterns,
        similarity_to_target=round(convergence(agent, target), 6),
        confidence=round(1.0 - math.exp(-sentences / 8), 6),
    )


def _stochastic_round(x: float, rng: random.Random) -> int:
    low = math.floor(x)
    return max(0, low + (rng.random() < x - low))


def _reasoning_name(profile: AiProfile, rng: random.Random) -> str:
    style = profile.reasoning_style
    while isinstance(style, HybridReasoning):
        if not style.Hybrid:
            return "DirectWithDepth"
        style = rng.choice(style.Hybrid)
    return style


def _blocks(units: list[str], paragraph_style: str, list_style: str | None, rng: random.Random) -> list[str]:
    """Sentences grouped into paragraphs by paragraph style; with a list style, a run of 3 or 4 sentences
    becomes one list."""
    list_start, list_length = -1, 0
    if list_style is not None:
        list_length = min(len(units), rng.randint(3, 4))
        list_start = rng.randint(0, len(units) - list_length)
    sizes = {"Short": (1, 2), "Medium": (3, 3), "Long": (len(units), len(units)), "Adaptive": (2, 4)}[paragraph_style]
    blocks, start = [], 0
    while start < len(units):
        if start == list_start:
            items = units[start:start + list_length]
            prefixes = [f"{n}. " for n in range(1, len(items) + 1)] if list_style == "Numbered" else [LIST_PREFIXES[list_style]] * len(items)
            blocks.append("\n".join(p + item for p, item in zip(prefixes, items)))
            start += list_length
            continue
        end = start + rng.randint(*sizes)
        if start < list_start < end:
            end = list_start
        blocks.append(" ".join(units[start:end]))
        start = end
    return blocks


def _truncate(response: str, limit: int) -> str:
    if len(response) <= limit:
        return response
    cut = max(response.rfind(end, 0, limit) for end in ".!?")
    return response[: cut + 1] if cut >= 0 else response[:limit]
