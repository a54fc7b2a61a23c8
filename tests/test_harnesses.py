"""The harness rules (number_guess, text_adventure, the base class's limits), the experts, the registry and
the evaluation. Each test pins one rule of the original terrarium-agent or one fixed defect of it."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import pytest

from rollout.evaluation import evaluate
from rollout.harnesses.base import ActionDefinition, ActionResult, BaseHarness, HarnessStatus, Observation
from rollout.harnesses.experts import BinarySearchExpert, RandomPolicy, ShortestPathExpert
from rollout.harnesses.number_guess import NumberGuessHarness
from rollout.harnesses.registry import make_expert, make_harness, make_policy
from rollout.harnesses.text_adventure import NUMERIC_ACTIONS, TextAdventureHarness
from rollout.harnesses.tools import Action

BEST_PATH = [
    Action("go", {"direction": "north"}),
    Action("go", {"direction": "north"}),
    Action("take", {"item": "key"}),
    Action("go", {"direction": "south"}),
    Action("go", {"direction": "east"}),
    Action("take", {"item": "treasure"}),
]


# --- small harnesses and policies used by these tests (also loaded by "module:Class" specs) --------------


class CountingHarness(BaseHarness):
    """Never ends by itself; `tick` earns `reward_per_tick`. Reports its own figure in get_stats()."""

    def __init__(self, reward_per_tick: float = 1.0, max_steps: int | None = 3, timeout_seconds: float | None = None):
        super().__init__("counting", "tick until the limit", max_steps=max_steps, timeout_seconds=timeout_seconds)
        self.reward_per_tick = reward_per_tick

    def get_action_space(self) -> list[ActionDefinition]:
        return [ActionDefinition("tick", "count one", {})]

    async def _reset(self, rng: random.Random) -> Observation:
        return Observation(content="0")

    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        return ActionResult(success=True, observation=Observation(content=str(self.current_step + 1)),
                            reward=self.reward_per_tick)

    def get_stats(self):
        stats = super().get_stats()
        stats.metadata["ticks_squared"] = self.current_step**2
        return stats


class ExplodingHarness(CountingHarness):
    async def _step(self, action: str, params: dict[str, Any]) -> ActionResult:
        raise RuntimeError("boom")


class NotAHarness:
    pass


class InvalidActionPolicy:
    """Always asks for an action the harness does not have."""

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, observation: Observation) -> Action:
        return Action("dance", {})


async def play(harness: BaseHarness, actions: list[Action], seed: int = 0) -> list[ActionResult]:
    await harness.reset(seed)
    return [await harness.step(a.name, **a.arguments) for a in actions]


def guess(number: Any) -> Action:
    return Action("guess", {"number": number})


# --- number_guess ----------------------------------------------------------------------------------------


def test_first_guess_correct_earns_95_and_completes():
    harness = NumberGuessHarness()
    asyncio.run(harness.reset(7))
    result = asyncio.run(harness.step("guess", number=harness.secret))
    assert result.reward == 95
    assert harness.status == HarnessStatus.COMPLETED
    assert result.observation.done and result.observation.available_actions == []
    assert harness.get_stats().success


@pytest.mark.parametrize("wrong_guesses", range(10))
def test_correct_kth_guess_earns_100_minus_5k(wrong_guesses):
    harness = NumberGuessHarness()
    asyncio.run(harness.reset(3))
    wrong = [guess(n) for n in range(1, 101) if n != harness.secret][:wrong_guesses]
    results = asyncio.run(play(harness, wrong + [guess(harness.secret)], seed=3))
    assert [r.reward for r in results[:-1]] == [-1] * wrong_guesses
    k = wrong_guesses + 1
    assert results[-1].reward == 100 - 5 * k
    assert harness.status == HarnessStatus.COMPLETED
    assert harness.episode_reward == 100 - 5 * k - wrong_guesses


def test_wrong_guesses_cost_one_and_hint_direction():
    harness = NumberGuessHarness()
    seed = 0
    while asyncio.run(harness.reset(seed)) and harness.secret in (1, 100):  # need room on both sides
        seed += 1
    low, high = asyncio.run(play(harness, [guess(harness.secret - 1), guess(harness.secret + 1)], seed=seed))
    assert (low.reward, low.observation.metadata["hint"]) == (-1, "Too low")
    assert (high.reward, high.observation.metadata["hint"]) == (-1, "Too high")
    assert "Too low" in low.observation.content and "Too high" in high.observation.content
    assert harness.status == HarnessStatus.ACTIVE and harness.current_step == 2


def test_ten_wrong_guesses_fail_and_the_episode_is_over():
    harness = NumberGuessHarness()
    asyncio.run(harness.reset(11))
    wrong = [guess(n) for n in range(1, 101) if n != harness.secret][:10]
    results = asyncio.run(play(harness, wrong, seed=11))
    assert harness.status == HarnessStatus.FAILED and results[-1].observation.done
    assert str(harness.secret) in results[-1].observation.content  # the answer is revealed
    after = asyncio.run(harness.step("guess", number=harness.secret))
    assert not after.step_used and harness.current_step == 10 and harness.episode_reward == -10


@pytest.mark.parametrize(
    "arguments",
    [{"number": 0}, {"number": 101}, {"number": -5}, {"number": "50"}, {"number": 50.5}, {"number": None}, {},
     {"number": 50, "extra": 1}],
)
def test_invalid_guess_is_refused_and_costs_no_step(arguments):
    harness = NumberGuessHarness()
    asyncio.run(harness.reset(0))
    result = asyncio.run(harness.step("guess", **arguments))
    assert not result.success and not result.step_used and result.error
    assert result.observation.content.startswith("Error:")
    assert harness.current_step == 0 and harness.episode_reward == 0 and harness.status == HarnessStatus.ACTIVE


def test_unknown_action_is_refused_and_names_the_available_ones():
    harness = NumberGuessHarness()
    asyncio.run(harness.reset(0))
    result = asyncio.run(harness.step("shout", number=3))
    assert not result.step_used and "guess" in result.error and harness.current_step == 0


def test_step_before_reset_is_refused():
    result = asyncio.run(NumberGuessHarness().step("guess", number=50))
    assert not result.step_used and "reset" in result.error


def test_same_seed_same_secret_and_seeds_differ():
    def secret(seed: int) -> int:
        harness = NumberGuessHarness()
        asyncio.run(harness.reset(seed))
        return harness.secret

    assert [secret(s) for s in range(20)] == [secret(s) for s in range(20)]
    assert len({secret(s) for s in range(20)}) > 10


def test_show_range_states_the_range_the_hints_leave_open():
    harness = make_harness("number_guess", show_range=True)
    seed = 0
    while asyncio.run(harness.reset(seed)) and not 30 < harness.secret < 70:  # room for both hints below
        seed += 1
    secret = harness.secret
    low, high, outside = asyncio.run(play(harness, [guess(20), guess(80), guess(10)], seed=seed))
    assert low.observation.content == "Too low. The number is between 21 and 100. Guesses left: 9."
    assert high.observation.content == "Too high. The number is between 21 and 79. Guesses left: 8."
    assert outside.observation.content == "Too low. The number is between 21 and 79. Guesses left: 7."
    assert (low.reward, high.reward, outside.reward) == (-1, -1, -1)
    assert low.observation.metadata["hint"] == "Too low" and high.observation.metadata["hint"] == "Too high"
    correct = asyncio.run(harness.step("guess", number=secret))
    assert correct.reward == 80 and harness.status == HarnessStatus.COMPLETED


def test_show_range_keeps_the_last_guess_text_and_is_off_by_default():
    shown, plain = NumberGuessHarness(show_range=True), NumberGuessHarness()
    seed = 0
    while asyncio.run(shown.reset(seed)) and shown.secret <= 10:  # ten guesses 1..10, all too low
        seed += 1
    results = asyncio.run(play(shown, [guess(n) for n in range(1, 11)], seed=seed))
    assert results[-2].observation.content == "Too low. The number is between 10 and 100. Guesses left: 1."
    assert results[-1].observation.content == f"Too low. 10 was your last guess; the number was {shown.secret}."
    first = asyncio.run(play(plain, [guess(1)], seed=seed))[0]
    assert first.observation.content == "Too low. 1 is not the number. Guesses left: 9."


def test_timeout_ends_the_episode_with_status_timeout():
    harness = NumberGuessHarness(timeout_seconds=0.01)

    async def late_guess() -> ActionResult:
        await harness.reset(0)
        await asyncio.sleep(0.05)
        return await harness.step("guess", number=50)

    result = asyncio.run(late_guess())
    assert harness.status == HarnessStatus.TIMEOUT and result.observation.done and not result.step_used
    assert asyncio.run(harness.get_observation()).done
    assert not harness.get_stats().success


# --- the base class's limits and error handling ----------------------------------------------------------


def test_max_steps_is_enforced_for_a_harness_that_never_ends():
    harness = CountingHarness(max_steps=3)
    results = asyncio.run(play(harness, [Action("tick")] * 4))
    assert [r.step_used for r in results] == [True, True, True, False]
    assert harness.status == HarnessStatus.FAILED and harness.current_step == 3 and harness.episode_reward == 3
    assert results[2].observation.metadata["status"] == "failed"


def test_harness_exception_ends_the_episode_with_status_error():
    harness = ExplodingHarness()
    (result,) = asyncio.run(play(harness, [Action("tick")]))
    assert harness.status == HarnessStatus.ERROR and result.observation.done
    assert "RuntimeError: boom" in result.error
    assert not asyncio.run(harness.step("tick")).step_used


# --- text_adventure --------------------------------------------------------------------------------------


def test_best_path_takes_6_steps_and_earns_125():
    harness = TextAdventureHarness()
    results = asyncio.run(play(harness, BEST_PATH))
    # The second hallway visit earns nothing: only a first entry is rewarded.
    assert [r.reward for r in results] == [5, 5, 10, 0, 5, 100]
    assert harness.status == HarnessStatus.COMPLETED and harness.current_step == 6 and harness.episode_reward == 125


def test_no_shorter_path_exists():
    """Breadth-first search over every action from every reachable state: the treasure is 6 steps away."""

    async def shortest() -> int:
        root = TextAdventureHarness()
        await root.reset(0)
        frontier, seen = [root], {root.numeric_observation().tobytes()}
        for depth in range(1, 10):
            next_frontier = []
            for state in frontier:
                for action in NUMERIC_ACTIONS:
                    child = copy.deepcopy(state)
                    await child.step(action.name, **action.arguments)
                    if child.status == HarnessStatus.COMPLETED:
                        return depth
                    key = child.numeric_observation().tobytes()
                    if key not in seen:
                        seen.add(key)
                        next_frontier.append(child)
            frontier = next_frontier
        raise AssertionError("no path to the treasure")

    assert asyncio.run(shortest()) == 6


def test_moves_cannot_be_farmed():
    harness = TextAdventureHarness()
    north, south = Action("go", {"direction": "north"}), Action("go", {"direction": "south"})
    results = asyncio.run(play(harness, [north, south] * 10))
    assert [r.reward for r in results] == [5] + [0] * 19
    assert harness.episode_reward == 5


def test_locked_door_needs_the_key_and_costs_a_step():
    harness = TextAdventureHarness()
    results = asyncio.run(play(harness, [Action("go", {"direction": "north"}), Action("go", {"direction": "east"})]))
    assert results[1].reward == 0 and results[1].step_used and not results[1].success
    assert "locked" in results[1].observation.content and harness.room == "hallway"


def test_in_game_mistakes_cost_a_step_and_schema_errors_do_not():
    harness = TextAdventureHarness()
    no_exit, missing_item, bad_direction, bad_item = asyncio.run(play(harness, [
        Action("go", {"direction": "south"}),
        Action("take", {"item": "key"}),
        Action("go", {"direction": "up"}),
        Action("take", {"item": "sword"}),
    ]))
    assert no_exit.step_used and missing_item.step_used and no_exit.reward == missing_item.reward == 0
    assert not bad_direction.step_used and not bad_item.step_used
    assert harness.current_step == 2


def test_fifty_steps_fail_the_episode():
    harness = TextAdventureHarness()
    results = asyncio.run(play(harness, [Action("inventory")] * 51))
    assert harness.status == HarnessStatus.FAILED and results[49].observation.done
    assert not results[50].step_used and harness.current_step == 50


def test_inventory_lists_what_is_carried():
    harness = TextAdventureHarness()
    results = asyncio.run(play(harness, BEST_PATH[:3] + [Action("inventory")]))
    assert results[-1].observation.metadata["inventory"] == ["key"] and "key" in results[-1].observation.content


def test_same_seed_same_episode():
    def transcript(seed: int) -> list[str]:
        harness = TextAdventureHarness()
        actions = [NUMERIC_ACTIONS[i] for i in random.Random(5).choices(range(len(NUMERIC_ACTIONS)), k=30)]
        results = asyncio.run(play(harness, actions, seed=seed))
        return [json.dumps(r.observation.to_dict(), default=str) for r in results]

    assert transcript(1) == transcript(1)
    assert transcript(1) == transcript(2)  # documented: the seed changes nothing in this harness


# --- experts and the random policy -----------------------------------------------------------------------


def test_binary_search_finds_every_secret_within_7_guesses():
    guesses_needed = []
    for secret in range(1, 101):
        harness, expert = NumberGuessHarness(), BinarySearchExpert()
        observation = asyncio.run(harness.reset(0))
        harness.secret = secret
        expert.reset()
        while not harness.is_done():
            action = expert.act(observation)
            observation = asyncio.run(harness.step(action.name, **action.arguments)).observation
        assert harness.status == HarnessStatus.COMPLETED, secret
        guesses_needed.append(harness.current_step)
    assert max(guesses_needed) <= 7


def test_shortest_path_expert_takes_the_best_path():
    harness, expert = TextAdventureHarness(), ShortestPathExpert()
    observation = asyncio.run(harness.reset(0))
    taken = []
    while not harness.is_done():
        taken.append(expert.act(observation))
        observation = asyncio.run(harness.step(taken[-1].name, **taken[-1].arguments)).observation
    assert taken == BEST_PATH and harness.episode_reward == 125


def test_random_policy_is_reproducible_and_only_draws_valid_arguments():
    harness = TextAdventureHarness()
    observation = asyncio.run(harness.reset(0))
    first, second = RandomPolicy(), RandomPolicy()
    first.reset(4)
    second.reset(4)
    for _ in range(20):
        action = first.act(observation)
        assert action == second.act(observation)
        result = asyncio.run(harness.step(action.name, **action.arguments))
        assert result.step_used  # enum values only: never refused
        observation = result.observation


def test_random_policy_rejects_a_parameter_it_cannot_sample():
    observation = Observation("x", available_actions=[ActionDefinition("say", "", {"text": {"type": "string"}})])
    with pytest.raises(ValueError, match="'text'"):
        RandomPolicy().act(observation)


# --- registry --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls", [("number_guess", NumberGuessHarness), ("text_adventure", TextAdventureHarness)])
def test_builtin_harnesses_by_name(name, cls):
    harness = make_harness(name, max_steps=4)
    assert type(harness) is cls and harness.name == name and harness.max_steps == 4


def test_user_harness_from_module_and_class():
    harness = make_harness("tests.test_harnesses:CountingHarness", reward_per_tick=2.0)
    assert isinstance(harness, CountingHarness) and harness.reward_per_tick == 2.0


@pytest.mark.parametrize(
    "spec,message",
    [
        ("chess", "unknown harness 'chess'"),
        ("no_such_module_xyz:Game", "cannot import module 'no_such_module_xyz'"),
        ("tests.test_harnesses:Missing", "has no attribute 'Missing'"),
        ("tests.test_harnesses:NotAHarness", "not a subclass"),
        ("rollout.harnesses.base:BaseHarness", "cannot construct"),  # abstract
        (":Game", "not of the form"),
        ("tests.test_harnesses:", "not of the form"),
    ],
)
def test_bad_harness_spec_is_a_clear_error(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        make_harness(spec)
    assert repr(spec) in str(error.value)


def test_unknown_constructor_argument_is_a_clear_error():
    with pytest.raises(ValueError, match="'number_guess'.*colour"):
        make_harness("number_guess", colour="red")


def test_experts_and_policies_by_name():
    assert isinstance(make_expert("number_guess"), BinarySearchExpert)
    assert isinstance(make_expert("text_adventure"), ShortestPathExpert)
    assert isinstance(make_policy("number_guess", "random"), RandomPolicy)
    assert isinstance(make_policy("tests.test_harnesses:CountingHarness", "random"), RandomPolicy)
    assert isinstance(make_policy("number_guess", "tests.test_harnesses:InvalidActionPolicy"), InvalidActionPolicy)
    with pytest.raises(ValueError, match="no policy 'genius'.*available expert, noisy, random"):
        make_policy("number_guess", "genius")
    with pytest.raises(ValueError, match="no policy 'expert'"):
        make_expert("tests.test_harnesses:CountingHarness")


# --- evaluation ------------------------------------------------------------------------------------------


def test_evaluate_number_guess_expert_always_wins_within_7():
    report = evaluate("number_guess", "expert", episodes=200, seed=0)
    assert report.success_rate == 1.0 and report.metrics["max_steps"] <= 7
    # Solved with guess k: 100 - 5k, and -1 for each of the k - 1 wrong guesses before it.
    assert report.mean_reward == pytest.approx(101 - 6 * report.mean_steps)
    assert report == evaluate("number_guess", "expert", episodes=200, seed=0)


def test_evaluate_random_is_worse_than_expert():
    expert = evaluate("number_guess", "expert", episodes=100, seed=1)
    chance = evaluate("number_guess", "random", episodes=100, seed=1)
    assert chance.success_rate < expert.success_rate and chance.mean_reward < expert.mean_reward
    assert chance.metrics["status_completed"] + chance.metrics["status_failed"] == pytest.approx(1.0)


def test_evaluate_text_adventure_expert():
    report = evaluate("text_adventure", "expert", episodes=5, seed=0)
    assert (report.success_rate, report.mean_steps, report.mean_reward) == (1.0, 6.0, 125.0)


def test_evaluate_reports_the_harness_own_figures():
    report = evaluate("tests.test_harnesses:CountingHarness", "random", episodes=3, seed=0)
    assert report.metrics["mean_ticks_squared"] == 9.0 and report.metrics["status_failed"] == 1.0


def test_evaluate_aborts_a_policy_stuck_on_refused_actions():
    report = evaluate("number_guess", "tests.test_harnesses:InvalidActionPolicy", episodes=2, seed=0)
    assert report.metrics["status_aborted"] == 1.0 and report.success_rate == 0.0 and report.mean_steps == 0


def test_evaluate_needs_at_least_one_episode():
    with pytest.raises(ValueError, match="episodes"):
        evaluate("number_guess", "expert", episodes=0, seed=0)
