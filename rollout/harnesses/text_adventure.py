"""A four-room text adventure: find the key in the library, unlock the treasure room, take the treasure.

Rules (the original terrarium-agent text_adventure), with its defects fixed: entering a room earns +5 only the
first time (no farming by walking back and forth), taking the key +10, taking the treasure +100 and completes
the episode; entering the treasure room with the key unlocks it; 50 steps at most, then the episode fails.
The best path is 6 steps (north, north, take key, south, east, take treasure) for 125 reward.

The map is fixed: the seed changes nothing, so every episode is the same (and the same seed trivially gives
the same episode).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from rollout.harnesses.base import ActionDefinition, ActionResult, BaseHarness, HarnessStatus, Observation
from rollout.harnesses.tools import Action

MAX_STEPS = 50
MOVE_REWARD, KEY_REWARD, TREASURE_REWARD = 5.0, 10.0, 100.0


@dataclass(frozen=True)
class Room:
    description: str
    exits: dict[str, str]  # direction -> room
    item: str | None = None


ROOMS: dict[str, Room] = {
    "start": Room("You are in a small stone chamber.", {"north": "hallway"}),
    "hallway": Room("You are in a long hallway.", {"south": "start", "north": "library", "east": "treasure"}),
    "library": Room("You are in a dusty library.", {"south": "hallway"}, item="key"),
    "treasure": Room("You are in the treasure room.", {"west": "hallway"}, item="treasure"),
}
START_ROOM = "start"
LOCKED_ROOM, UNLOCKING_ITEM = "treasure", "key"
DIRECTIONS = ["north", "south", "east", "west"]
ITEMS = [room.item for room in ROOMS.values() if room.item is not None]

# Every action the numeric (gymnasium) interface can take, in index order.
NUMERIC_ACTIONS = [Action("go", {"direction": d}) for d in DIRECTIONS] + [
    Action("take", {"item": item}) for item in ITEMS
] + [Action("inventory", {})]


class TextAdventureHarness(BaseHarness):
    def __init__(self, max_steps: int = MAX_STEPS, timeout_seconds: float | None = None) -> None:
        super().__init__(
            name="text_adventure",
            description="Explore the rooms, find what opens the locked door and take the treasure. Entering a "
            "room for the first time earns 5, the key 10, the treasure 100 and ends the game.",
            max_steps=max_steps,
            timeout_seconds=timeout_seconds,
        )
        self.room = START_ROOM
        self.inventory: list[str] = []
        self.items: dict[str, list[str]] = {}
        self.visited: set[str] = set()

    def get_action_space(self) -> list[ActionDefinition]:
        return [
            ActionDefinition("go", "Walk to the next room.", {"direction": {"type": "string", "enum": DIRECTIONS}}),
            ActionDefinition("take", "Pick up an item in this room.", {"item": {"type": "string", "enum": ITEMS}}),
            ActionDefinition("inventory", "List what you carry.", {}),
        ]

    async def _reset(self, rng: random.Random) -> Observation:
        self.room = START_ROOM
        self.inventory = []
        self.items = {name: [room.item] if room.item else [] for name, room in ROOMS.items()}
        self.visited = {START_ROOM}
        return self._observe("")

    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        if action == "go":
            return self._go(params["direction"])
        if action == "take":
            return self._take(params["item"])
        carried = ", ".join(self.inventory) or "nothing"
        return ActionResult(success=True, observation=self._observe(f"You carry: {carried}."))

    def _go(self, direction: str) -> ActionResult:
        destination = ROOMS[self.room].exits.get(direction)
        if destination is None:
            return ActionResult(success=False, observation=self._observe(f"You cannot go {direction} from here."))
        if destination == LOCKED_ROOM and UNLOCKING_ITEM not in self.inventory:
            return ActionResult(success=False, observation=self._observe(f"The door to the {direction} is locked."))
        first_visit = destination not in self.visited
        self.room = destination
        self.visited.add(destination)
        note = "You unlock the door with the key." if destination == LOCKED_ROOM and first_visit else ""
        return ActionResult(success=True, observation=self._observe(note), reward=MOVE_REWARD if first_visit else 0.0)

    def _take(self, item: str) -> ActionResult:
        if item not in self.items[self.room]:
            return ActionResult(success=False, observation=self._observe(f"There is no {item} here."))
        self.items[self.room].remove(item)
        self.inventory.append(item)
        if item == "treasure":
            self.status = HarnessStatus.COMPLETED
            return ActionResult(
                success=True, observation=self._observe("You take the treasure. You win!"), reward=TREASURE_REWARD
            )
        return ActionResult(success=True, observation=self._observe(f"You take the {item}."), reward=KEY_REWARD)

    def _observe(self, event: str) -> Observation:
        room = ROOMS[self.room]
        exits = list(room.exits)
        items = self.items[self.room]
        seen = f" You see: {', '.join(items)}." if items else ""
        text = f"{event} {room.description} Exits: {', '.join(exits)}.{seen}".strip()
        metadata = {"room": self.room, "exits": exits, "items": list(items), "inventory": list(self.inventory)}
        return Observation(content=text, metadata=metadata)

    # --- numeric contract for gymnasium / RLlib (rollout.harnesses.gym_env) ----------------------

    def numeric_spaces(self) -> tuple[spaces.Box, spaces.Discrete]:
        """Observation: one-hot room, visited rooms, carried items (the whole state); action: NUMERIC_ACTIONS."""
        size = 2 * len(ROOMS) + len(ITEMS)
        return spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32), spaces.Discrete(len(NUMERIC_ACTIONS))

    def numeric_observation(self) -> np.ndarray:
        here = [name == self.room for name in ROOMS]
        visited = [name in self.visited for name in ROOMS]
        carried = [item in self.inventory for item in ITEMS]
        return np.array(here + visited + carried, dtype=np.float32)

    def numeric_action(self, index: int) -> Action:
        action = NUMERIC_ACTIONS[int(index)]
        return Action(action.name, dict(action.arguments))
