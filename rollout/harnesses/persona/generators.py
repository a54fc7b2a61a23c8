"""A family of behaviour generators: five independent ways a RustyWorm-style client could write a target
persona's answers, to judge persona policies leave-one-generator-out.

Why: a policy fitted to one behaviour model (rollout.harnesses.persona.simulator) fails on a client that
writes text differently. Each generator here has its own lexicon (hedges, register, tone markers), its own
sentence counts and lengths, its own noise, its own set of axes that leave a trace (and how strongly), its
own `patterns` analyzer and its own similarity measure. None imports the simulator's or the analyzer's word
lists, and none shares code with another: what they share is only the client's contract, a
BehaviorObservation (query, response, patterns in RustyWorm's "Name:value" form, similarity_to_target,
confidence).

Personas of the family (`family_persona`): 4 to 11 axes drawn from a pool wider than the harness's (names
such as warmth, curiosity, zest that no policy was written for), target values anywhere in [-1, 1], and a
starting profile that is not neutral: near the target on some axes, off on others, missing some target axes
and carrying axes the target lacks. Seeds are namespaced by purpose ("fit" / "judge") and generator, so
personas used to fit a policy are never the ones it is judged on.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Protocol

from rollout.harnesses.persona.analysis import convergence
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityAxis

# Axis names a family persona may have: the harness's eleven and as many it never names.
AXIS_POOL: dict[str, tuple[str, str]] = {
    "helpfulness": ("unhelpful", "helpful"), "creativity": ("conventional", "creative"),
    "confidence": ("uncertain", "confident"), "verbosity": ("terse", "verbose"), "formality": ("casual", "formal"),
    "humor": ("serious", "humorous"), "autonomy": ("passive", "proactive"), "honesty": ("evasive", "candid"),
    "depth": ("shallow", "deep"), "adaptability": ("rigid", "adaptive"), "metamorphic": ("fixed", "shapeshifting"),
    "enthusiasm": ("flat", "enthusiastic"), "warmth": ("cold", "warm"), "empathy": ("detached", "empathetic"),
    "curiosity": ("incurious", "curious"), "playfulness": ("sober", "playful"), "directness": ("roundabout", "direct"),
    "caution": ("reckless", "cautious"), "optimism": ("pessimistic", "optimistic"), "politeness": ("blunt", "polite"),
    "assertiveness": ("meek", "assertive"), "skepticism": ("credulous", "skeptical"), "precision": ("vague", "precise"),
    "patience": ("impatient", "patient"), "zest": ("dull", "zesty"), "whimsy": ("literal", "whimsical"),
}
MIN_AXES, MAX_AXES = 4, 11
START_MAX_CONVERGENCE = 0.88  # a client starts evolving a profile that is not yet converged

QUERIES = [
    "How do I reverse a list in Python?", "Why is the sky blue?", "How can I prepare for a job interview?",
    "Suggest a name for a bakery.", "What should I cook tonight?", "How do vaccines work?",
    "Explain recursion to a beginner.", "How do I keep houseplants alive?", "What is a good first programming language?",
    "How can I sleep better?", "Why do cats purr?", "How do I write a cover letter?",
]


def _pool_axis(name: str, value: float) -> PersonalityAxis:
    negative, positive = AXIS_POOL[name]
    return PersonalityAxis(name=name, value=max(-1.0, min(1.0, value)), negative_pole=negative, positive_pole=positive)


@dataclass
class FamilyPersona:
    """A hidden target and the profile a client starts evolving toward it."""

    target: AiProfile
    start: AiProfile


def family_persona(purpose: str, generator: str, index: int) -> FamilyPersona:
    """Persona `index` for `purpose` ("fit" or "judge") under `generator`; everything from one seeded rng."""
    rng = random.Random(f"{purpose}-{generator}-{index}")
    names = rng.sample(list(AXIS_POOL), rng.randint(MIN_AXES, MAX_AXES))
    target = AiProfile(
        id=f"{purpose}-{generator}-{index}-target", display_name="Target", provider="family",
        personality=[_pool_axis(name, round(rng.uniform(-1.0, 1.0), 2)) for name in names],
    )
    target.response_style.verbosity = round((target.personality_value("verbosity") or rng.uniform(-0.6, 0.6)) / 2 + 0.5, 2)
    target.response_style.formality = round((target.personality_value("formality") or rng.uniform(-0.6, 0.6)) / 2 + 0.5, 2)
    while True:
        axes = []
        for axis in target.personality:
            roll = rng.random()
            if roll < 0.12:
                continue  # the start lacks this target axis (counts as 0)
            off = rng.uniform(-1.0, 1.0) if roll < 0.3 else axis.value + rng.gauss(0.0, 0.4)
            axes.append(_pool_axis(axis.name, round(off, 2)))
        extra = [name for name in AXIS_POOL if name not in names]
        axes += [_pool_axis(name, round(rng.uniform(-1, 1), 2)) for name in rng.sample(extra, rng.randint(0, 3))]
        rng.shuffle(axes)
        start = AiProfile(id=f"{purpose}-{generator}-{index}", display_name="Evolving profile", personality=axes)
        if convergence(start, target) < START_MAX_CONVERGENCE:
            return FamilyPersona(target, start)


def _value(profile: AiProfile, names: tuple[str, ...]) -> float | None:
    """The first of `names` the profile has (a generator's own reading of which axes mean one thing)."""
    return next((v for v in (profile.personality_value(n) for n in names) if v is not None), None)


def _count(x: float, rng: random.Random) -> int:
    """x rounded up with probability frac(x): unbiased integer counts."""
    return max(0, int(math.floor(x + rng.random())))


class Generator(Protocol):
    name: str

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation: ...


# --- 1. Plainspoken: marker sentences between plain body sentences ----------------------------------------


class PlainspokenGenerator:
    """Body sentences from a fixed bank; each traced axis adds whole marker sentences, |value| * 1.6 of them on
    average; jitter 0.25 per response. Patterns as RustyWorm writes them (Hedging = hits among its own 10
    hedges / 10, Tone = exclamations / 5). Similarity: mean over target axes of 1 - |d| / 2."""

    name = "plainspoken"
    BODY = [
        "Start with the simplest version that works.", "Check the result against a small example.",
        "Write down what you expect before you try it.", "Most people find the second step the hardest.",
        "Small changes make problems easier to spot.", "It helps to compare two options side by side.",
        "The details depend on what you already have.", "Give it a few days and see how it goes.",
    ]
    TRACES: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
        ("confidence", "assertiveness"): (
            ["I'm not entirely sure about this.", "This is only a guess, to be honest.", "I suspect it varies, though I could be wrong."],
            ["I'm certain this works.", "There is no doubt about it.", "This is absolutely the right call."]),
        ("enthusiasm", "zest", "optimism"): (
            ["It is what it is.", "Nothing special, really.", "That's unfortunately the usual outcome."],
            ["This is exciting!", "You're going to love it!", "What a great thing to try!"]),
        ("humor", "playfulness", "whimsy"): (
            ["This is a serious matter.", "Let's keep this strictly factual."],
            ["Ha, classic problem!", "Spoiler: the computer always wins.", "Just kidding, mostly."]),
        ("curiosity", "autonomy"): (
            ["I'll leave that to you.", "That's all I needed to know."],
            ["What have you tried so far?", "Would you like me to look into the next step?", "Have you considered the other option?"]),
        ("warmth", "empathy", "politeness"): (
            ["Whatever.", "That's your problem to solve."],
            ["I understand how frustrating that can be.", "Thank you for asking, and take care.", "You're doing great."]),
        ("helpfulness", "patience"): (
            ["You can work out the rest on your own.", "Look it up if you need more."],
            ["Here's a quick example to follow.", "Happy to help with the rest too."]),
        ("creativity",): (
            ["The standard approach is fine.", "Nothing fancy needed."],
            ["Imagine it as a puzzle with one missing piece.", "Think of it like tuning a guitar."]),
        ("honesty",): (["Just trust me here.", "Everyone agrees, no question."],
                       ["To be honest, I can't check every detail.", "Frankly, there are other views."]),
        ("caution", "skepticism"): (["Don't worry about the risks.", "Just go for it."],
                                    ["Be careful with this step.", "Double-check before you rely on it."]),
        ("depth", "precision"): (["That's the gist of it.", "We can skip the deeper part."],
                                 ["The underlying reason is how the pieces interact.", "Specifically, the second part matters most."]),
    }
    HEDGES = ["not entirely sure", "only a guess", "i suspect", "could be wrong", "maybe", "perhaps",
              "probably", "possibly", "might", "seems"]

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        query = rng.choice(QUERIES)
        verbosity = (_value(target, ("verbosity", "depth")) or 0.0) + rng.gauss(0, 0.25)
        formality = (_value(target, ("formality",)) or 0.0) + rng.gauss(0, 0.25)
        body = rng.sample(self.BODY, min(len(self.BODY), max(2, _count(4.5 + 3.0 * verbosity, rng))))
        if formality > 0.3:
            body = [s.replace("It helps", "It is advisable").replace("see how", "evaluate how") for s in body]
        elif formality < -0.3:
            body = [s.replace("Start", "Just start").replace("people", "folks") + (" lol" if rng.random() < 0.2 else "") for s in body]
        sentences = list(body)
        for names, (negative, positive) in self.TRACES.items():
            value = _value(target, names)
            if value is None:
                continue
            expressed = value + rng.gauss(0, 0.25)
            for _ in range(_count(abs(expressed) * 1.6, rng)):
                sentences.insert(rng.randint(0, len(sentences)), rng.choice(positive if expressed > 0 else negative))
        response = " ".join(sentences)
        lowered = response.lower()
        hedging = sum(h in lowered for h in self.HEDGES) / len(self.HEDGES)
        patterns = [f"Hedging:{hedging:.2f}", f"Tone:{min(1.0, response.count('!') / 5):.1f}",
                    f"Length:{len(response)}", f"Questions:{response.count('?')}"]
        return BehaviorObservation(
            query=query, response=response, patterns=patterns,
            similarity_to_target=round(convergence(current, target), 6),
            confidence=round(1 - math.exp(-len(sentences) / 8), 6),
        )


# --- 2. Adverbial: every sentence carries the traits in its words, not in extra sentences --------------------


class AdverbialGenerator:
    """A fixed number of sentences (4-6); verbosity adds clauses to each, formality picks latinate or phrasal
    wording, confidence inserts sentence adverbs, enthusiasm turns full stops into "!", politeness adds
    "please"/"kindly", directness drops qualifiers. Other axes leave no trace. Patterns use lower-case keys
    with a space ("hedging: 0.25") and omit Tone. Similarity: 1 - mean |d| over target axes, at least 0."""

    name = "adverbial"
    SUBJECTS = ["the first step", "your plan", "this approach", "the answer", "the usual method", "a quick test"]
    VERBS_FORMAL = ["facilitates", "necessitates", "constitutes", "demonstrates", "warrants"]
    VERBS_CASUAL = ["helps out with", "needs", "is basically", "shows off", "calls for"]
    OBJECTS = ["a careful review", "some practice", "a second look", "a clear outline", "patience"]
    CLAUSES = [", which matters more than it seems", ", especially at the start", ", and it pays off later",
               ", given the usual constraints", ", as most guides point out"]
    DOUBT = ["presumably", "conceivably", "possibly", "in all likelihood", "roughly speaking"]
    SURE = ["undoubtedly", "definitely", "certainly", "without fail", "plainly"]
    QUALIFIERS = ["in a sense", "more or less", "to some extent", "sort of"]
    # axis names -> (adverbs of the negative pole, of the positive pole), one inserted per sentence at random
    ADVERBS: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
        ("humor", "playfulness"): (["solemnly", "gravely"], ["amusingly", "hilariously"]),
        ("caution", "skepticism"): (["recklessly", "blindly"], ["carefully", "warily"]),
        ("creativity", "whimsy"): (["conventionally", "predictably"], ["imaginatively", "inventively"]),
        ("empathy", "warmth"): (["coldly", "curtly"], ["gently", "kindly"]),
        ("honesty",): (["supposedly", "allegedly"], ["frankly", "candidly"]),
    }

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        query = rng.choice(QUERIES)
        trait = {key: (_value(target, names) or 0.0) + rng.gauss(0, 0.3) for key, names in {
            "verbosity": ("verbosity",), "formality": ("formality", "precision"), "confidence": ("confidence", "assertiveness"),
            "enthusiasm": ("enthusiasm", "optimism"), "politeness": ("politeness", "warmth"), "directness": ("directness",),
        }.items()}
        sentences = []
        for _ in range(rng.randint(4, 6)):
            verbs = self.VERBS_FORMAL if rng.random() < (trait["formality"] + 1) / 2 else self.VERBS_CASUAL
            words = [rng.choice(self.SUBJECTS).capitalize(), rng.choice(verbs), rng.choice(self.OBJECTS)]
            if rng.random() < abs(trait["confidence"]) * 0.7:
                words.insert(1, rng.choice(self.SURE if trait["confidence"] > 0 else self.DOUBT))
            if rng.random() < max(0.0, -trait["directness"]) * 0.8:
                words.append(rng.choice(self.QUALIFIERS))
            for names, (negative, positive) in self.ADVERBS.items():
                value = _value(target, names)
                if value is not None and rng.random() < abs(value + rng.gauss(0, 0.3)) * 0.35:
                    words.insert(1, rng.choice(positive if value > 0 else negative))
            if trait["politeness"] > 0 and rng.random() < trait["politeness"] * 0.5:
                words.insert(0, rng.choice(["Please note:", "Kindly remember,"]))
            if rng.random() < max(0.0, (_value(target, ("curiosity", "autonomy")) or 0.0)) * 0.4:
                words.append("- does that match what you need?")
            text = " ".join(words) + "".join(rng.sample(self.CLAUSES, min(len(self.CLAUSES), _count(1.2 * (trait["verbosity"] + 1), rng))))
            end = "!" if rng.random() < max(0.0, trait["enthusiasm"]) * 0.6 else "."
            sentences.append(text + end)
        response = " ".join(sentences)
        doubt = sum(response.count(w) for w in self.DOUBT)
        patterns = [f"hedging: {doubt / max(1, len(sentences)):.2f}", f"length: {len(response)}",
                    f"questions: {response.count('?')}", f"Sentences:{len(sentences)}"]
        error = [abs((current.personality_value(a.name) or 0.0) - a.value) for a in target.personality]
        return BehaviorObservation(
            query=query, response=response, patterns=patterns,
            similarity_to_target=round(max(0.0, 1 - sum(error) / len(error)), 6), confidence=0.6,
        )


# --- 3. Chat: short lines, emojis, slang -------------------------------------------------------------------


class ChatGenerator:
    """Chat-style replies: 1-6 short lines, lower case and slang when casual; emojis and "!!" for enthusiasm,
    "lol"/"haha" for humor, "idk"/"maybe?" for low confidence, "<3" for warmth, "wdyt?" for curiosity;
    verbosity sets the number of lines. Strong noise: slang and emojis appear at random too. No Hedging
    pattern; reports Emoji and Length only. Similarity: mean over target axes of 1 - |d| / 2."""

    name = "chat"
    LINES = ["ok so the trick is to start small", "try it on one example first", "then check what breaks",
             "tbh most of it is practice", "dont overthink it", "it gets easier after a week",
             "you can always undo it", "write it down somewhere"]
    TRACES: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
        ("enthusiasm", "zest", "optimism"): (["meh", "eh whatever"], ["omg yes!!", "love this 🎉", "so cool!! 😄"]),
        ("humor", "playfulness", "whimsy"): (["no jokes, srsly", "being serious here"], ["lol", "haha classic 😂", "jk jk"]),
        ("confidence", "assertiveness", "directness"): (["idk tbh", "maybe? not sure", "could be wrong lol"], ["trust me on this", "100% works", "for sure"]),
        ("warmth", "empathy"): (["k", "ur call"], ["aw you got this <3", "sending hugs", "that sounds rough, sorry"]),
        ("curiosity", "autonomy", "helpfulness"): (["thats it", "done"], ["wdyt?", "want me to check more?", "what did u try?"]),
        ("caution",): (["yolo just send it", "nah its fine dont worry"], ["careful tho", "maybe back it up first"]),
        ("honesty",): (["trust me bro", "everyone knows that"], ["ngl i might be wrong", "honestly not 100% on this"]),
        ("creativity", "whimsy"): (["just do the usual", "basic stuff"], ["imagine it like a video game level", "what if u made it a song"]),
        ("skepticism",): (["yeah def true", "believe it"], ["kinda sus tho", "idk if thats legit"]),
    }

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        query = rng.choice(QUERIES)
        verbosity = (_value(target, ("verbosity", "depth", "patience")) or 0.0) + rng.gauss(0, 0.35)
        formality = (_value(target, ("formality", "politeness")) or 0.0) + rng.gauss(0, 0.35)
        lines = rng.sample(self.LINES, max(1, min(len(self.LINES), _count(3.0 + 2.5 * verbosity, rng))))
        for names, (negative, positive) in self.TRACES.items():
            value = _value(target, names)
            if value is None:
                continue
            expressed = value + rng.gauss(0, 0.35)
            for _ in range(_count(abs(expressed) * 1.3, rng)):
                lines.insert(rng.randint(0, len(lines)), rng.choice(positive if expressed > 0 else negative))
        if rng.random() < 0.3:
            lines.append(rng.choice(["👍", "ngl", "fr"]))
        if formality > 0.2:
            lines = [line[0].upper() + line[1:].replace("dont", "do not").replace("tbh", "honestly").replace("u ", "you ")
                     + ("." if line[-1].isalpha() else "") for line in lines]
        response = "\n".join(lines)
        emojis = sum(ch in response for ch in "🎉😄😂👍")
        patterns = [f"Emoji:{emojis}", f"Length:{len(response)}"]
        return BehaviorObservation(
            query=query, response=response, patterns=patterns,
            similarity_to_target=round(convergence(current, target), 6),
            confidence=round(min(1.0, len(lines) / 6), 6),
        )


# --- 4. Essayist: long paragraphs, many weak traces, confusers ---------------------------------------------


class EssayistGenerator:
    """Two to five paragraphs of formal-ish prose; many axes leave weak traces (a trait phrase in a share
    |value| * 0.35 of sentences), and a tenth of sentences carry a phrase of a random pole of a random axis
    (confusers the target did not mean). Verbosity sets the paragraph count and sentences per paragraph.
    Patterns: Length, Formality (its own register share), Paragraphs, an unknown "Cadence". Similarity:
    1 - RMS(d) / 2 over target axes."""

    name = "essayist"
    PLAIN = ["The question has a longer history than it first appears.", "Several factors contribute to the outcome.",
             "A practical answer begins with the constraints.", "Experience suggests a gradual approach.",
             "The evidence points in a fairly consistent direction.", "Each option carries its own trade-offs."]
    TRACES: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
        ("depth", "precision"): (["Put simply, that's the gist.", "No need for more detail."],
                                 ["Fundamentally, the root cause lies in how the parts interact.", "To be precise, three mechanisms are involved."]),
        ("creativity", "whimsy"): (["The standard method is adequate.", "Convention serves well here."],
                                   ["Picture it as a garden that rearranges itself overnight.", "It is rather like a jazz band improvising."]),
        ("caution", "skepticism"): (["Just go for it.", "Don't worry about the risks."],
                                    ["Be careful: the risks are easy to underestimate.", "I would treat that claim with some doubt."]),
        ("honesty",): (["Everyone knows this is true.", "Trust me, it's settled."],
                       ["Frankly, I cannot verify every part of this.", "Candidly, the data are mixed."]),
        ("optimism", "enthusiasm"): (["Sadly, it rarely works out.", "The outlook is bleak."],
                                     ["Happily, the outlook is bright.", "Things tend to improve with practice."]),
        ("helpfulness", "patience"): (["Look it up yourself.", "That is all I will say."],
                                      ["Here is a step-by-step outline you can follow.", "Feel free to ask again if anything is unclear."]),
        ("formality", "politeness"): (["Anyway, you get the idea.", "Yeah, that's pretty much it."],
                                      ["One might therefore conclude accordingly.", "It is, moreover, worth noting the implications."]),
        ("adaptability", "metamorphic"): (["There is one correct way only.", "Stick to the plan exactly."],
                                          ["Adjust this to your circumstances.", "Another approach would work equally well."]),
        ("confidence", "assertiveness"): (["It may be that other factors dominate.", "One cannot be entirely sure of this."],
                                          ["It is certain that this holds.", "Beyond doubt, this is the decisive factor."]),
        ("empathy", "warmth"): (["Feelings are beside the point.", "Sentiment has no bearing here."],
                                ["One sympathises with the difficulty.", "It is understandable to feel uneasy about it."]),
        ("curiosity", "autonomy"): (["The matter need not be pursued.", "The reader may decide."],
                                    ["One wonders what else might follow?", "Might it be worth testing further?"]),
        ("humor",): (["The subject admits no levity.", "This is a grave matter."],
                     ["Wryly, one notes that the textbooks disagree.", "Amusingly, the simplest answer is often right."]),
    }

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        query = rng.choice(QUERIES)
        verbosity = (_value(target, ("verbosity",)) or 0.0) + rng.gauss(0, 0.3)
        traits = [(names, value + rng.gauss(0, 0.3), banks) for names, banks in self.TRACES.items()
                  if (value := _value(target, names)) is not None]
        paragraphs = []
        for _ in range(max(1, _count(3 + 1.5 * verbosity, rng))):
            sentences = []
            for _ in range(max(2, _count(4 + 1.5 * verbosity, rng))):
                sentence = rng.choice(self.PLAIN)
                for _names, expressed, (negative, positive) in traits:
                    if rng.random() < abs(expressed) * 0.35:
                        sentence += " " + rng.choice(positive if expressed > 0 else negative)
                if rng.random() < 0.1:
                    negative, positive = rng.choice(list(self.TRACES.values()))
                    sentence += " " + rng.choice(rng.choice((negative, positive)))
                sentences.append(sentence)
            paragraphs.append(" ".join(sentences))
        response = "\n\n".join(paragraphs)
        words = re.findall(r"[a-z]+", response.lower())
        formal = sum(w in {"moreover", "therefore", "accordingly", "fundamentally", "precise"} for w in words)
        casual = sum(w in {"yeah", "anyway", "pretty", "gist"} for w in words)
        patterns = [f"Length:{len(response)}", f"Formality:{formal / max(1, formal + casual):.2f}",
                    f"Paragraphs:{len(paragraphs)}", f"Cadence:{rng.random():.2f}"]
        rms = math.sqrt(sum(((current.personality_value(a.name) or 0.0) - a.value) ** 2 for a in target.personality)
                        / len(target.personality))
        return BehaviorObservation(
            query=query, response=response, patterns=patterns,
            similarity_to_target=round(1 - rms / 2, 6), confidence=0.8,
        )


# --- 5. Narrator: the target describes its own manner, in degree words ---------------------------------------


class NarratorGenerator:
    """The answer (2-8 short sentences by verbosity) closes with the target describing one to three of its
    traits in its own words: "I'd call myself fairly cautious." with a degree word for |value| (slightly,
    fairly, very, extremely) and the axis's own pole name, or "not especially X" near zero. Every axis can
    leave this trace, under any name, since the target names its poles. Patterns: RustyWorm's "Opens with"
    lines only, or none. Similarity: mean over target axes of 1 - |d| / 2."""

    name = "narrator"
    ANSWER = ["The short answer is to begin with one small step.", "A reliable guide will cover the basics.",
              "Practice matters more than theory here.", "Keep notes as you go.", "Ask someone who has done it.",
              "Check your progress after a week.", "Expect a few false starts.", "Simple tools are usually enough."]
    FRAMES = ["I'd call myself {degree} {pole}.", "People tell me I'm {degree} {pole}.",
              "By nature I am {degree} {pole}.", "You could say I'm {degree} {pole}."]

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        query = rng.choice(QUERIES)
        verbosity = (_value(target, ("verbosity",)) or 0.0) + rng.gauss(0, 0.3)
        sentences = rng.sample(self.ANSWER, max(2, min(len(self.ANSWER), _count(5 + 3 * verbosity, rng))))
        for axis in rng.sample(target.personality, min(len(target.personality), rng.randint(1, 3))):
            expressed = max(-1.0, min(1.0, axis.value + rng.gauss(0, 0.15)))
            pole = axis.positive_pole if expressed > 0 else axis.negative_pole
            size = abs(expressed)
            if size < 0.15:
                sentences.append(f"I'm not especially {axis.positive_pole} or {axis.negative_pole}.")
                continue
            degree = "slightly" if size < 0.4 else "fairly" if size < 0.65 else "very" if size < 0.85 else "extremely"
            sentences.append(rng.choice(self.FRAMES).format(degree=degree, pole=pole))
        response = " ".join(sentences)
        patterns = [f"Opens with '{response.split()[0]}'"] if rng.random() < 0.5 else []
        return BehaviorObservation(
            query=query, response=response, patterns=patterns,
            similarity_to_target=round(convergence(current, target), 6),
            confidence=round(1 - math.exp(-len(sentences) / 6), 6),
        )


GENERATORS: dict[str, Generator] = {
    g.name: g for g in (PlainspokenGenerator(), AdverbialGenerator(), ChatGenerator(), EssayistGenerator(), NarratorGenerator())
}

__all__ = ["AXIS_POOL", "FamilyPersona", "GENERATORS", "Generator", "family_persona"]
