"""One optimizer step, shared by the learner ranks (learner.group) and the served /train trainer
(learner.online_trainer): split into micro-batches, accumulate gradients, clip, and step AdamW only when the
gradient norm is finite (a non-finite step leaves the weights as they were and is counted by the caller).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn.parallel import DistributedDataParallel

from learner.batch import TrainBatch, collate, split_into_chunks
from rollout.data.trajectory import Trajectory

# (micro-batch index, batch, logprobs with gradient) -> (loss, metrics)
LossFn = Callable[[int, TrainBatch, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


class OptimizerConfig(BaseModel):
    """AdamW and micro-batching: the fields every trainer of this package shares (LearnerConfig and
    OnlineTrainerConfig extend it), so they are defined, defaulted and validated once."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    lr: float = Field(1e-6, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float | None = Field(
        1.0, gt=0, description="max global grad norm; null: no clipping (the norm is still reported)"
    )
    micro_batch_size: int = Field(4, ge=1, description="trajectories per forward/backward on one device")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_from_list(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value  # YAML has lists, no tuples

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in value):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(value)}")
        return value


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        parameters, lr=config.lr, betas=config.betas, eps=config.adam_eps, weight_decay=config.weight_decay
    )


def micro_batches(
    trajectories: list[Trajectory],
    advantages: list[float],
    sample_weights: list[float],
    size: int,
    device: torch.device,
) -> list[TrainBatch]:
    return [
        collate(chunk, chunk_advantages, chunk_weights).to(device)
        for chunk, chunk_advantages, chunk_weights in zip(
            split_into_chunks(trajectories, size),
            split_into_chunks(advantages, size),
            split_into_chunks(sample_weights, size),
        )
    ]


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[TrainBatch],
    score: Callable[[torch.nn.Module, TrainBatch], torch.Tensor],
    loss_fn: LossFn,
    lr: float,
    grad_clip: float | None,
    loss_scale: float = 1.0,
) -> tuple[float, list[dict[str, float]]]:
    """Accumulate gradients over the micro-batches, clip, and step when the norm is finite. A DDP model
    all-reduces once, on the last backward; `loss_scale` (the world size) undoes DDP's average so the ranks'
    losses add up. Returns (grad norm, each micro-batch's metrics)."""
    optimizer.zero_grad(set_to_none=True)
    parts = []
    for index, batch in enumerate(batches):
        is_last = index == len(batches) - 1
        defer_sync = isinstance(model, DistributedDataParallel) and not is_last
        with model.no_sync() if defer_sync else contextlib.nullcontext():
            logprobs = score(model, batch)
            loss, metrics = loss_fn(index, batch, logprobs)
            (loss * loss_scale).backward()
        parts.append(metrics)
    max_norm = grad_clip if grad_clip is not None else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    if math.isfinite(grad_norm):  # the same on every rank (gradients are all-reduced)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        optimizer.step()
    return grad_norm, parts
