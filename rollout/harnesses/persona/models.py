"""RustyWorm's persona data model with its exact serde JSON shapes (shared/reference/rustyworm.md).

The Rust client posts these documents to serve/ and reads ours back, so a document serialised by serde must
parse here and `model_dump(mode="json")` must give the same JSON back. Serde's conventions: snake_case keys,
unit enum variants as strings ("ChainOfThought"), a newtype variant as a one-key object
({"Hybrid": [...]}), `Vec<(String, f64)>` as an array of 2-element arrays, `Option<T>` as null or the value.

Validation is strict (no "0.5" strings for numbers, no unknown keys), so a malformed request fails with a
pydantic error that names the field instead of being silently reinterpreted. Defaults are the Rust ones
(AiProfile::new, ResponseStyle::default, SafetyProfile::default, PersonalityDelta::new).
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

ReasoningStyleName = Literal["ChainOfThought", "DirectWithDepth", "AnalyticalCareful", "CreativeFreeform", "ToolAugmented"]
ListStyle = Literal["Bullets", "Numbered", "Dashes", "None"]
ParagraphStyle = Literal["Short", "Medium", "Long", "Adaptive"]
UncertaintyBehavior = Literal["AdmitIgnorance", "HedgeWithCaveats", "ConfidentGuess", "AskForClarification", "RefuseToAnswer"]
DeltaSource = Literal["SelfMonitoring", "Observation", "Blending", "UserCorrection", "CompoundFeedback"]

# One [axis_name, amount] pair. Strict items, but the pair itself may arrive as a JSON array (a Python list).
Adjustment = Annotated[tuple[Annotated[str, Strict()], Annotated[float, Strict()]], Strict(False)]

# A usize never exceeds u64 (RustyWorm's own profile uses usize::MAX as its context window).
USIZE_MAX = 2**64 - 1
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class _Serde(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class HybridReasoning(_Serde):
    """ReasoningStyle::Hybrid(Vec<ReasoningStyle>), serialised {"Hybrid": [...]}."""

    Hybrid: list[ReasoningStyle]


ReasoningStyle = Union[ReasoningStyleName, HybridReasoning]
HybridReasoning.model_rebuild()


class PersonalityAxis(_Serde):
    name: str
    value: float = Field(ge=-1.0, le=1.0)
    negative_pole: str
    positive_pole: str


class ResponseStyle(_Serde):
    verbosity: float = Field(0.5, ge=0.0, le=1.0)
    formality: float = Field(0.5, ge=0.0, le=1.0)
    uses_markdown: bool = True
    uses_code_blocks: bool = True
    uses_emojis: bool = False
    preferred_list_style: ListStyle = "Bullets"
    max_response_length: int | None = Field(None, ge=0, le=USIZE_MAX)
    paragraph_style: ParagraphStyle = "Adaptive"


class SafetyProfile(_Serde):
    refuses_harmful: bool = True
    refuses_illegal: bool = True
    hedges_uncertainty: bool = True
    adds_disclaimers: bool = True
    caution_level: float = 0.7
    custom_constraints: list[str] = Field(default_factory=list)


class AiProfile(_Serde):
    id: str
    display_name: str
    version: str = "1.0"
    provider: str = "unknown"
    description: str = ""
    reasoning_style: ReasoningStyle = "DirectWithDepth"
    personality: list[PersonalityAxis] = Field(default_factory=list)
    response_style: ResponseStyle = Field(default_factory=ResponseStyle)
    safety: SafetyProfile = Field(default_factory=SafetyProfile)
    supported_modalities: list[str] = Field(default_factory=lambda: ["text"])
    max_context_window: int = Field(8192, ge=0, le=USIZE_MAX)
    supports_function_calling: bool = False
    supports_streaming: bool = False
    signature_phrases: list[str] = Field(default_factory=list)
    avoids_phrases: list[str] = Field(default_factory=list)
    knowledge_cutoff: str | None = None
    uncertainty_behavior: UncertaintyBehavior = "AdmitIgnorance"
    metadata: dict[str, str] = Field(default_factory=dict)

    def personality_value(self, axis_name: str) -> float | None:
        """The axis value, or None when the profile has no such axis (RustyWorm's personality_value)."""
        return next((a.value for a in self.personality if a.name == axis_name), None)

    def personality_values(self) -> dict[str, float]:
        """Every axis's value by name: how the persona policies compare a profile with where they left it."""
        return {axis.name: axis.value for axis in self.personality}


class PersonalityDelta(_Serde):
    adjustments: list[Adjustment] = Field(default_factory=list)
    confidence: float = Field(0.5, ge=0.0, le=1.0)
    source: DeltaSource = "Observation"

    def compound(self, other: PersonalityDelta) -> PersonalityDelta:
        """Stack two deltas: per axis the confidence-weighted mean of both amounts; confidence averages."""
        totals: dict[str, float] = {}
        for delta in (self, other):
            for axis, amount in delta.adjustments:
                totals[axis] = totals.get(axis, 0.0) + amount * delta.confidence
        weight = self.confidence + other.confidence
        return PersonalityDelta(
            adjustments=[(axis, total / weight if weight > 0 else 0.0) for axis, total in totals.items()],
            confidence=weight / 2,
            source="CompoundFeedback",
        )

    def magnitude(self) -> float:
        """Root mean square of the amounts: how much change the delta asks for."""
        if not self.adjustments:
            return 0.0
        return math.sqrt(sum(amount * amount for _, amount in self.adjustments) / len(self.adjustments))


class BehaviorObservation(_Serde):
    query: str = ""
    response: str = ""
    patterns: list[str] = Field(default_factory=list)
    similarity_to_target: float = Field(0.0, ge=0.0, le=1.0)
    confidence: float = Field(0.0, ge=0.0, le=1.0)


def _utc_now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class EvolutionTrajectory(_Serde):
    """One evolution step as the Rust client records it. `timestamp` stays the RFC3339 string it was sent as
    (chrono writes nanoseconds, which a Python datetime would truncate and so change the JSON)."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    state: AiProfile
    action: PersonalityDelta
    observation: BehaviorObservation
    reward: float
    next_state: AiProfile
    timestamp: str = Field(default_factory=_utc_now_rfc3339)
    used_in_training: bool = False
    importance_weight: float = 1.0

    @field_validator("timestamp")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        if not _RFC3339.match(value):
            raise ValueError(f"not an RFC3339 timestamp (e.g. 2025-01-31T12:00:00Z): {value!r}")
        seconds, fraction, offset = re.match(r"^(.{19})(\.\d+)?(.*)$", value).groups()  # type: ignore[union-attr]
        try:  # the date and time fields must be real (no month 13); fromisoformat wants at most 6 digits
            datetime.fromisoformat(seconds.replace("t", "T") + (fraction or "")[:7] + offset.replace("z", "Z"))
        except ValueError as exc:
            raise ValueError(f"not a valid RFC3339 timestamp: {value!r} ({exc})") from None
        return value


def apply_correction(profile: AiProfile, delta: PersonalityDelta) -> AiProfile:
    """A new profile with RustyWorm's AiProfile::apply_correction applied; `profile` is left unchanged.

    Existing axis: value + amount * confidence, clamped to [-1, 1]. Missing axis: appended with the UNSCALED
    amount (clamped), poles "low"/"high" (RustyWorm's rule, kept as is). An adjustment named "verbosity" or
    "formality" also moves response_style.verbosity/formality by amount * confidence, clamped to [0, 1]
    (the first such adjustment, as in Rust).
    """
    updated = profile.model_copy(deep=True)
    for axis_name, amount in delta.adjustments:
        axis = next((a for a in updated.personality if a.name == axis_name), None)
        if axis is not None:
            axis.value = _clamp(axis.value + amount * delta.confidence, -1.0, 1.0)
        else:
            updated.personality.append(
                PersonalityAxis(name=axis_name, value=_clamp(amount, -1.0, 1.0), negative_pole="low", positive_pole="high")
            )
    style = updated.response_style
    for style_field in ("verbosity", "formality"):
        amount = next((amount for name, amount in delta.adjustments if name == style_field), None)
        if amount is not None:
            setattr(style, style_field, _clamp(getattr(style, style_field) + amount * delta.confidence, 0.0, 1.0))
    return updated


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
