"""Runs inside every vLLM worker process (vLLM's `worker_extension_cls`): receives new policy weights.

Named `load_policy_weights`, not `update_weights`: vLLM's worker already has a method of that name.
`reload_weights` goes through vLLM's own loader, which repacks weights the way the CPU and GPU kernels
expect; a plain `model.load_weights` breaks after vLLM has repacked them.

A reload that fails halfway leaves vLLM unable to reload again, so the names and shapes are checked against
the served checkpoint's before anything is touched.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from safetensors import safe_open


class WeightReceiver:
    def load_policy_weights(self, payload: bytes) -> int:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        self._check_policy_weights(state_dict)
        self.model_runner.reload_weights(weights_iterator=iter(state_dict.items()))
        return len(state_dict)

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
