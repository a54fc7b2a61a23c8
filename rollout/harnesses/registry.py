"""Harnesses and policies by name, so configs and the CLI can say "number_guess" or "my_pkg.envs:MyHarness".

Everything is named as "module:attribute" and imported only when asked for: the persona harness and its
policies live in modules another package provides, and a user's own harness needs no change here.
"""

from __future__ import annotations

import importlib
from typing import Any

from rollout.harnesses.base import BaseHarness
from rollout.harnesses.experts import Policy

BUILTIN_HARNESSES: dict[str, str] = {
    "number_guess": "rollout.harnesses.number_guess:NumberGuessHarness",
    "text_adventure": "rollout.harnesses.text_adventure:TextAdventureHarness",
    "persona": "rollout.harnesses.persona.harness:PersonaHarness",
    "pick_number": "rollout.harnesses.pick_number:PickNumberHarness",
}

_RANDOM = "rollout.harnesses.experts:RandomPolicy"

# harness -> policy name -> "module:factory"; a factory takes no arguments and returns a Policy.
POLICIES: dict[str, dict[str, str]] = {
    "number_guess": {
        "expert": "rollout.harnesses.experts:BinarySearchExpert",
        "noisy": "rollout.harnesses.experts:NoisyBinarySearch",
        "random": _RANDOM,
    },
    "text_adventure": {
        "expert": "rollout.harnesses.experts:ShortestPathExpert",
        "noisy": "rollout.harnesses.experts:NoisyShortestPath",
        "random": _RANDOM,
    },
    "pick_number": {"expert": "rollout.harnesses.pick_number:HighestPick", "random": _RANDOM},
    "persona": {
        "expert": "rollout.harnesses.persona.estimator:PersonaExpert",
        "heuristic": "rollout.harnesses.persona.estimator:RustyWormHeuristic",
        "random": _RANDOM,
    },
}


def make_harness(spec: str, **kwargs: Any) -> BaseHarness:
    """A built-in harness by name, or a user's harness as "module:Class"; kwargs go to its constructor."""
    target = BUILTIN_HARNESSES.get(spec, spec) if isinstance(spec, str) else ""
    if ":" not in target:
        raise ValueError(
            f"unknown harness {spec!r}: use a built-in one ({', '.join(BUILTIN_HARNESSES)}) or 'module:Class'"
        )
    cls = _load(target, f"harness {spec!r}")
    if not (isinstance(cls, type) and issubclass(cls, BaseHarness)):
        raise ValueError(f"harness {spec!r}: {target} is not a subclass of rollout.harnesses.base.BaseHarness")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"harness {spec!r}: cannot construct {cls.__name__}({kwargs}): {exc}") from exc


def make_policy(harness: str, policy: str) -> Policy:
    """A policy registered for `harness` by name ("expert", "random", ...), or any "module:Factory".

    A user's harness not listed in POLICIES gets the schema-driven random policy.
    """
    available = POLICIES.get(harness, {"random": _RANDOM})
    target = policy if ":" in policy else available.get(policy)
    if target is None:
        raise ValueError(
            f"no policy {policy!r} for harness {harness!r}: available {', '.join(available)}, or 'module:Factory'"
        )
    factory = _load(target, f"policy {policy!r} for harness {harness!r}")
    if not callable(factory):
        raise ValueError(f"policy {policy!r} for harness {harness!r}: {target} is not callable")
    return factory()


def make_expert(harness: str) -> Policy:
    return make_policy(harness, "expert")


def _load(target: str, what: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what}: {target!r} is not of the form 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what}: cannot import module {module_name!r} ({exc})") from exc
    if not hasattr(module, attribute):
        raise ValueError(f"{what}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)
