"""Where the policy's weights come from: a local Hugging Face directory, or the tiny model built on first use.

A user's real model (a local Qwen checkpoint, say) and the tiny test model take the same path from here on:
vLLM and transformers load both from a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rollout.models.corpus import harness_corpus
from rollout.models.tiny_model import TinyModelSpec, ensure_tiny_model


def default_cache_dir() -> str:
    return os.environ.get("TERRARIUM_CACHE", "~/.cache/terrarium")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # a local HF model directory; None builds the tiny model from `tiny`
    tiny: TinyModelSpec = TinyModelSpec()


def resolve_model_path(config: ModelConfig) -> Path:
    if config.path is not None:
        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.path {config.path}: no config.json there; it must be a local Hugging Face model "
                "directory (no hub downloads are made)"
            )
        return path
    return ensure_tiny_model(Path(default_cache_dir()) / "models", config.tiny, harness_corpus())
