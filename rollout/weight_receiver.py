"""Runs inside every vLLM worker process (vLLM's `worker_extension_cls`): receives new policy weights.

With tensor parallelism an engine has one worker per rank, and each takes its own shard of the full state
dict (vLLM's weight loaders narrow every tensor to the rank). The engine calls every rank twice
(collective_rpc): `stage_policy_weights` unpacks and checks the payload, and only when every rank has staged
it does `commit_policy_weights` load it, so a payload any rank refuses leaves all of them on the old weights.

Named `*_policy_weights`, not `update_weights`: vLLM's worker already has a method of that name.
`reload_weights` goes through vLLM's own loader, which repacks weights the way the CPU and GPU kernels
expect; a plain `model.load_weights` breaks after vLLM has repacked them. A reload that fails halfway leaves
vLLM unable to reload again, hence the check of names and shapes against the served checkpoint first.

These methods report failures in their reply instead of raising: vLLM's executor stops reading replies at the
first rank that raised, and the other ranks' replies would then answer its next call.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open


class WeightReceiver:
    def stage_policy_weights(self, payload: bytes, policy_version: int) -> dict[str, Any]:
        """Unpack and check the weights; keep them for the commit. Nothing served changes."""
        self._staged_policy_weights = None
        try:
            state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            self._check_policy_weights(state_dict)
        except Exception as exc:  # reported, see the module doc
            return self._policy_reply(policy_version, f"{type(exc).__name__}: {exc}")
        self._staged_policy_weights = (policy_version, state_dict)
        return self._policy_reply(policy_version, None)

    def commit_policy_weights(self, policy_version: int) -> dict[str, Any]:
        """Load the staged weights into this rank's shard of the model."""
        staged, self._staged_policy_weights = getattr(self, "_staged_policy_weights", None), None
        if staged is None or staged[0] != policy_version:
            return self._policy_reply(policy_version, f"no weights staged for policy version {policy_version}")
        try:
            self.model_runner.reload_weights(weights_iterator=iter(staged[1].items()))
        except Exception as exc:
            return self._policy_reply(policy_version, f"{type(exc).__name__}: {exc}")
        self._loaded_policy_version = policy_version
        return self._policy_reply(policy_version, None)

    def drop_policy_weights(self) -> dict[str, Any]:
        """Forget staged weights (another rank refused them)."""
        self._staged_policy_weights = None
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

    def _checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        if not hasattr(self, "_policy_weight_shapes"):
            shapes = {}
            for file in sorted(Path(self.model_config.model).glob("*.safetensors")):
                with safe_open(file, "pt") as checkpoint:
                    for name in checkpoint.keys():
                        shapes[name] = tuple(checkpoint.get_slice(name).get_shape())
            self._policy_weight_shapes = shapes
        return self._policy_weight_shapes
