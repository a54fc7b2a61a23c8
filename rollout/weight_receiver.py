"""Runs inside every vLLM worker process (vLLM's `worker_extension_cls`): receives new policy weights.

Named `load_policy_weights`, not `update_weights`: vLLM's worker already has a method of that name.
`reload_weights` goes through vLLM's own loader, which repacks weights the way the CPU and GPU kernels
expect; a plain `model.load_weights` breaks after vLLM has repacked them.
"""

from __future__ import annotations

import io

import torch


class WeightReceiver:
    def load_policy_weights(self, payload: bytes) -> int:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        self.model_runner.reload_weights(weights_iterator=iter(state_dict.items()))
        return len(state_dict)
