"""number_guess with a controllable long tail, for tests/test_async.py (loaded by rollout workers as
"tests.long_tail_harness:LongTailGuess").

The untrained tiny model writes no valid action, so the harness is never stepped: the only places an
episode can be held are its reset (before the first turn) and the end-of-turn check `is_done`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from rollout.harnesses.number_guess import NumberGuessHarness

POLL_S = 0.05


class LongTailGuess(NumberGuessHarness):
    """`hold` {str(seed): path}: the first episode of such a seed to reset in this process plays at once, the
    group's others wait in reset (asyncio: other episodes go on) until `path` exists. The group then holds
    an episode sampled by early weights and finishes late, as a long-tail group does. A held episode
    touches `signal`/<seed>.turn<n> after its n-th turn, which another group can be held on, so that the test
    orders events without timings.
    `barrier` (a directory): the first end-of-turn check writes barrier/turn1 and blocks this process until
    barrier/go exists, so the test can sync weights between an episode's turns."""

    _played: ClassVar[set[str]] = set()

    def __init__(
        self, hold: dict[str, str] | None = None, signal: str | None = None, barrier: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.hold = hold or {}
        self.signal = Path(signal) if signal else None
        self.barrier = Path(barrier) if barrier else None
        self.held = False
        self.turns = 0

    async def _reset(self, rng: Any) -> Any:
        key = str(self.seed)
        if key in self.hold:
            if key in LongTailGuess._played:
                self.held = True
                while not Path(self.hold[key]).exists():
                    await asyncio.sleep(POLL_S)
            LongTailGuess._played.add(key)
        return await super()._reset(rng)

    def is_done(self) -> bool:
        self.turns += 1
        if self.held and self.signal is not None:
            (self.signal / f"{self.seed}.turn{self.turns}").touch()
        if self.barrier is not None and self.turns == 1:
            (self.barrier / "turn1").touch()
            deadline = time.monotonic() + 120
            while not (self.barrier / "go").exists() and time.monotonic() < deadline:
                time.sleep(POLL_S)
        return super().is_done()
