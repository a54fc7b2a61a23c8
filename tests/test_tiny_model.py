"""`terrarium init-model`: a deterministic tiny HF model that transformers loads and tokenizes chat with."""

from __future__ import annotations

import hashlib

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from cluster.cli import main
from rollout.chat import ChatRenderer


def digest(directory) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(directory.iterdir())}


def test_init_model_is_deterministic_for_a_seed(tmp_path):
    assert main(["init-model", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert main(["init-model", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert main(["init-model", str(tmp_path / "c"), "--seed", "4"]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["model.safetensors"] != digest(tmp_path / "c")["model.safetensors"]
    assert main(["init-model", str(tmp_path / "a")]) == 2  # refuses to overwrite


def test_model_loads_with_supported_head_dim_and_chat_template(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.hidden_size // config.num_attention_heads == 64
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "guess 50"}], tokenize=False)
    assert text == "<|im_start|>user\nguess 50<|im_end|>\n"
    # harness words were learned as tokens: a common phrase takes few tokens
    assert len(tokenizer.encode("Too low")) <= 3


def test_observation_ids_continue_the_template_exactly(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    renderer = ChatRenderer(tokenizer)
    assistant = tokenizer.encode("guess 50", add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = renderer.first_prompt("SYS", "OBS1") + assistant + renderer.observation_ids("Too low")
    expected = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": "OBS1"},
            {"role": "assistant", "content": "guess 50"},
            {"role": "user", "content": "Too low"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(ids) == expected


def test_first_prompt_cache_returns_fresh_equal_ids(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    renderer = ChatRenderer(tokenizer)
    first = renderer.first_prompt("SYS", "OBS1")
    first.append(-1)  # an episode extends its own list; the cached prompt must not change
    again = renderer.first_prompt("SYS", "OBS1")
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": "OBS1"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(again) == expected and again == first[:-1]
    assert renderer.first_prompt("SYS", "OBS2") != again
