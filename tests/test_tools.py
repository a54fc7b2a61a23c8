"""Harness actions as tools: their JSON schemas, parsing replies into actions, the canonical tool-call text."""

from __future__ import annotations

import random
import string

import pytest
from jsonschema import Draft202012Validator

from rollout.harnesses.number_guess import NumberGuessHarness
from rollout.harnesses.text_adventure import NUMERIC_ACTIONS, TextAdventureHarness
from rollout.harnesses.persona.harness import PersonaHarness
from rollout.harnesses.tools import Action, ActionParseError, format_action, parse_action, tool_call_grammar

GUESS = NumberGuessHarness().get_action_space()
ADVENTURE = TextAdventureHarness().get_action_space()


# --- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actions", [GUESS, ADVENTURE], ids=["number_guess", "text_adventure"])
def test_actions_have_valid_json_schemas(actions):
    for action in actions:
        Draft202012Validator.check_schema(action.json_schema())


def test_guess_schema_refuses_out_of_range_numbers():
    validator = Draft202012Validator(GUESS[0].json_schema())
    assert validator.is_valid({"number": 1}) and validator.is_valid({"number": 100})
    assert not validator.is_valid({"number": 0}) and not validator.is_valid({"number": 101})


# --- parse_action ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,actions,expected",
    [
        ('<tool_call>{"name": "guess", "arguments": {"number": 50}}</tool_call>', GUESS, Action("guess", {"number": 50})),
        ('<think>half of 100</think>\n<tool_call>\n{"name": "guess", "arguments": {"number": 50}}\n</tool_call>',
         GUESS, Action("guess", {"number": 50})),
        ('<tool_call>{"name": "guess", "arguments": {"number": 7}}', GUESS, Action("guess", {"number": 7})),
        ('{"name": "guess", "arguments": {"number": 50}}', GUESS, Action("guess", {"number": 50})),
        ('{"name": "guess", "arguments": {"number": "50"}}', GUESS, Action("guess", {"number": 50})),
        # the opening tag was a special token, dropped when the reply was decoded; the closing one was text
        ('{"name": "guess", "arguments": {"number": 50}}</tool_call>', GUESS, Action("guess", {"number": 50})),
        ('{"name": "inventory"}', ADVENTURE, Action("inventory", {})),
        ("guess 50", GUESS, Action("guess", {"number": 50})),
        ("  Guess 12 \n", GUESS, Action("guess", {"number": 12})),
        ("guess 500", GUESS, Action("guess", {"number": 500})),  # range is the harness's to refuse
        ("go north", ADVENTURE, Action("go", {"direction": "north"})),
        ("take key", ADVENTURE, Action("take", {"item": "key"})),
        ("take golden key", ADVENTURE, Action("take", {"item": "golden key"})),
        ("inventory", ADVENTURE, Action("inventory", {})),
    ],
)
def test_parse_action_accepts_tool_calls_and_plain_commands(text, actions, expected):
    assert parse_action(text, actions) == expected


@pytest.mark.parametrize(
    "text,actions,message",
    [
        ("", GUESS, "empty reply"),
        ("   ", GUESS, "empty reply"),
        ("guess", GUESS, "takes 1 argument"),
        ("guess fifty", GUESS, "number must be an integer, got 'fifty'"),
        ("guess 5.5", GUESS, "must be an integer"),
        ("guess 50 51", GUESS, "takes 1 argument"),
        ("inventory now", ADVENTURE, "takes 0 argument"),
        ("fly north", ADVENTURE, "unknown action 'fly'; available: go, take, inventory"),
        ("<tool_call>guess 50</tool_call>", GUESS, "not valid JSON"),
        ('<tool_call>{"name": "guess", "arguments": {"number": 1}}</tool_call>'
         '<tool_call>{"name": "guess", "arguments": {"number": 2}}</tool_call>', GUESS, "2 tool calls"),
        ('{"name": 5, "arguments": {}}', GUESS, '"name" string'),
        ('{"arguments": {"number": 5}}', GUESS, '"name" string'),
        ('{"name": "guess", "arguments": [50]}', GUESS, "must be a JSON object, got list"),
        ('{"name": "guess", "arguments": {"num": 50}}', GUESS, r"missing \['number'\]; unknown \['num'\]"),
        ('{"name": "guess", "arguments": {}}', GUESS, r"missing \['number'\]"),
        ('{"name": "guess", "arguments": {"number": 5}, "id": 1}', GUESS, "unknown keys"),
        ('{"name": "guess", "arguments": {"number": "five"}}', GUESS, "must be an integer"),
        ('["guess", 50]', GUESS, "unknown action"),
        ('{"name": "guess", "arguments": {"number": 50}} and more', GUESS, "not valid JSON"),
        ("guess 50", [], "no actions"),
        pytest.param('{"name": "guess", "arguments": ' + "[" * 100_000, GUESS, "nested too deeply", id="deep"),
        pytest.param('{"name": "guess", "arguments": {"number": 1' + "0" * 308 + "}}", GUESS, "309 digits is too large",
                     id="309-digit-int"),
        pytest.param('{"name": "guess", "arguments": {"number": ' + "9" * 5000 + "}}", GUESS, "5000 digits",
                     id="5000-digit-int"),
        pytest.param("guess " + "9" * 5000, GUESS, "must be an integer, got '9999", id="5000-digit-word"),
        pytest.param("guess " + "9" * 400, GUESS, "must be an integer", id="400-digit-word"),
        pytest.param('{"name": "guess", "arguments": {"number": 1e999}}', GUESS, "too large for a float", id="1e999"),
        pytest.param('{"name": "guess", "arguments": {"number": NaN}}', GUESS, "NaN is not a number", id="nan"),
        pytest.param('{"name": "guess", "arguments": {"number": -Infinity}}', GUESS, "-Infinity is not", id="-inf"),
    ],
)
def test_parse_action_rejects_malformed_replies_with_a_reason(text, actions, message):
    with pytest.raises(ActionParseError, match=message):
        parse_action(text, actions)


def test_parse_error_is_a_value_error_and_non_text_is_refused():
    assert issubclass(ActionParseError, ValueError)
    with pytest.raises(ActionParseError, match="as text"):
        parse_action(None, GUESS)  # type: ignore[arg-type]


def test_parse_action_never_raises_anything_but_action_parse_error():
    """Random junk, and valid tool calls with random characters changed."""
    rng = random.Random(0)
    valid = [format_action(Action("guess", {"number": n})) for n in (1, 50, 100)] + [
        format_action(a) for a in NUMERIC_ACTIONS
    ]
    alphabet = string.printable + "<>{}[]\":,"
    pieces = ["<tool_call>", "</tool_call>", '{"name": "guess", "arguments": {"number": ', "}", "guess ", "go ",
              "take ", "north", "50", "1e999", "null", "true", '"', "\\u0000", "inventory"]
    for _ in range(3000):
        parts = [rng.choice(pieces) if rng.random() < 0.5 else "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
                 for _ in range(rng.randint(0, 6))]
        mutated = list(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.choice(alphabet) if rng.random() < 0.7 else ""
        for text, actions in [("".join(parts), GUESS), ("".join(parts), ADVENTURE), ("".join(mutated), GUESS),
                              ("".join(mutated), ADVENTURE)]:
            try:
                action = parse_action(text, actions)
            except ActionParseError:
                continue
            assert action.name in {a.name for a in actions}


def test_format_then_parse_round_trips():
    actions = [Action("guess", {"number": n}) for n in range(1, 101)]
    for action in actions:
        assert parse_action(format_action(action), GUESS) == action
    for action in NUMERIC_ACTIONS:
        assert parse_action(format_action(action), ADVENTURE) == action
    assert format_action(Action("guess", {"number": 50})) == (
        '<tool_call>{"name": "guess", "arguments": {"number": 50}}</tool_call>'
    )


# --- the tool-call grammar (rollout.agent.constrain_actions) -------------------------------------------------


def _matches(grammar: str, text: str, tokenizer) -> bool:
    """Whether xgrammar, as vLLM runs it, lets a model write `text` and then end its turn."""
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    matcher = xgrammar.GrammarMatcher(xgrammar.GrammarCompiler(info).compile_grammar(grammar))
    ids = tokenizer.encode(text, add_special_tokens=False)
    return all(matcher.accept_token(i) for i in ids) and matcher.accept_token(tokenizer.eos_token_id)


def test_tool_call_grammar_admits_exactly_the_harness_actions(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # <tool_call> is one special token here
    persona = PersonaHarness().get_action_space()
    allowed = {
        "number_guess": (GUESS, [Action("guess", {"number": 1}), Action("guess", {"number": 100})]),
        "text_adventure": (ADVENTURE, NUMERIC_ACTIONS[:3] + [Action("go", {"direction": "north"})]),
        "persona": (
            persona, [Action("apply_delta", {"adjustments": {"humor": -0.5, "depth": 1.25}, "confidence": 0.8})]
        ),
    }
    for name, (actions, examples) in allowed.items():
        grammar = tool_call_grammar(actions)
        for action in examples:
            assert _matches(grammar, format_action(action), tokenizer), (name, action)
    guess = tool_call_grammar(GUESS)
    refused = [
        '<tool_call>{"name": "guess", "arguments": {"number": 101}}</tool_call>',  # out of the schema's range
        '<tool_call>{"name": "go", "arguments": {"number": 5}}</tool_call>',  # not an action of this harness
        '<tool_call>{"name": "guess", "arguments": {"number": 5, "why": 1}}</tool_call>',  # an unknown argument
        '<tool_call>{"name": "guess", "arguments": {"number": 5}}',  # the turn would end inside the call
        "guess 50",  # free text
    ]
    assert not any(_matches(guess, text, tokenizer) for text in refused)
    apply = tool_call_grammar(persona)
    unknown_axis = Action("apply_delta", {"adjustments": {"wit": 1.0}, "confidence": 1})
    assert not _matches(apply, format_action(unknown_axis), tokenizer)


def test_the_reply_grammar_admits_a_client_profiles_own_axes(tiny_model_dir):
    """A RustyWorm profile may name axes the harness never does: its reply grammar (policy_format.reply_grammar,
    what /predict-delta samples under) admits those and the harness's, and still no other."""
    from transformers import AutoTokenizer

    from rollout.harnesses.persona.models import AiProfile, PersonalityAxis
    from rollout.harnesses.persona.policy_format import parse_delta, reply_grammar

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    profile = AiProfile(id="p", display_name="p", personality=[
        PersonalityAxis(name="zest", value=0.2, negative_pole="dull", positive_pole="zesty"),
        PersonalityAxis(name="humor", value=0.0, negative_pole="serious", positive_pole="funny")])
    grammar = reply_grammar(profile)
    # (xgrammar writes an object's properties in the schema's order: the harness's axes, then the profile's)
    own = format_action(Action("apply_delta", {"adjustments": {"depth": 1.0, "zest": -0.5}, "confidence": 1}))
    assert _matches(grammar, own, tokenizer)
    assert parse_delta(own, profile).adjustments == [("depth", 1.0), ("zest", -0.5)]
    other = format_action(Action("apply_delta", {"adjustments": {"wit": 1.0}, "confidence": 1}))
    assert not _matches(grammar, other, tokenizer)
    with pytest.raises(ActionParseError, match="unknown axis 'wit'"):
        parse_delta(other, profile)
