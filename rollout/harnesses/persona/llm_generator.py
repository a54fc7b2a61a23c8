"""The sixth behaviour generator: a real language model writes the target's answers.

Why: the five template generators (rollout.harnesses.persona.generators) are written by people who also wrote
the policies; a model prompted with the target's traits writes text nobody here chose. The model (e.g.
SmolLM2-135M-Instruct, imported with `terrarium import-model`) runs on the project's vLLM engines
(rollout.engine); every text is cached in a Parquet dataset keyed by (persona id, observation index), so
fitting and judging never regenerate it and two runs read the same texts.

Use: `LLMGenerator(model_dir, cache_path)`; `prefill(personas, observations)` generates every missing text in
one batch on an engine it starts (needs a connected Ray); `observe` then reads the cache only, one of the
persona's cached texts at random (a persona with none is a KeyError naming it, never a silent template).
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rollout.harnesses.persona.analysis import analyze_response, convergence
from rollout.harnesses.persona.generators import QUERIES, FamilyPersona
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation

CACHE_SCHEMA = pa.schema([("persona", pa.string()), ("index", pa.int64()), ("query", pa.string()), ("response", pa.string())])
_DEGREES = ((0.15, "not especially {pos} or {neg}"), (0.4, "slightly {pole}"), (0.65, "fairly {pole}"),
            (0.85, "very {pole}"), (1.01, "extremely {pole}"))


def trait_prompt(target: AiProfile, query: str) -> str:
    """The instruction the model answers: the target's traits in words, then the user's question."""
    traits = []
    for axis in target.personality:
        size = abs(axis.value)
        template = next(text for bound, text in _DEGREES if size < bound)
        pole = axis.positive_pole if axis.value > 0 else axis.negative_pole
        traits.append(template.format(pole=pole, pos=axis.positive_pole, neg=axis.negative_pole))
    return (f"You are an assistant whose personality is: {', '.join(traits)}. Let these traits show in how you write, "
            f"without naming them.\n\nQuestion: {query}")


class LLMGenerator:
    name = "llm"

    def __init__(self, model_dir: str | Path, cache_path: str | Path) -> None:
        self.model_dir = str(model_dir)
        self.cache_path = Path(cache_path)
        self.texts: dict[tuple[str, int], tuple[str, str]] = {}
        if self.cache_path.is_file():
            table = pq.read_table(self.cache_path).to_pylist()
            self.texts = {(row["persona"], row["index"]): (row["query"], row["response"]) for row in table}

    def prefill(self, personas: list[FamilyPersona], observations: int, max_tokens: int = 160, seed: int = 0) -> int:
        """Generate every (persona, index < observations) text not cached yet; returns how many were written."""
        from transformers import AutoTokenizer

        from rollout.engine import EngineConfig, SamplingConfig, start_engines

        missing = [(p.target, i) for p in personas for i in range(observations) if (p.target.id, i) not in self.texts]
        if not missing:
            return 0
        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        (engine,) = start_engines(self.model_dir, EngineConfig(dtype="float32", max_model_len=1024))
        sampling = SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=max_tokens)
        stop = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

        async def write(target: AiProfile, index: int) -> tuple[str, int, str, str]:
            query = random.Random(f"{target.id}-{index}").choice(QUERIES)
            messages = [{"role": "user", "content": trait_prompt(target, query)}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompt = tokenizer.encode(text, add_special_tokens=False)
            generation = await engine.generate.remote(prompt, sampling, stop, seed + index)
            return target.id, index, query, tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip()

        async def write_all() -> list[tuple[str, int, str, str]]:
            return await asyncio.gather(*(write(target, index) for target, index in missing))

        rows = asyncio.run(write_all())
        for persona_id, index, query, response in rows:
            self.texts[(persona_id, index)] = (query, response)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        records = [{"persona": k[0], "index": k[1], "query": v[0], "response": v[1]} for k, v in sorted(self.texts.items())]
        temporary = self.cache_path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(records, schema=CACHE_SCHEMA), temporary)
        temporary.replace(self.cache_path)
        return len(rows)

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        """One of the target's cached texts, picked by `rng` (stateless: episodes may replay a persona)."""
        cached = sorted(index for persona, index in self.texts if persona == target.id)
        if not cached:
            raise KeyError(f"no cached LLM text for persona {target.id!r}: prefill() it first")
        query, response = self.texts[(target.id, rng.choice(cached))]
        sentences = max(1, response.count(".") + response.count("!") + response.count("?"))
        return BehaviorObservation(
            query=query, response=response, patterns=analyze_response(response).patterns,
            similarity_to_target=round(convergence(current, target), 6),
            confidence=round(1 - math.exp(-sentences / 8), 6),
        )
