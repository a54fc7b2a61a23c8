"""Build a tiny causal LM in Hugging Face format, so everything runs with no hub download.

The model is a Qwen2-architecture decoder with random weights and a byte-level BPE tokenizer trained with the
`tokenizers` library on the harnesses' own text, saved with `save_pretrained` so vLLM and transformers load
it exactly like a user's real checkpoint. head_dim is 64 because vLLM's CPU attention refuses smaller ones.
Same spec and corpus -> byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rollout.models.cache import build_once

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, "<tool_call>", "</tool_call>"]

# ChatML, the format of Qwen chat models: a model trained on this tiny one's template reads like a real one.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


class TinyModelSpec(BaseModel):
    """Architecture of the locally built model. head_dim = hidden_size / num_attention_heads must be >= 32
    (64 is what vLLM's CPU attention is known to accept)."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size, special tokens included")
    hidden_size: int = Field(128, ge=64)
    intermediate_size: int = Field(512, ge=64)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(2, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(4096, ge=256)
    number_tokens: int = Field(
        100, ge=0, description="the integers 1..N are added as whole tokens (number_guess plays 1..100)"
    )
    seed: int = 0

    def fingerprint(self, corpus: list[str]) -> str:
        digest = hashlib.sha256(self.model_dump_json().encode())
        for line in corpus:
            digest.update(line.encode())
        return digest.hexdigest()[:16]


def train_tokenizer(corpus: Iterable[str], vocab_size: int, number_tokens: int = 0) -> PreTrainedTokenizerFast:
    """Byte-level BPE: any text encodes (no unknown tokens), frequent harness words become single tokens.

    transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer, whose pre-tokenizer splits numbers into
    single digits whatever BPE learned, so 1..number_tokens are added tokens (matched before pre-tokenizing):
    "between 51 and 100" then shows 51 and 100 as one token each, which a tiny model can halve."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    wrapped.add_tokens([AddedToken(str(n), normalized=False) for n in range(1, number_tokens + 1)])
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec, corpus: Iterable[str]) -> Path:
    """Write tokenizer + randomly initialised Qwen2 model to `out_dir` (created; must not exist)."""
    out_dir = Path(out_dir)
    if spec.hidden_size % spec.num_attention_heads:
        raise ValueError("hidden_size must be a multiple of num_attention_heads")
    if spec.hidden_size // spec.num_attention_heads < 32:
        raise ValueError("head_dim (hidden_size / num_attention_heads) must be >= 32 for vLLM's CPU attention")
    tokenizer = train_tokenizer(corpus, spec.vocab_size, spec.number_tokens)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=end_id,
        eos_token_id=end_id,
        pad_token_id=pad_id,
    )
    config.dtype = "float32"
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = pad_id
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "terrarium_spec.json").write_text(json.dumps(spec.model_dump(), indent=2))
    return out_dir


def ensure_tiny_model(cache_dir: str | Path, spec: TinyModelSpec, corpus: Iterable[str]) -> Path:
    """The cached model for (spec, corpus), built on first use."""
    corpus = list(corpus)
    target = Path(cache_dir).expanduser() / f"tiny-qwen2-{spec.fingerprint(corpus)}"
    return build_once(target, lambda out: build_tiny_model(out, spec, corpus))
