"""LoRA for the learner (peft): only low-rank adapters train, the base weights stay frozen.

Why: RL on a real model needs the optimizer state of the trained parameters only (AdamW keeps two fp32 copies
of each), and a checkpoint is then the adapters plus a pointer to the base (peft's adapter_config.json names
the base directory) instead of the whole model.

Engines get the adapters only (`lora_adapter`: peft's files, as a checkpoint holds them), which vLLM's LoRA
support applies to the base it loaded (engine.lora_sync=adapter, the default), or the merged weights
(base + B @ A * alpha / rank, `merged_state_dict`) through the full weight sync to engines with LoRA off
(engine.lora_sync=merged). Either way the engine's logprobs equal the learner's.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from rollout.weight_receiver import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraAdapter

ADAPTER = "default"  # peft's name for a model's single adapter


class LoraConfig(BaseModel):
    """`learner.lora`: absent (null) trains every weight."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rank: int = Field(16, ge=1, description="r: the adapters' inner dimension")
    alpha: float = Field(32.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="on the adapters' input, during updates only")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="names of the linear layers that get adapters (Llama/Qwen2 names by default)",
    )


def apply_lora(model: torch.nn.Module, config: LoraConfig) -> torch.nn.Module:
    """Wrap `model` (a transformers causal LM) with fresh adapters; the base weights are frozen. The new
    B matrices are zero, so the wrapped model computes exactly what the base did."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. a target module name the model does not have
        raise ValueError(f"learner.lora: {exc}") from exc


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict (its own names) with every adapter's delta added, leaving `model`
    untouched (merge/unmerge in place would drift the frozen base by rounding)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged = {
        name.replace(".base_layer.", "."): tensor.detach()
        for name, tensor in base.state_dict().items()
        if ".lora_" not in name
    }
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
                key = f"{name}.weight"
                merged[key] = merged[key] + module.get_delta_weight(ADAPTER)
    return {name: tensor.cpu() for name, tensor in merged.items()}


def policy_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the engines serve: the full weights, merged when `model` trains adapters."""
    if is_lora(model):
        return merged_state_dict(model)
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def lora_adapter(model: torch.nn.Module) -> LoraAdapter:
    """The trained adapters as the engines load them: the files peft writes for a checkpoint."""
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory, safe_serialization=True)
        files = Path(directory)
        return LoraAdapter(config=(files / ADAPTER_CONFIG).read_bytes(), weights=(files / ADAPTER_WEIGHTS).read_bytes())


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_policy_model(model_dir: str | Path) -> torch.nn.Module:
    """A model directory, or a LoRA checkpoint's model/ (adapters plus a pointer to the base), as a float32
    model to train on: for adapters, the base that adapter_config.json names with the adapters on it,
    trainable. policy_state_dict then gives the engines the merged weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = adapter_base_dir(model_dir)
    if base_dir is None:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(model_dir), is_trainable=True)


def adapter_base_dir(model_dir: str | Path) -> Path | None:
    """The base model directory a LoRA checkpoint's adapters name; None for a full model directory."""
    from peft import PeftConfig

    if not is_adapter_dir(model_dir):
        return None
    base_dir = PeftConfig.from_pretrained(str(model_dir)).base_model_name_or_path
    if not base_dir or not (Path(base_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: its adapters' base model {base_dir!r} is not a model directory here")
    return Path(base_dir)


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path) -> None:
    """Put a checkpoint's adapter weights into `model` (wrapped with the same LoRA config), in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not is_lora(model):
        raise ValueError(f"{adapter_dir} holds LoRA adapters but learner.lora is not set")
    result = set_peft_model_state_dict(model, load_file(Path(adapter_dir) / ADAPTER_WEIGHTS))
    if result.unexpected_keys:
        raise ValueError(f"{adapter_dir}: adapters do not fit learner.lora ({result.unexpected_keys[:3]} ...)")


@contextlib.contextmanager
def adapter_dropout(model: torch.nn.Module) -> Iterator[None]:
    """Turn the adapters' dropout on for one update's forward and backward. The learner otherwise stays in
    eval mode, so scoring (old logprobs, policy_logprobs) is deterministic."""
    dropouts = [module for name, module in model.named_modules() if ".lora_dropout." in f"{name}."]
    for module in dropouts:
        module.train()
    try:
        yield
    finally:
        for module in dropouts:
            module.eval()
