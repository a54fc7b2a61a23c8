"""Chat rendering on token ids: the first prompt through the model's chat template, every later observation
as the exact token ids the template would put between the model's end-of-turn token and its next turn.

Generated ids are never decoded and re-encoded, so the learner scores exactly what the engine sampled.
Works for any template whose turns are "header + content + end-of-turn" (ChatML/Qwen, Llama 3, ...).
"""

from __future__ import annotations

import json

from transformers import PreTrainedTokenizerBase

from rollout.harnesses.base import ActionDefinition, BaseHarness

_SENTINEL = "\u2063OBSERVATION\u2063"
FIRST_PROMPT_CACHE_SIZE = 256  # distinct first prompts kept per renderer: ~10 MB of 1000-token prompts


def system_prompt(harness: BaseHarness, actions: list[ActionDefinition]) -> str:
    lines = [harness.description, "", "Actions (one per turn):"]
    for action in actions:
        lines.append(f"- {action.name}: {action.description} arguments: {json.dumps(action.json_schema()['properties'])}")
    lines += [
        "",
        'Reply with a tool call, e.g. <tool_call>{"name": "ACTION", "arguments": {...}}</tool_call>, '
        "or a plain command: the action name followed by its arguments.",
    ]
    return "\n".join(lines)


class ChatRenderer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.end_of_turn_id = tokenizer.eos_token_id
        self._first_prompts: dict[tuple[str, str], list[int]] = {}
        probe = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ]
        before = tokenizer.apply_chat_template(probe, tokenize=False)
        after = tokenizer.apply_chat_template(
            probe + [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        end_of_turn = tokenizer.decode([self.end_of_turn_id])
        tail = before[before.rindex("A") + 1 :]  # what the template writes after an assistant message
        if not after.startswith(before) or not tail.startswith(end_of_turn):
            raise ValueError(
                "the model's chat template does not end assistant turns with its eos token "
                f"({end_of_turn!r}); token-level multi-turn rendering needs that"
            )
        self._observation_head, self._observation_tail = (tail[len(end_of_turn) :] + after[len(before) :]).split(
            _SENTINEL
        )

    def first_prompt(self, system: str, observation: str) -> list[int]:
        """The template's ids for a system prompt and a first observation. Cached: every episode of a group
        starts from the same seed, hence the same prompt, and rendering a long prompt costs milliseconds of
        the CPU the engine needs."""
        key = (system, observation)
        if key not in self._first_prompts:
            if len(self._first_prompts) >= FIRST_PROMPT_CACHE_SIZE:
                self._first_prompts.clear()
            messages = [{"role": "system", "content": system}, {"role": "user", "content": observation}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            self._first_prompts[key] = self._encode(text)
        return list(self._first_prompts[key])

    def observation_ids(self, observation: str) -> list[int]:
        """Ids to append after the model's end-of-turn token: the user turn and the next assistant header."""
        return self._encode(self._observation_head + observation + self._observation_tail)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)
