"""Reading traits from any English response: wide cue lexicons, axis-name matching, patterns parsing.

Why a module of its own: the evidence policy must work on clients whose behaviour generator it has never
seen, so nothing here comes from a generator of this project (the simulator's marker sentences, the
analyzer's 12 hedges). The cue lists are broad English: hedges, boosters, register words, tone and emotion
words, self-descriptions in degree words. A channel is one trait dimension text can show; an axis of a
profile reads a channel when its name (or its pole names) is one of the channel's names, in any spelling
that shares a stem ("enthusiastic" reads "enthusiasm"). An axis no channel names is never read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from rollout.harnesses.persona.models import PersonalityAxis


@dataclass(frozen=True)
class Channel:
    """One trait dimension: the axis names that mean it (+1) or its opposite (-1), and cue phrases for each pole."""

    names: tuple[str, ...]
    opposite_names: tuple[str, ...]
    negative: tuple[str, ...]
    positive: tuple[str, ...]


CHANNELS: dict[str, Channel] = {
    "certainty": Channel(
        ("confidence", "confident", "assertiveness", "assertive", "certainty", "certain", "decisiveness", "conviction",
         "boldness", "self-assurance", "sure"),
        ("uncertainty", "uncertain", "hesitancy", "hesitant", "tentativeness", "timidity", "meek", "humility", "doubtfulness"),
        ("maybe", "perhaps", "possibly", "probably", "presumably", "conceivably", "might", "could be", "i think",
         "i believe", "i suspect", "i guess", "not sure", "not entirely sure", "unsure", "uncertain", "it seems",
         "seems", "apparently", "arguably", "in all likelihood", "likely", "roughly", "idk", "a guess", "could be wrong",
         "hard to say", "it depends", "i'm not certain", "not certain", "if i recall", "as far as i know", "i may be"),
        ("definitely", "certainly", "undoubtedly", "clearly", "absolutely", "surely", "no doubt", "without a doubt",
         "for sure", "100%", "guaranteed", "i'm certain", "i am certain", "i'm confident", "i am confident",
         "obviously", "without question", "rest assured", "plainly", "without fail", "no question", "trust me",
         "i know", "for certain", "always works", "works every time"),
    ),
    "enthusiasm": Channel(
        ("enthusiasm", "enthusiastic", "zest", "zesty", "energy", "energetic", "excitement", "excitable", "exuberance",
         "passion", "cheerfulness", "cheerful", "liveliness", "lively", "vivacity", "pep", "bubbliness"),
        ("apathy", "apathetic", "flatness", "dullness", "boredom", "indifference", "reserve", "reserved"),
        ("meh", "whatever", "it is what it is", "nothing special", "eh", "i suppose", "if you must", "fine.", "okay.",
         "not much to say", "boring", "unremarkable"),
        ("!", "exciting", "love", "awesome", "amazing", "fantastic", "wonderful", "great", "yay", "omg", "so cool",
         "brilliant", "thrilled", "delighted", "can't wait", "woo", "🎉", "😄", "😃", "🤩", "🔥", "incredible"),
    ),
    "optimism": Channel(
        ("optimism", "optimistic", "positivity", "positive", "hopefulness", "hopeful", "sunniness"),
        ("pessimism", "pessimistic", "negativity", "cynicism", "gloom", "gloominess"),
        ("sadly", "unfortunately", "bleak", "rarely works", "doomed", "hopeless", "worse", "fail", "grim",
         "won't work", "pointless"),
        ("hopefully", "bright", "happily", "good news", "improve", "looking up", "will work out", "promising",
         "fortunately", "better"),
    ),
    "humor": Channel(
        ("humor", "humour", "humorous", "playfulness", "playful", "wit", "witty", "whimsy", "whimsical", "silliness",
         "silly", "funny", "levity", "jokiness", "jocularity", "mischief"),
        ("seriousness", "serious", "solemnity", "gravity", "sobriety", "sober", "literal"),
        ("in all seriousness", "seriously", "serious", "strictly", "no jokes", "no joke", "srsly", "solemn",
         "not a laughing matter", "strictly factual"),
        ("lol", "haha", "ha,", "hah", "jk", "just kidding", "kidding", "pun", "joke", "spoiler:", "😂", "🤣", "funny",
         "lmao", "hehe", "😜", "classic", "wink"),
    ),
    "warmth": Channel(
        ("warmth", "warm", "empathy", "empathetic", "empathic", "compassion", "compassionate", "kindness", "kind",
         "friendliness", "friendly", "caring", "supportiveness", "supportive", "gentleness", "affection", "sympathy"),
        ("coldness", "cold", "detachment", "detached", "aloofness", "aloof", "callousness", "harshness", "indifference"),
        ("whatever", "your problem", "ur call", "deal with it", "not my concern", "tough luck", "k\n", "k.",
         "figure it out"),
        ("i understand", "sorry", "sounds rough", "sounds tough", "sounds hard", "frustrating", "you've got this",
         "you got this", "take care", "hugs", "<3", "you're doing great", "glad", "i hear you", "that must be",
         "don't worry", "❤", "🤗", "it's okay", "be kind to yourself"),
    ),
    "politeness": Channel(
        ("politeness", "polite", "courtesy", "courteous", "tact", "tactful", "respectfulness", "respectful", "civility",
         "manners", "diplomacy", "diplomatic"),
        ("rudeness", "rude", "bluntness", "blunt", "impoliteness", "brusqueness", "brusque"),
        ("whatever", "deal with it", "look it up yourself", "your problem", "obviously you", "duh", "just do it"),
        ("please", "kindly", "thank you", "thanks", "appreciate", "if you don't mind", "would you", "with respect",
         "my pleasure", "you're welcome", "pardon"),
    ),
    "inquiry": Channel(
        ("curiosity", "curious", "inquisitiveness", "inquisitive", "autonomy", "autonomous", "proactivity",
         "proactive", "proactiveness", "initiative", "engagement", "interest", "agency"),
        ("passivity", "passive", "incuriosity", "incurious", "reactivity", "deference", "deferential", "apathy"),
        ("i'll leave that to you", "up to you", "that's all i needed", "that's it", "done.", "done\n", "i'll wait",
         "tell me how you want", "your call", "your decision"),
        ("?", "would you like", "want me to", "shall i", "should i", "let me know", "have you tried", "what have you",
         "have you considered", "i wonder", "curious", "what if", "wdyt", "i'll go ahead", "let me also"),
    ),
    "helpfulness": Channel(
        ("helpfulness", "helpful", "supportiveness", "generosity", "generous", "service", "usefulness", "cooperativeness",
         "cooperative", "accommodation", "accommodating"),
        ("unhelpfulness", "unhelpful", "stinginess", "obstruction", "uncooperative"),
        ("look it up", "figure it out", "that is all", "that's all i'll say", "elsewhere", "yourself", "not my job",
         "can't help", "won't help"),
        ("here's how", "here is how", "step-by-step", "step by step", "feel free", "happy to help", "let me know",
         "tip", "for example", "want me to", "here is a", "here's a", "i can help", "hope this helps", "outline"),
    ),
    "creativity": Channel(
        ("creativity", "creative", "imagination", "imaginative", "originality", "original", "inventiveness",
         "inventive", "whimsy", "whimsical", "artistry", "novelty", "innovation", "innovative"),
        ("conventionality", "conventional", "rigidity", "literalness", "literal", "conformity", "orthodoxy"),
        ("standard", "conventional", "textbook", "convention", "by the book", "usual method", "the usual way",
         "standard procedure", "tried and true", "nothing fancy", "adequate"),
        ("imagine", "picture", "like a", "as if", "rather like", "metaphor", "think of it as", "dream", "invent",
         "garden", "jazz", "orchestra", "a fresh angle", "what if"),
    ),
    "depth": Channel(
        ("depth", "deep", "thoroughness", "thorough", "analytical", "analysis", "rigor", "rigour", "rigorous",
         "precision", "precise", "detail", "detailed", "insight", "insightful", "exactness"),
        ("shallowness", "shallow", "superficiality", "superficial", "vagueness", "vague", "sloppiness", "simplicity"),
        ("put simply", "in short", "the gist", "no need for more", "surface", "that's it", "roughly", "more or less",
         "basically", "whatever works", "tl;dr"),
        ("fundamentally", "root cause", "underlying", "because", "mechanism", "to be precise", "in detail",
         "specifically", "one level deeper", "precisely", "in particular", "the reason", "therefore"),
    ),
    "caution": Channel(
        ("caution", "cautious", "carefulness", "careful", "prudence", "prudent", "safety", "safe", "wariness", "wary",
         "risk-aversion", "risk_aversion", "conscientiousness", "vigilance"),
        ("recklessness", "reckless", "boldness", "daring", "impulsivity", "impulsive", "risk-taking", "risk_tolerance"),
        ("just go for it", "don't worry about", "no worries", "whatever happens", "yolo", "just do it", "who cares",
         "ignore the risk"),
        ("careful", "risk", "caution", "warning", "be aware", "double-check", "double check", "safely", "beware",
         "watch out", "back up", "backup", "make sure", "verify"),
    ),
    "skepticism": Channel(
        ("skepticism", "scepticism", "skeptical", "sceptical", "doubt", "critical", "criticality", "incredulity"),
        ("credulity", "credulous", "gullibility", "gullible", "trust", "trusting", "naivety"),
        ("everyone knows", "settled", "believe it", "no question", "of course it's true", "trust me"),
        ("doubt", "questionable", "skeptical", "sceptical", "not convinced", "evidence", "claim", "unproven",
         "take with a grain of salt", "be wary"),
    ),
    "honesty": Channel(
        ("honesty", "honest", "candor", "candour", "candid", "transparency", "transparent", "sincerity", "sincere",
         "truthfulness", "truthful", "integrity", "frankness", "frank"),
        ("deception", "deceptive", "evasiveness", "evasive", "dishonesty", "dishonest", "secrecy", "guile"),
        ("trust me", "everyone knows", "take my word", "no question", "settled", "believe me", "don't ask"),
        ("frankly", "candidly", "to be honest", "honestly", "transparent", "cannot verify", "can't verify",
         "in fairness", "my limits", "i might be wrong", "to be clear", "i don't know"),
    ),
    "adaptability": Channel(
        ("adaptability", "adaptable", "adaptive", "flexibility", "flexible", "metamorphic", "versatility", "versatile",
         "openness", "open-mindedness", "malleability", "shapeshifting", "fluidity"),
        ("rigidity", "rigid", "stubbornness", "stubborn", "inflexibility", "inflexible", "fixed", "dogmatism"),
        ("only one", "exactly as", "stick to", "don't deviate", "one correct way", "the only way", "no exceptions",
         "same style as always", "my usual"),
        ("adjust", "depending on", "another approach", "works too", "equally well", "change course", "flexible",
         "adapt", "if you prefer", "tailor", "switching", "shifting", "becoming"),
    ),
    "directness": Channel(
        ("directness", "direct", "straightforwardness", "straightforward", "bluntness", "blunt", "conciseness", "concise",
         "candour"),
        ("indirectness", "indirect", "roundabout", "circumlocution", "vagueness", "evasiveness"),
        ("in a sense", "more or less", "to some extent", "sort of", "kind of", "in a way", "somewhat", "arguably"),
        ("simply", "bottom line", "directly", "straight", "in short", "the answer is", "do this", "plainly"),
    ),
    "formality": Channel(
        ("formality", "formal", "professionalism", "professional", "propriety", "decorum", "register", "sophistication"),
        ("casualness", "casual", "informality", "informal", "slanginess", "laid-back", "relaxedness"),
        ("lol", "tbh", "gonna", "wanna", "kinda", "yeah", "ok ", "okay", "hey", "stuff", "pretty", "folks", "dont",
         " u ", " ur ", "ngl", "fr", "anyway", "cool", "super", "totally", "basically", "gotta", "nope", "yep", "btw",
         "awesome", "chill", "shows off", "helps out", "just "),
        ("therefore", "moreover", "furthermore", "consequently", "thus", "hence", "accordingly", "regarding",
         "advisable", "facilitate", "necessitate", "constitute", "demonstrate", "warrant", "utilize", "approximately",
         "subsequently", "additionally", "sufficient", "numerous", "prior to", "essential", "appropriate",
         "nevertheless", "one might", "kindly", "do not", "it is", "whereas", "evaluate", "ensure", "wherein"),
    ),
    "verbosity": Channel(
        ("verbosity", "verbose", "talkativeness", "talkative", "wordiness", "wordy", "elaboration", "elaborate",
         "loquacity", "loquacious", "expansiveness", "garrulousness", "long-windedness"),
        ("terseness", "terse", "brevity", "brief", "conciseness", "concise", "succinctness", "succinct", "laconic"),
        (), (),
    ),
}

DEGREES: dict[str, float] = {
    "slightly": 0.25, "a bit": 0.25, "a little": 0.25, "mildly": 0.25, "somewhat": 0.35, "moderately": 0.5,
    "fairly": 0.5, "reasonably": 0.5, "rather": 0.55, "quite": 0.6, "pretty": 0.6, "very": 0.75, "really": 0.75,
    "highly": 0.8, "deeply": 0.8, "extremely": 0.95, "incredibly": 0.95, "exceptionally": 0.95, "utterly": 1.0,
    "completely": 1.0, "totally": 0.95, "remarkably": 0.85,
}
_SELF = re.compile(r"\b(i|i'm|i am|i'd|me|myself|my)\b")
_SENTENCES = re.compile(r"(?<=[.!?\n])\s+")
_PATTERN = re.compile(r"^\s*([A-Za-z][A-Za-z _-]*?)\s*:\s*(-?\d+(?:\.\d+)?)\s*(?:chars)?\s*$")
_STEM = 6  # names sharing their first 6 letters match (enthusiasm / enthusiastic, caution / cautious)


def _key(word: str) -> str:
    """A word's matching key: its letters, cut to _STEM when longer (enthusiasm / enthusiastic share one)."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    return letters[:_STEM]


# key -> (channel, +1 for a name of the channel, -1 for a name of its opposite)
_NAME_INDEX: dict[str, tuple[str, float]] = {}
for _channel_key, _channel in CHANNELS.items():
    for _names, _sign in ((_channel.names, 1.0), (_channel.opposite_names, -1.0)):
        for _name in _names:
            _NAME_INDEX.setdefault(_key(_name), (_channel_key, _sign))


_WORD_CUE = re.compile(r"^[a-z0-9%' -]+$")


def _words(text: str) -> str:
    """Text as space-separated words, padded, so a word cue is counted with str.count(" cue ")."""
    return " " + " ".join(re.findall(r"[a-z0-9%']+", text.replace("-", " "))) + " "


def _split_cues(cues: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(word cues as padded word strings, symbol cues such as "!" or "<3" counted in the raw text)."""
    words = tuple(_words(c) for c in cues if _WORD_CUE.match(c) and c.strip())
    symbols = tuple(c for c in cues if not (_WORD_CUE.match(c) and c.strip()))
    return words, symbols


_CUES = {key: (_split_cues(c.negative), _split_cues(c.positive)) for key, c in CHANNELS.items() if c.negative or c.positive}


def count_cues(lowered: str, words: str, cues: tuple[tuple[str, ...], tuple[str, ...]]) -> int:
    word_cues, symbol_cues = cues
    return sum(words.count(c) for c in word_cues) + sum(lowered.count(c) for c in symbol_cues)


@lru_cache(maxsize=4096)
def _channel_of(name: str, positive_pole: str, negative_pole: str) -> tuple[str, float] | None:
    for word, pole_sign in ((name, 1.0), (positive_pole, 1.0), (negative_pole, -1.0)):
        key = _key(word)
        if key in _NAME_INDEX:
            channel, sign = _NAME_INDEX[key]
            return channel, sign * pole_sign
    return None


def axis_channel(axis: PersonalityAxis) -> tuple[str, float] | None:
    """(channel, sign) an axis reads, by its name first and then its pole names; None: no channel names it."""
    return _channel_of(axis.name, axis.positive_pole, axis.negative_pole)


@dataclass
class TextReading:
    """What one response shows: cue counts per channel, sentences, length, and self-descriptions."""

    sentences: int
    length: float
    cues: dict[str, tuple[int, int]]  # channel -> (negative, positive) cue counts
    first_person: list[str] = field(default_factory=list)  # lower-cased sentences that may describe the writer
    pattern_values: dict[str, float] = field(default_factory=dict)


def read_text(response: str, patterns: list[str]) -> TextReading:
    lowered = response.lower()
    sentences = [s for s in _SENTENCES.split(response.strip()) if s.strip()] if response.strip() else []
    words = _words(lowered)
    cues = {key: (count_cues(lowered, words, negative), count_cues(lowered, words, positive))
            for key, (negative, positive) in _CUES.items()}
    first_person = [s.lower() for s in sentences if _SELF.search(s.lower())]
    values = parse_patterns(patterns)
    length = float(len(response)) if response else values.get("length", 0.0)
    return TextReading(max(1, len(sentences)), length, cues, first_person, values)


def parse_patterns(patterns: list[str]) -> dict[str, float]:
    """RustyWorm-style "Name:value" patterns in any case and spacing ("Hedging:0.17", "length: 412 chars",
    the analyzer's "Questions asked: 2") as {first word of the name, lower case: value}; anything else, such as
    "Tone: warm" or "Opens with 'Sure!'", is skipped."""
    values: dict[str, float] = {}
    for pattern in patterns:
        match = _PATTERN.match(pattern) if isinstance(pattern, str) else None
        if match:
            value = float(match.group(2))
            if math.isfinite(value):
                values[match.group(1).strip().lower().split()[0]] = value
    return values


@lru_cache(maxsize=4096)
def _pole_keys(name: str, positive_pole: str, negative_pole: str) -> tuple[frozenset[str], frozenset[str]]:
    """Keys of the words that name an axis's positive and negative side (its poles and its channel's names)."""
    positive = {_key(name), _key(positive_pole)}
    negative = {_key(negative_pole)}
    found = _channel_of(name, positive_pole, negative_pole)
    if found is not None:
        channel = CHANNELS[found[0]]
        same, other = (channel.names, channel.opposite_names) if found[1] > 0 else (channel.opposite_names, channel.names)
        positive |= {_key(w) for w in same}
        negative |= {_key(w) for w in other}
    positive.discard("")
    negative.discard("")
    return frozenset(positive - negative), frozenset(negative - positive)


_DEGREE_BEFORE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, DEGREES), key=len, reverse=True)) + r")$")


def self_description(sentence: str, axis: PersonalityAxis) -> float | None:
    """A signed degree when `sentence` (first person) describes the trait of `axis` by one of its pole or
    channel words ("I'd call myself fairly cautious" -> +0.5 for caution), "not especially X (or Y)" -> 0;
    None when it does not mention the trait."""
    positive, negative = _pole_keys(axis.name, axis.positive_pole, axis.negative_pole)
    words = re.findall(r"[a-z'-]+", sentence)
    for index, word in enumerate(words):
        key = _key(word)
        pole = 1.0 if key in positive else -1.0 if key in negative else 0.0
        if pole == 0.0 or len(word) < 3:
            continue
        before = " ".join(words[max(0, index - 3):index])
        if re.search(r"\bnot (especially|particularly|very|really|overly)\b", before):
            return 0.0
        negated = re.search(r"\b(not|never|hardly|isn't|aren't|am not)\b", before) is not None
        degree = _DEGREE_BEFORE.search(before)
        return (-1.0 if negated else 1.0) * pole * (DEGREES[degree.group(1)] if degree else 0.6)
    return None
