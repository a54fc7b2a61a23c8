"""Harness actions as LLM tools: parsing a model's reply into an action, and the canonical tool-call text the
expert demonstrations use (each action's JSON Schema is ActionDefinition.json_schema).

A reply is either a Hermes/Qwen tool call, `<tool_call>{"name": "guess", "arguments": {"number": 50}}</tool_call>`
(or the bare JSON object), or a plain command, `guess 50`. Parsing checks the form (one known action, the
right parameter names, values of the right JSON type); value constraints such as a guess's range are left to
the harness, whose refusal tells the agent what was wrong and costs no step. A number no float can hold (an
integer of more than MAX_NUMBER_DIGITS digits, 1e999, NaN, Infinity) is a parse failure here, so no harness
or service overflows on a model's absurd reply.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rollout.harnesses.base import ActionDefinition

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
MAX_NUMBER_DIGITS = 308  # the largest float is about 1.8e308: a longer integer is no usable number


class ActionParseError(ValueError):
    """A reply that is not one well-formed action; the message says what was wrong."""


@dataclass
class Action:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def format_action(action: Action) -> str:
    """The canonical tool-call text; parse_action(format_action(a), actions) == a."""
    return "<tool_call>" + json.dumps({"name": action.name, "arguments": action.arguments}) + "</tool_call>"


def tool_call_grammar(actions: list[ActionDefinition]) -> str:
    """The grammar (xgrammar's EBNF) of exactly one tool call for one of `actions`, in format_action's form,
    values of the right JSON types: a reply sampled under it (rollout.agent.constrain_actions) always parses.
    The tags are text here; a tokenizer's single <tool_call> token matches them too."""
    return _tool_call_grammar(json.dumps([action.to_dict() for action in actions]))


@functools.lru_cache(maxsize=64)
def _tool_call_grammar(actions_json: str) -> str:
    """Built once per action space (an episode asks every turn)."""
    import xgrammar

    actions = [ActionDefinition(**action) for action in json.loads(actions_json)]
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": action.name}, "arguments": action.json_schema()},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for action in actions
    ]
    call = xgrammar.Grammar.from_json_schema(
        calls[0] if len(calls) == 1 else {"anyOf": calls}, any_whitespace=False, separators=(", ", ": ")
    )
    tags = [xgrammar.Grammar.from_ebnf(f'root ::= "{tag}"') for tag in ("<tool_call>", "</tool_call>")]
    return str(xgrammar.Grammar.concat(tags[0], call, tags[1]))


def parse_action(text: str, actions: list[ActionDefinition]) -> Action:
    """One action from a model's reply: a tool call (tagged or bare JSON) or a plain-text command."""
    if not isinstance(text, str):
        raise ActionParseError(f"expected the reply as text, got {type(text).__name__}")
    definitions = {a.name: a for a in actions}
    if not definitions:
        raise ActionParseError("no actions are available")
    calls = _TOOL_CALL.findall(text)
    if len(calls) > 1:
        raise ActionParseError(f"found {len(calls)} tool calls; reply with exactly one action per turn")
    if calls:
        return _parse_json_call(calls[0].strip(), definitions)
    stripped = text.strip()
    if stripped.startswith("{"):  # bare, or its opening tag was a special token that decoding dropped
        return _parse_json_call(stripped.removesuffix("</tool_call>").rstrip(), definitions)
    return _parse_command(stripped, definitions)


def _parse_json_call(body: str, definitions: dict[str, ActionDefinition]) -> Action:
    try:
        call = json.loads(body, parse_int=_integer, parse_float=_real, parse_constant=_not_a_number)
    except json.JSONDecodeError as exc:
        raise ActionParseError(f"the tool call is not valid JSON ({exc.msg}, position {exc.pos}): {body!r}") from None
    except RecursionError:
        raise ActionParseError("the tool call is nested too deeply") from None
    if not isinstance(call, dict):
        raise ActionParseError(f"the tool call must be a JSON object, got {type(call).__name__}")
    unknown_keys = set(call) - {"name", "arguments"}
    if unknown_keys:
        raise ActionParseError(f'unknown keys {sorted(unknown_keys)} in the tool call; expected "name", "arguments"')
    name = call.get("name")
    if not isinstance(name, str):
        raise ActionParseError('the tool call needs a "name" string')
    definition = _lookup(name, definitions)
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ActionParseError(f'"arguments" must be a JSON object, got {type(arguments).__name__}')
    missing = [p for p in definition.parameters if p not in arguments]
    unknown = [p for p in arguments if p not in definition.parameters]
    if missing or unknown:
        raise ActionParseError(_wrong_parameters(definition, missing, unknown))
    return Action(
        definition.name,
        {p: _coerce(v, definition.parameters[p], p) if isinstance(v, str) else v for p, v in arguments.items()},
    )


def _parse_command(command: str, definitions: dict[str, ActionDefinition]) -> Action:
    """`go north` -> go(direction="north"): words map onto the parameters in order; the last string
    parameter takes the rest of the line, so `take golden key` works."""
    words = command.split()
    if not words:
        raise ActionParseError("empty reply; expected an action, e.g. " + _example(next(iter(definitions.values()))))
    definition = _lookup(words[0], definitions)
    names = list(definition.parameters)
    values = words[1:]
    if names and len(values) > len(names) and definition.parameters[names[-1]].get("type") == "string":
        values = values[: len(names) - 1] + [" ".join(values[len(names) - 1 :])]
    if len(values) != len(names):
        raise ActionParseError(
            f"{definition.name!r} takes {len(names)} argument(s) ({', '.join(names) or 'none'}), "
            f"got {len(values)}: {command!r}; e.g. {_example(definition)}"
        )
    return Action(definition.name, {p: _coerce(v, definition.parameters[p], p) for p, v in zip(names, values)})


def _lookup(name: str, definitions: dict[str, ActionDefinition]) -> ActionDefinition:
    """Exact name first, then a unique case-insensitive match ("Guess 50")."""
    if name in definitions:
        return definitions[name]
    matches = [d for n, d in definitions.items() if n.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    raise ActionParseError(f"unknown action {name!r}; available: {', '.join(definitions)}")


def _integer(text: str) -> int:
    if len(text.lstrip("+-")) > MAX_NUMBER_DIGITS:
        digits = len(text.lstrip("+-"))
        raise ActionParseError(f"a number of {digits} digits is too large (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ActionParseError(f"the number {text[:40]!r} is too large for a float")
    return value


def _not_a_number(name: str) -> float:
    raise ActionParseError(f"{name} is not a number; write a finite number")


def _coerce(word: str, schema: dict[str, Any], parameter: str) -> Any:
    """A text value converted to the parameter's JSON type ("50" -> 50 for an integer)."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return _integer(word)
        if kind == "number":
            return _real(word)
    except ValueError:  # not a number, or one no float holds
        article = "an" if kind == "integer" else "a"
        shown = word if len(word) <= 40 else word[:40] + "..."
        raise ActionParseError(f"{parameter} must be {article} {kind}, got {shown!r}") from None
    if kind == "boolean":
        if word.lower() in ("true", "false"):
            return word.lower() == "true"
        raise ActionParseError(f"{parameter} must be true or false, got {word!r}")
    return word


def _wrong_parameters(definition: ActionDefinition, missing: list[str], unknown: list[str]) -> str:
    problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
    return f"wrong arguments for {definition.name!r}: {'; '.join(problems)}; e.g. {_example(definition)}"


def _example(definition: ActionDefinition) -> str:
    return " ".join([definition.name] + [f"<{p}>" for p in definition.parameters])
