"""Harness actions as LLM tools: OpenAI tool schemas, parsing a model's reply into an action, and the
canonical tool-call text the expert demonstrations use.

A reply is either a Hermes/Qwen tool call, `<tool_call>{"name": "guess", "arguments": {"number": 50}}</tool_call>`
(or the bare JSON object), or a plain command, `guess 50`. Parsing checks the form (one known action, the
right parameter names, values of the right JSON type); value constraints such as a guess's range are left to
the harness, whose refusal tells the agent what was wrong and costs no step. A number no float can hold (an
integer of more than MAX_NUMBER_DIGITS digits, 1e999, NaN, Infinity) is a parse failure here, so no harness
or service overflows on a model's absurd reply.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rollout.harnesses.base import ActionDefinition, BaseHarness, Observation

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
MAX_NUMBER_DIGITS = 308  # the largest float is about 1.8e308: a longer integer is no usable number


class ActionParseError(ValueError):
    """A reply that is not one well-formed action; the message says what was wrong."""


@dataclass
class Action:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def openai_tools(actions: list[ActionDefinition]) -> list[dict[str, Any]]:
    """The `tools` argument of an OpenAI-style chat completion, one function per action."""
    return [_tool(a.name, a.description, a.json_schema()) for a in actions]


def format_action(action: Action) -> str:
    """The canonical tool-call text; parse_action(format_action(a), actions) == a."""
    return "<tool_call>" + json.dumps({"name": action.name, "arguments": action.arguments}) + "</tool_call>"


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
    if stripped.startswith("{"):
        return _parse_json_call(stripped, definitions)
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


@dataclass(frozen=True)
class _Route:
    harness: str
    kind: str  # "reset", "observe" or "action"
    action: str = ""


class HarnessToolAdapter:
    """Several harnesses as one flat tool list for an agent runtime.

    Tool names are `<harness>__reset`, `<harness>__observe` and `<harness>__<action>`; a call is dispatched by
    exact lookup of the whole name (names may contain underscores). Dispatch never raises: a malformed call
    comes back as an error observation.
    """

    def __init__(self, harnesses: dict[str, BaseHarness]) -> None:
        self.harnesses = harnesses
        self._routes()  # fail at construction on colliding names

    def tools(self) -> list[dict[str, Any]]:
        seed = {"seed": {"type": "integer", "description": "same seed, same episode"}}
        tools: list[dict[str, Any]] = []
        for key, harness in self.harnesses.items():
            tools.append(_tool(f"{key}__reset", f"Start a new {key} episode. {harness.description}", _object(seed)))
            tools.append(_tool(f"{key}__observe", f"The current {key} observation.", _object({})))
            for action in harness.get_action_space():
                tools.append(_tool(f"{key}__{action.name}", f"[{key}] {action.description}", action.json_schema()))
        return tools

    async def call(self, tool_name: str, arguments: dict[str, Any] | str | None = None) -> Observation:
        """Run one tool call; `arguments` may be the JSON string of an OpenAI tool call."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (json.JSONDecodeError, RecursionError) as exc:
                return _error(f"arguments of {tool_name!r} are not valid JSON: {exc}")
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict):
            return _error(f"arguments of {tool_name!r} must be a JSON object, got {type(arguments).__name__}")
        route = self._routes().get(tool_name)
        if route is None:
            return _error(f"unknown tool {tool_name!r}; available: {', '.join(self._routes())}")
        harness = self.harnesses[route.harness]
        if route.kind == "reset":
            seed = arguments.get("seed")
            seed_ok = seed is None or (isinstance(seed, int) and not isinstance(seed, bool))
            if set(arguments) - {"seed"} or not seed_ok:
                return _error(f"{tool_name} takes only an optional integer seed, got {arguments!r}")
            try:
                return await harness.reset(seed)
            except Exception as exc:  # a harness bug must not crash the agent runtime
                return _error(f"{tool_name} failed: {type(exc).__name__}: {exc}")
        if route.kind == "observe":
            if arguments:
                return _error(f"{tool_name} takes no arguments, got {arguments!r}")
            try:
                return await harness.get_observation()
            except RuntimeError as exc:
                return _error(str(exc))
        return (await harness.step(route.action, **arguments)).observation

    def _routes(self) -> dict[str, _Route]:
        """Tool name -> what it does; rebuilt per call because a harness's action space may change."""
        routes: dict[str, _Route] = {}
        for key, harness in self.harnesses.items():
            entries = [(f"{key}__reset", _Route(key, "reset")), (f"{key}__observe", _Route(key, "observe"))]
            entries += [(f"{key}__{a.name}", _Route(key, "action", a.name)) for a in harness.get_action_space()]
            for name, route in entries:
                if name in routes:
                    raise ValueError(f"tool name {name!r} is used twice; rename the harness or the action")
                routes[name] = route
        return routes


def _tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _object(optional_properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": optional_properties, "required": [], "additionalProperties": False}


def _error(message: str) -> Observation:
    return Observation(content=f"Error: {message}", metadata={"error": message})
