"""Runs inside every vLLM worker process (vLLM's `worker_extension_cls`): receives new policy weights, either
a full state dict or a LoRA adapter.

With tensor parallelism an engine has one worker per rank, and each takes its own shard of the full state
dict (vLLM's weight loaders narrow every tensor to the rank; vLLM's LoRA layers slice the adapters the same
way). The engine calls every rank twice (collective_rpc): a `stage_*` method unpacks and checks the payload,
and only when every rank has staged it does `commit_policy_weights` load it, so a payload any rank refuses
leaves all of them on the old weights.

Named `*_policy_weights`, not `update_weights`: vLLM's worker already has a method of that name.
`reload_weights` goes through vLLM's own loader, which repacks weights the way the CPU and GPU kernels
expect; a plain `model.load_weights` breaks after vLLM has repacked them. A reload that fails halfway leaves
vLLM unable to reload again, hence the check of names and shapes against the served checkpoint first.

A LoRA adapter arrives as peft's two files (LoraAdapter). Each rank writes them into the directory the engine
names, on its own node (no shared filesystem), and checks them the same way; the commit is vLLM's own
`add_lora`, and the adapter directory of the previous version is removed after it.

These methods report failures in their reply instead of raising: vLLM's executor stops reading replies at the
first rank that raised, and the other ranks' replies would then answer its next call.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from safetensors import safe_open

ADAPTER_CONFIG = "adapter_config.json"  # peft's (and vLLM's) file names of a LoRA adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# peft's name of an adapter weight: the adapted module's name in the base model, then lora_A (r x in) or
# lora_B (out x r)
ADAPTER_WEIGHT_NAME = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight")


class LoraAdapter(BaseModel):
    """A LoRA policy as the engines receive it: the bytes of peft's two files, which a LoRA checkpoint's
    model/ directory also holds. The frozen base weights are the engine's own and never travel."""

    model_config = ConfigDict(frozen=True, strict=True)

    config: bytes  # adapter_config.json
    weights: bytes  # adapter_model.safetensors

    @property
    def num_bytes(self) -> int:
        return len(self.config) + len(self.weights)


@dataclass
class _Staged:
    """What a rank staged for the commit: a full state dict, or an adapter written to lora_request's path."""

    policy_version: int
    state_dict: dict[str, torch.Tensor] | None = None
    lora_request: Any = None  # vllm.lora.request.LoRARequest


class WeightReceiver:
    def stage_policy_weights(self, payload: bytes, policy_version: int) -> dict[str, Any]:
        """Unpack and check the weights; keep them for the commit. Nothing served changes."""
        self.drop_policy_weights()
        try:
            state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            self._check_policy_weights(state_dict)
        except Exception as exc:  # reported, see the module doc
            return self._policy_reply(policy_version, f"{type(exc).__name__}: {exc}")
        self._staged_policy_weights = _Staged(policy_version, state_dict=state_dict)
        return self._policy_reply(policy_version, None)

    def stage_policy_adapter(
        self, config: bytes, weights: bytes, lora_name: str, lora_int_id: int, lora_path: str, policy_version: int
    ) -> dict[str, Any]:
        """Write a LoRA adapter's files into `lora_path` on this rank's node and check them: every weight
        against the served checkpoint's layer, then vLLM's own parse (rank limit, supported modules). Nothing
        served changes; a refused adapter's files are removed."""
        from vllm.lora.request import LoRARequest

        self.drop_policy_weights()
        request = LoRARequest(lora_name, lora_int_id, lora_path)
        try:
            write_adapter(Path(lora_path), config, weights)
            self._check_policy_adapter(Path(lora_path))
            self.model_runner.lora_manager._load_adapter(request)  # vLLM's parse and checks; add_lora repeats it
        except Exception as exc:
            shutil.rmtree(lora_path, ignore_errors=True)
            return self._policy_reply(policy_version, f"{type(exc).__name__}: {exc}")
        self._staged_policy_weights = _Staged(policy_version, lora_request=request)
        return self._policy_reply(policy_version, None)

    def commit_policy_weights(self, policy_version: int) -> dict[str, Any]:
        """Load what was staged into this rank: the weights into its shard of the model, or the adapter into
        vLLM's LoRA manager (which then drops the previous one: the engine keeps one adapter)."""
        staged, self._staged_policy_weights = getattr(self, "_staged_policy_weights", None), None
        if staged is None or staged.policy_version != policy_version:
            return self._policy_reply(policy_version, f"no weights staged for policy version {policy_version}")
        try:
            if staged.lora_request is None:
                self.model_runner.reload_weights(weights_iterator=iter(staged.state_dict.items()))
            else:
                self.add_lora(staged.lora_request)
        except Exception as exc:
            return self._policy_reply(policy_version, f"{type(exc).__name__}: {exc}")
        if staged.lora_request is not None:  # the previous adapter's files are no longer needed
            previous = getattr(self, "_served_adapter_path", None)
            self._served_adapter_path = staged.lora_request.lora_path
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
        self._loaded_policy_version = policy_version
        return self._policy_reply(policy_version, None)

    def check_policy_adapter(self, lora_path: str) -> dict[str, Any]:
        """Check the adapter files in `lora_path` against the served checkpoint, as stage_policy_adapter does,
        loading nothing: for a server that loads adapters through vLLM's own registry (serve.llm_server)."""
        try:
            self._check_policy_adapter(Path(lora_path))
        except Exception as exc:
            return self._policy_reply(None, f"{type(exc).__name__}: {exc}")
        return self._policy_reply(None, None)

    def drop_policy_weights(self) -> dict[str, Any]:
        """Forget what was staged (another rank refused it), removing a staged adapter's files."""
        staged, self._staged_policy_weights = getattr(self, "_staged_policy_weights", None), None
        if staged is not None and staged.lora_request is not None:
            shutil.rmtree(staged.lora_request.lora_path, ignore_errors=True)
        return self._policy_reply(None, None)

    def loaded_policy_version(self) -> dict[str, Any]:
        """The policy version this rank last loaded (None: the checkpoint it started with)."""
        return self._policy_reply(getattr(self, "_loaded_policy_version", None), None)

    def _policy_reply(self, policy_version: int | None, error: str | None) -> dict[str, Any]:
        return {"rank": self.rank, "policy_version": policy_version, "error": error}

    def _check_policy_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        expected = self._checkpoint_shapes()
        tied = getattr(self.model_config.hf_config, "tie_word_embeddings", False)
        problems = []
        for name, tensor in state_dict.items():
            if name not in expected:
                if not (tied and name == "lm_head.weight"):  # a tied head is saved under the embedding's name
                    problems.append(f"unknown weight {name}")
            elif tuple(tensor.shape) != expected[name]:
                problems.append(f"{name} has shape {tuple(tensor.shape)}, the served model {expected[name]}")
        if problems:
            raise ValueError(f"policy weights do not fit the served model: {'; '.join(problems[:5])}")

    def _check_policy_adapter(self, path: Path) -> None:
        """Every adapted module is a linear layer of the served checkpoint with both factors, lora_A (r x in)
        and lora_B (out x r). vLLM itself checks module kinds, not layer names or input sizes."""
        json.loads((path / ADAPTER_CONFIG).read_text())  # a readable config (vLLM checks its fields)
        with safe_open(path / ADAPTER_WEIGHTS, "pt") as adapter:
            shapes = {name: tuple(adapter.get_slice(name).get_shape()) for name in adapter.keys()}
        expected = self._checkpoint_shapes()
        problems, factors = [], {}
        for name, shape in shapes.items():
            match = ADAPTER_WEIGHT_NAME.fullmatch(name)
            if match is None:
                problems.append(f"unknown adapter weight {name}")
            elif len(expected.get(f"{match['module']}.weight", ())) != 2 or len(shape) != 2:
                problems.append(f"{name}: the served model has no linear layer {match['module']}")
            else:
                factors.setdefault(match["module"], {})[match["factor"]] = shape
        for module, pair in factors.items():
            out_features, in_features = expected[f"{module}.weight"]
            if pair.keys() != {"A", "B"}:
                problems.append(f"{module} has lora_{''.join(pair)} only")
            elif pair["A"][1] != in_features or pair["B"][0] != out_features or pair["A"][0] != pair["B"][1]:
                problems.append(
                    f"{module}: lora_A {pair['A']} and lora_B {pair['B']} do not fit its weight "
                    f"({out_features}, {in_features})"
                )
        if not shapes:
            problems.append("no adapter weights")
        if problems:
            raise ValueError(f"LoRA adapter does not fit the served model: {'; '.join(problems[:5])}")

    def _checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        if not hasattr(self, "_policy_weight_shapes"):
            shapes = {}
            for file in sorted(Path(self.model_config.model).glob("*.safetensors")):
                with safe_open(file, "pt") as checkpoint:
                    for name in checkpoint.keys():
                        shapes[name] = tuple(checkpoint.get_slice(name).get_shape())
            self._policy_weight_shapes = shapes
        return self._policy_weight_shapes


def write_adapter(path: Path, config: bytes, weights: bytes) -> None:
    """The adapter's two files, each written under a temporary name and renamed: ranks sharing a node write
    the same bytes to the same path, and a reader only ever sees whole files."""
    path.mkdir(parents=True, exist_ok=True)
    for name, data in ((ADAPTER_CONFIG, config), (ADAPTER_WEIGHTS, weights)):
        temporary = path / f".{name}.{os.getpid()}"
        temporary.write_bytes(data)
        os.replace(temporary, path / name)
