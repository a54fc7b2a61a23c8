"""The LLM's side of /predict-delta and /train: the persona harness's prompt for a (profile, observation), and
the apply_delta tool call that answers it, in both directions.

A policy trained in the persona harness (rollout.harnesses.persona.harness) reads this very prompt: the harness's
system prompt and its first turn (rollout.harnesses.persona.first_observation_text: instructions, the target's
response, the profile), with the convergence shown as the observation's similarity_to_target. Its reply is an
apply_delta call {axis: amount} on the harness's axes, amounts in [-2, 2], confidence in [0, 1]; values
outside are clamped, anything else is refused (ActionParseError), and the service falls back to the persona
expert. A RustyWorm profile may name axes the harness never does ("warmth", "zest"): the call may adjust those
too (`delta_actions`), and `reply_grammar` is the grammar of exactly one such call, under which a served model's
reply always parses (vLLM structured outputs; serve.constrain_replies).

One rule differs between the harness and RustyWorm: the harness's profile has every axis, while a RustyWorm
profile may lack some, and apply_correction adds a missing axis with the UNSCALED amount. The model means
"value = 0 + amount * confidence", so for a missing axis the amount is multiplied by the confidence here (and
divided by it when an action is written back as text for training), which keeps the model's meaning.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rollout.chat import ChatRenderer, system_prompt
from rollout.harnesses.base import ActionDefinition
from rollout.harnesses.persona.harness import MAX_AMOUNT, PersonaHarness, delta_action_definition, first_observation_text
from rollout.harnesses.tools import Action, ActionParseError, format_action, parse_action, tool_call_grammar
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation, PersonalityDelta
from rollout.harnesses.persona.profiles import AXES

if TYPE_CHECKING:
    from rollout.engine import SamplingConfig

DELTA_ACTION = "apply_delta"
PERSONA_ACTIONS = PersonaHarness().get_action_space()  # built once: parse_delta runs on every request


class PersonaPolicyFormat:
    """Token ids of the persona prompt and of apply_delta replies, for one model's chat template."""

    def __init__(self, renderer: ChatRenderer) -> None:
        self.renderer = renderer
        self.system = system_prompt(PersonaHarness(), PERSONA_ACTIONS)

    def prompt_ids(self, profile: AiProfile, observation: BehaviorObservation) -> list[int]:
        return self.renderer.first_prompt(self.system, first_observation_text(profile, observation))

    def reply_ids(self, delta: PersonalityDelta, profile: AiProfile) -> list[int]:
        """The tool call for `delta` plus the end-of-turn token, as the model would write it."""
        text = format_action(delta_action(delta, profile))
        return self.renderer.tokenizer.encode(text, add_special_tokens=False) + [self.renderer.end_of_turn_id]


def delta_actions(profile: AiProfile) -> list[ActionDefinition]:
    """apply_delta over the harness's axes and, after them, the profile's own other axes."""
    extra = [axis.name for axis in profile.personality if axis.name not in AXES]
    return [delta_action_definition([*AXES, *dict.fromkeys(extra)])] if extra else PERSONA_ACTIONS


def reply_grammar(profile: AiProfile) -> str:
    """The grammar of exactly one apply_delta call for this profile (tool_call_grammar: cached per axis set)."""
    return tool_call_grammar(delta_actions(profile))


def reply_sampling(sampling: SamplingConfig, prompt_length: int, max_model_len: int) -> SamplingConfig | None:
    """`sampling` with max_tokens cut to the room the context leaves after the prompt; None when the prompt
    leaves none (the service and the bench's client then fall back to the persona expert)."""
    room = max_model_len - prompt_length
    return sampling.model_copy(update={"max_tokens": min(sampling.max_tokens, room)}) if room >= 1 else None


def parse_delta(reply: str, profile: AiProfile) -> PersonalityDelta:
    """The PersonalityDelta of a model's apply_delta reply; ActionParseError says why a reply is unusable."""
    actions = delta_actions(profile)
    action = parse_action(reply, actions)
    adjustments, confidence = action.arguments["adjustments"], action.arguments["confidence"]
    if not isinstance(adjustments, dict):
        raise ActionParseError(f"adjustments must be an object axis -> amount, got {type(adjustments).__name__}")
    confidence = _clamp(_number(confidence, "confidence"), 0.0, 1.0)
    axes = actions[0].parameters["adjustments"]["properties"]
    pairs: list[tuple[str, float]] = []
    for axis, amount in adjustments.items():
        if axis not in axes:
            raise ActionParseError(f"unknown axis {axis!r}; axes: {', '.join(axes)}")
        amount = _clamp(_number(amount, f"adjustments.{axis}"), -MAX_AMOUNT, MAX_AMOUNT)
        if profile.personality_value(axis) is None:
            amount *= confidence  # RustyWorm adds a missing axis unscaled (module doc)
        pairs.append((axis, amount))
    return PersonalityDelta(adjustments=pairs, confidence=confidence, source="Observation")


def delta_action(delta: PersonalityDelta, profile: AiProfile) -> Action:
    """The apply_delta call that parse_delta reads back as `delta` (up to clamping and rounding). Only the
    harness's axes and the profile's can be written; an axis named twice is written once with the amounts summed."""
    amounts: dict[str, float] = {}
    for axis, amount in delta.adjustments:
        if axis not in AXES and profile.personality_value(axis) is None:
            continue
        if profile.personality_value(axis) is None:
            amount = amount / delta.confidence if delta.confidence > 0 else 0.0
        amounts[axis] = amounts.get(axis, 0.0) + amount
    written = {axis: round(_clamp(amount, -MAX_AMOUNT, MAX_AMOUNT), 4) for axis, amount in amounts.items()}
    return Action(DELTA_ACTION, {"adjustments": written, "confidence": round(delta.confidence, 4)})


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ActionParseError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
